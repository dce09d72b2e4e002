"""Redis's clock as a replica sees it: the estimate follows the fastest round trip, so reply jitter does not
move a slot (pure; plain numbers as clocks)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.replica.clock import RedisClock

OFFSET = 1_700_000_000.0  # Redis TIME minus local loop time


def trip(clock: RedisClock, at: float, up: float, down: float) -> None:
    """A round trip asked at local ``at``: Redis reads TIME after ``up``, the reply lands ``down`` later."""
    clock.observe(at, at + up + down, at + up + OFFSET)


def test_no_sample_no_estimate() -> None:
    clock = RedisClock()
    assert not clock.known and clock.uncertainty == float("inf") and clock.lead(0.5) == 0.0


def test_a_symmetric_trip_gives_the_exact_offset() -> None:
    clock = RedisClock()
    trip(clock, 10.0, 0.03, 0.03)
    assert abs(clock.offset - OFFSET) < 1e-6
    assert abs(clock.to_local(OFFSET + 12.0) - 12.0) < 1e-6


def test_the_fastest_trip_wins_and_slow_replies_do_not_move_it() -> None:
    clock = RedisClock()
    trip(clock, 10.0, 0.030, 0.032)  # fast and nearly symmetric
    before = clock.offset
    for i in range(50):  # slow, lopsided replies (60 +- 30 ms each way)
        trip(clock, 11.0 + i, 0.03 + (i % 7) * 0.01, 0.09 - (i % 5) * 0.01)
    assert clock.offset == before and abs(clock.offset - OFFSET) <= 0.001
    assert clock.best_rtt is not None and abs(clock.best_rtt - 0.062) < 1e-9


def test_old_samples_leave_the_window() -> None:
    clock = RedisClock(window_s=60.0)
    trip(clock, 0.0, 0.001, 0.001)
    trip(clock, 30.0, 0.05, 0.05)
    assert clock.best_rtt is not None and clock.best_rtt < 0.01
    trip(clock, 70.0, 0.04, 0.04)  # the fast sample is now older than the window
    assert clock.best_rtt is not None and abs(clock.best_rtt - 0.08) < 1e-9


def test_lead_is_the_slowest_recent_trip_capped() -> None:
    clock = RedisClock()
    trip(clock, 0.0, 0.03, 0.03)
    trip(clock, 1.0, 0.09, 0.09)
    assert abs(clock.lead(1.0) - 0.18) < 1e-9 and clock.lead(0.1) == 0.1


def test_a_reply_before_its_question_is_ignored() -> None:
    clock = RedisClock()
    clock.observe(5.0, 4.0, OFFSET)
    assert not clock.known


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=200))
def test_error_is_at_most_half_the_best_round_trip(seed: int, samples: int) -> None:
    rng = random.Random(seed)
    clock = RedisClock()
    for i in range(samples):
        trip(clock, float(i), rng.uniform(0.03, 0.09), rng.uniform(0.03, 0.09))
    assert abs(clock.offset - OFFSET) <= clock.uncertainty + 1e-9
