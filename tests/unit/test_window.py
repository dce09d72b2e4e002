"""The simulator's flow control and referee count, on a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.simulator.window import SlidingWindowLimiter, max_in_any_window


def test_burst_accepts_exactly_cap_and_counts_everything() -> None:
    limiter = SlidingWindowLimiter(cap=5)
    accepted = [limiter.arrive(10.0) for _ in range(30)]
    assert accepted.count(True) == 5 and limiter.max_in_any_window == 30


def test_window_is_closed_at_both_ends() -> None:
    limiter = SlidingWindowLimiter(cap=1)
    assert limiter.arrive(0.0)
    assert not limiter.arrive(1.0)  # exactly 1 s later: still the same closed window
    assert limiter.arrive(1.000001)
    assert limiter.max_in_any_window == 2


def test_evenly_spaced_calls_at_cap_all_pass() -> None:
    limiter = SlidingWindowLimiter(cap=5)
    assert all(limiter.arrive(i * 0.2001) for i in range(100))
    assert limiter.max_in_any_window == 5


def test_forced_throttle_is_counted_but_not_charged() -> None:
    limiter = SlidingWindowLimiter(cap=2)
    assert not limiter.arrive(0.0, force_throttle=True)
    assert limiter.arrive(0.1) and limiter.arrive(0.2)
    assert limiter.max_in_any_window == 3


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=200), st.integers(1, 10))
def test_accepted_calls_never_exceed_cap_in_any_window(times: list[float], cap: int) -> None:
    limiter = SlidingWindowLimiter(cap=cap)
    ordered = sorted(times)
    accepted = [t for t in ordered if limiter.arrive(t)]
    assert max_in_any_window(accepted) <= cap
    assert limiter.max_in_any_window == max_in_any_window(ordered)
