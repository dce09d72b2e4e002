"""The adaptive rate's pure core, on a fake clock: cuts, probes, the known-bad plateau, recovery."""

from __future__ import annotations

from itertools import pairwise

import pytest

from proxy.admission.aimd import CUT_EVERY_S, LONG_QUIET_S, QUIET_S, AdaptiveRate


def test_one_throttle_at_the_cap_does_not_cut_two_within_the_window_do() -> None:
    rate = AdaptiveRate(5)
    assert rate.throttled(100.0) is False and rate.rate(100.0) == 5
    assert rate.throttled(105.0) is True and rate.rate(105.0) == 2.5 and rate.known_bad == 5
    assert "twice" in rate.why


def test_throttles_far_apart_at_the_cap_never_cut() -> None:
    rate = AdaptiveRate(5)
    for t in range(0, 200, 11):
        assert rate.throttled(float(t)) is False
    assert rate.rate(200.0) == 5 and rate.cuts == 0


def test_calls_in_flight_at_a_cut_do_not_cut_again() -> None:
    rate = AdaptiveRate(10)
    rate.throttled(0.0)
    rate.throttled(0.1)
    assert rate.rate(0.1) == 5
    assert rate.throttled(0.1 + CUT_EVERY_S / 2) is False and rate.rate(1.5) == 5
    assert rate.throttled(0.1 + CUT_EVERY_S) is True and rate.rate(2.2) == 2.5  # below the cap: one is enough


def test_the_rate_never_goes_under_the_floor_nor_over_the_cap() -> None:
    rate = AdaptiveRate(5)
    t = 0.0
    for _ in range(20):
        rate.throttled(t)
        t += CUT_EVERY_S
        assert 0.5 - 1e-9 <= rate.rate(t) <= 5
    assert rate.rate(t) == pytest.approx(0.5)
    assert rate.rate(t + 10_000) == 5


def test_probes_climb_fast_to_one_step_under_the_known_bad_level_then_wait_the_long_quiet() -> None:
    rate = AdaptiveRate(5)
    rate.throttled(0.0)
    rate.throttled(1.0)  # cut at the cap: 2.5, known bad 5
    rate.throttled(2.5)  # in flight at the cut: no cut, but no quiet spell either
    rate.throttled(3.0)  # still throttled at 2.5: cut to 1.25, known bad 2.5
    assert rate.rate(3.0) == 1.25 and rate.known_bad == 2.5
    assert rate.rate(3.0 + QUIET_S) == 1.75
    assert rate.rate(3.0 + 2 * QUIET_S) == 2.0  # the plateau: one step under 2.5
    plateau_from = 3.0 + 2 * QUIET_S
    assert rate.rate(plateau_from + LONG_QUIET_S - 0.01) == 2.0
    assert rate.rate(plateau_from + LONG_QUIET_S) == 2.5  # the probe past the known-bad level
    rate.throttled(plateau_from + LONG_QUIET_S + 0.5)  # it failed: cut, and the long quiet doubles
    assert rate.rate(plateau_from + LONG_QUIET_S + 0.5) == 1.25 and rate.long_quiet_s == 2 * LONG_QUIET_S


def test_a_probe_that_holds_forgets_the_known_bad_level_and_climbs_back_to_the_cap() -> None:
    rate = AdaptiveRate(5)
    rate.throttled(0.0)
    rate.throttled(1.0)
    rate.throttled(2.5)
    rate.throttled(3.0)  # 1.25, known bad 2.5
    probe_at = 3.0 + 2 * QUIET_S + LONG_QUIET_S
    assert rate.rate(probe_at) == 2.5
    assert rate.rate(probe_at + QUIET_S) == 3.0 and rate.known_bad is None
    back = probe_at + QUIET_S + 4 * QUIET_S
    assert rate.rate(back - 0.01) < 5 and rate.rate(back) == 5
    assert "held" in rate.why or rate.rate(back) == 5


def test_a_settled_rate_with_another_client_is_throttled_ever_more_rarely() -> None:
    """Another client keeps spending half the cap: every probe past 2.5/s is throttled at once. The throttles
    come further and further apart (the long quiet doubles), so the count stops growing."""
    rate = AdaptiveRate(5)
    t, throttles = 0.0, []
    rate.throttled(t)
    rate.throttled(t + 0.5)
    while t < 1800:
        t += 0.1
        if rate.rate(t) > 2.25 and (not throttles or t - throttles[-1] >= 0.2):  # over what is left: throttled
            rate.throttled(t)
            throttles.append(t)
    settled = [at for at in throttles if at > 5]  # after the cuts of the first seconds
    gaps = [later - earlier for earlier, later in pairwise(settled)]
    assert all(later >= earlier - 0.5 for earlier, later in pairwise(gaps)) and gaps[-1] >= 100
    # ever rarer, then one per long quiet at most
    assert sum(1 for at in throttles if at > 900) <= 8
