"""The freshness rules (pure): which outcomes are kept and for how long, and how an entry may be served."""

from __future__ import annotations

import math

import pytest

from proxy.freshness import RULES, Freshness, Keep, Lifetimes, store_seconds
from proxy.upstream.errors import Outcome

LIFE = Lifetimes(negative_ttl=30, swr=60, max_stale=600)


@pytest.mark.parametrize(("outcome", "expected"), [
    (Outcome.SUCCESS, (1300.0, 1900.0)),
    (Outcome.NOT_FOUND, (1030.0, 1030.0)),
    (Outcome.DENIED, (1030.0, 1030.0)),
    (Outcome.BUSINESS_ERROR, None),
    (Outcome.THROTTLED, None),
    (Outcome.AUTH_ERROR, None),
    (Outcome.FAULT, None),
])
def test_every_outcome_has_a_rule(outcome: Outcome, expected: tuple[float, float] | None) -> None:
    assert LIFE.windows(outcome, action_ttl=300, now=1000.0) == expected


def test_the_table_covers_every_outcome_and_never_keeps_failures() -> None:
    assert set(RULES) == set(Outcome)
    assert {o for o, keep in RULES.items() if keep is Keep.NEVER} >= {Outcome.THROTTLED, Outcome.FAULT,
                                                                       Outcome.AUTH_ERROR}


def test_freshness_by_time() -> None:
    fresh_until, stale_until = 1300.0, 1900.0
    assert LIFE.freshness(fresh_until, stale_until, 1299.9) is Freshness.FRESH
    assert LIFE.freshness(fresh_until, stale_until, 1300.0) is Freshness.STALE
    assert LIFE.freshness(fresh_until, stale_until, 1359.9) is Freshness.STALE
    assert LIFE.freshness(fresh_until, stale_until, 1360.0) is Freshness.EXPIRED
    assert LIFE.servable_on_error(stale_until, 1899.9) and not LIFE.servable_on_error(stale_until, 1900.0)
    negative = LIFE.windows(Outcome.NOT_FOUND, 300, 1000.0)
    assert negative is not None and LIFE.freshness(*negative, 1030.0) is Freshness.EXPIRED
    assert LIFE.freshness(math.inf, math.inf, 1e12) is Freshness.FRESH


def test_swr_off_and_a_short_max_stale() -> None:
    life = Lifetimes(swr=0, max_stale=5)
    assert life.windows(Outcome.SUCCESS, 10, 0.0) == (10.0, 15.0)
    assert life.freshness(10.0, 15.0, 10.0) is Freshness.EXPIRED
    assert store_seconds(15.0, 14.9995) == 0.001
