"""`HitHeaders`: reused hit headers are exactly what rendering them afresh would give (pure, fake clock)."""

from __future__ import annotations

import gc
import math
import weakref
from email.utils import formatdate

import pytest
from aiohttp.http import SERVER_SOFTWARE
from hypothesis import given
from hypothesis import strategies as st

from proxy.cache.base import Entry
from proxy.web.headers import (
    BOUNDARY_MARGIN_S,
    RATE_LIMIT_REUSE_S,
    HitHeaders,
    age,
    hit_headers_valid_until,
    hit_status,
)

POLICY = '"upstream";q=5;w=1'


def rendered_afresh(entry: Entry, now: float, rate_limit: str) -> dict[str, str]:
    return {"Content-Type": entry.content_type, "X-Cache": "HIT", "Age": age(entry.fetched_at, now),
            "Cache-Status": hit_status(entry.fresh_until, now), "RateLimit-Policy": POLICY, "RateLimit": rate_limit,
            "Content-Length": str(len(entry.body)), "Date": formatdate(now, usegmt=True), "Server": SERVER_SOFTWARE}


def test_reused_within_the_window_and_rendered_again_after_it() -> None:
    headers = HitHeaders()
    entry = Entry(200, b"{}", fetched_at=1000.2, fresh_until=1300.7)
    first = headers.render("k", entry, 1000.5, POLICY, '"upstream";r=5;t=0')
    assert dict(first) == rendered_afresh(entry, 1000.5, '"upstream";r=5;t=0')
    assert headers.lookup("k", entry, 1000.5 + RATE_LIMIT_REUSE_S / 2) is first
    assert headers.lookup("k", entry, 1000.5 + RATE_LIMIT_REUSE_S) is None  # RateLimit is due
    assert headers.lookup("k", entry, 1001.2) is None  # Age turns 1
    assert headers.lookup("k", entry, 1000.4) is None  # the wall clock stepped back
    assert headers.lookup("k", Entry(200, b"{}", fetched_at=1000.2, fresh_until=1300.7), 1000.5) is None
    assert headers.lookup("other", entry, 1000.5) is None


def test_the_window_ends_at_the_next_whole_second_of_age_or_ttl() -> None:
    entry = Entry(200, b"{}", fetched_at=100.0, fresh_until=130.3)
    def until(entry: Entry, now: float) -> float:
        return hit_headers_valid_until(entry, now) + BOUNDARY_MARGIN_S

    assert until(entry, 100.98) == pytest.approx(101.0)  # Age turns 1
    assert until(entry, 101.29) == pytest.approx(101.3)  # ttl drops from 29 to 28
    assert until(entry, 101.5) == pytest.approx(101.55)  # none within the RateLimit window
    assert until(Entry(200, b"", fetched_at=100.5), 101.97) == pytest.approx(102.0)  # Date turns a second
    assert until(Entry(200, b"", fetched_at=200.0), 199.2) == pytest.approx(199.25)  # fetched "later"
    assert hit_headers_valid_until(entry, 100.98) < 101.0  # a rounding error never reaches past a boundary


def test_bounded_by_bytes_and_never_pinning_an_entry() -> None:
    headers = HitHeaders(max_bytes=5_000)
    entry = Entry(200, b"{}", fetched_at=0.0, fresh_until=math.inf)
    for number in range(10):
        headers.render(f"k{number}", entry, 1.0, POLICY, "r")
        assert headers.bytes_used <= 5_000
    assert 1 <= len(headers) < 10
    assert headers.lookup("k9", entry, 1.0) is not None  # the newest is kept
    assert headers.lookup("k0", entry, 1.0) is None  # the oldest went first
    body = Entry(200, b"x" * 1_000_000, fetched_at=0.0)
    alive = weakref.ref(body)
    headers.render("big", body, 1.0, POLICY, "r")
    del body
    gc.collect()
    assert alive() is None  # the rendering held no strong reference to the entry or its body
    assert headers.lookup("big", Entry(200, b"x" * 1_000_000, fetched_at=0.0), 1.0) is None


@given(fetched=st.floats(0, 4e9), ttl=st.floats(0.001, 1e5) | st.just(math.inf),
       steps=st.lists(st.floats(0, 0.7), min_size=1, max_size=60))
def test_every_lookup_equals_a_fresh_rendering(fetched: float, ttl: float, steps: list[float]) -> None:
    """Walk a fake clock forward over a fresh entry: whatever `lookup` reuses is what rendering at that
    moment would produce, but for a RateLimit at most `RATE_LIMIT_REUSE_S` old."""
    entry = Entry(200, b"{}", fetched_at=fetched, fresh_until=fetched + ttl)
    headers = HitHeaders()
    now, rate_limit_at = fetched, -math.inf
    for step in steps:
        now += step
        if now >= entry.fresh_until:
            break
        found = headers.lookup("k", entry, now)
        if found is None:
            found = headers.render("k", entry, now, POLICY, f"rl@{now!r}")
            rate_limit_at = now
        assert now - rate_limit_at < RATE_LIMIT_REUSE_S
        assert dict(found) == rendered_afresh(entry, now, f"rl@{rate_limit_at!r}")
