"""The upstream queue's pure parts, on times given by the test: the send slot's pacing, the backlog's running
estimates and re-check, and shadow mode's virtual clock."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.admission.backlog import BACKLOG_GAP_LIMIT, EWMA_WEIGHT, ewma, late_refusals, learned_spacing
from proxy.admission.send_pacing import SendPacing
from proxy.admission.shadow import ShadowBudget

START = 100.0  # loop times are never 0 (an aimed moment of 0 means "unknown")
EPSILON = 1e-9


def test_the_first_send_may_leave_at_once() -> None:
    assert SendPacing(0.005).earliest(START, 0.2) == START


def test_lateness_within_the_guard_does_not_push_the_next_send_back() -> None:
    pacing = SendPacing(0.005)
    pacing.sent(START, START + 0.004)  # aimed at START, left 4 ms late
    assert pacing.earliest(START, 0.2) == pytest.approx(START + 0.2)


def test_lateness_beyond_the_guard_shifts_the_schedule_by_the_excess_only() -> None:
    pacing = SendPacing(0.005)
    pacing.sent(START, START + 0.030)  # 30 ms late: 25 ms beyond the guard
    assert pacing.earliest(START, 0.2) == pytest.approx(START + 0.225)


def test_an_unknown_aim_anchors_on_the_send_itself() -> None:
    pacing = SendPacing(0.005)
    pacing.sent(0.0, START + 0.030)
    assert pacing.last_aimed == START + 0.030
    assert pacing.earliest(START, 0.2) == pytest.approx(START + 0.230)


def test_a_send_reported_out_of_order_does_not_move_the_schedule_back() -> None:
    pacing = SendPacing(0.005)
    pacing.sent(START + 1.0, START + 1.0)
    pacing.sent(START + 0.5, START + 0.5)  # an older send, reported late
    assert (pacing.last_sent, pacing.last_aimed) == (START + 1.0, START + 1.0)
    assert pacing.earliest(START, 0.2) == pytest.approx(START + 1.2)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.01, max_value=0.5), st.floats(min_value=0.0, max_value=0.5),
       st.integers(min_value=1, max_value=8),
       st.lists(st.tuples(st.floats(min_value=0.0, max_value=0.05), st.floats(min_value=0.0, max_value=0.3)),
                min_size=2, max_size=60))
def test_sends_paced_this_way_keep_the_spacing_whatever_their_lateness(
        interval: float, guard_share: float, cap: int, steps: list[tuple[float, float]]) -> None:
    """Each call reaches the send slot some time after the previous one left, waits for `earliest`, and leaves
    late by some amount: consecutive sends stay ``T − guard`` apart, any ``cap + 1`` of them ``cap·T − guard``."""
    guard = guard_share * interval
    pacing = SendPacing(guard)
    now, sends = START, []
    for lateness, idle in steps:
        aimed = pacing.earliest(now, interval)
        left = max(aimed, now) + lateness
        pacing.sent(aimed, left)
        sends.append(left)
        now = left + idle
    assert all(later - earlier >= interval - guard - EPSILON for earlier, later in pairwise(sends))
    assert all(sends[k + cap] - sends[k] >= cap * interval - guard - EPSILON for k in range(len(sends) - cap))


def test_the_running_average_moves_a_fifth_of_the_way() -> None:
    assert EWMA_WEIGHT == 0.2
    assert ewma(1.0, 2.0) == pytest.approx(1.2)
    assert ewma(1.0, 0.0, weight=0.5) == pytest.approx(0.5)


def test_one_stalled_gap_teaches_at_most_a_fair_split_times_one_and_a_half() -> None:
    interval = 0.1
    assert learned_spacing(0.1, 0.12, interval, sharers=1) == pytest.approx(ewma(0.1, 0.12))  # within the limit
    stalled = learned_spacing(0.1, 30.0, interval, sharers=1)  # a 30 s stall counts as 150 ms
    assert stalled == pytest.approx(ewma(0.1, BACKLOG_GAP_LIMIT * interval))
    shared = learned_spacing(0.1, 30.0, interval, sharers=4)  # four processes share the budget: 600 ms
    assert shared == pytest.approx(ewma(0.1, BACKLOG_GAP_LIMIT * interval * 4))


def test_late_refusals_keep_serving_order_and_a_refusal_frees_its_place() -> None:
    queued: list[tuple[str, float | None]] = [("a", 10.5), ("b", 10.1), ("c", None), ("d", 10.35), ("e", 10.2)]
    # Waits if none were refused: a 0.1, b 0.2, c 0.3, d 0.4, e 0.5 (from now = 10.0, one every 0.1 s).
    refused = late_refusals(10.0, 0.1, 0.1, queued)
    # b (0.2 > 0.1) is refused; c counts as ahead though not checked; d then waits 0.3 (fits 0.35); e 0.4 (no).
    assert [(item, round(wait, 6)) for item, wait in refused] == [("b", 0.2), ("e", 0.4)]
    assert late_refusals(10.0, 0.1, 0.1, []) == []


def test_a_call_that_fits_exactly_is_kept() -> None:
    assert late_refusals(10.0, 0.25, 0.1, [("a", 10.25)]) == []


def test_shadow_counts_granted_delayed_and_refused_and_a_refusal_takes_no_slot() -> None:
    budget = ShadowBudget()
    assert budget.judge(START, START + 5, 0.2) == "granted"
    assert budget.judge(START, START + 5, 0.2) == "delayed"  # the next slot is START + 0.2
    assert budget.judge(START, START + 0.3, 0.2) == "refused"  # its slot, START + 0.4, is too late
    assert budget.next_slot == pytest.approx(START + 0.4)  # the refusal did not take it
    assert budget.judge(START, START + 0.4, 0.2) == "delayed"
    assert budget.judge(START + 10, START + 10, 0.2) == "granted"  # the clock has caught up: no burst saved
    assert budget.next_slot == pytest.approx(START + 10.2)
