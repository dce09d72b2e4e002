"""The host budget's GCRA (pure, on a fake clock) and its line protocol; the client against a real socket."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import orjson
import pytest

from proxy.admission.host import HostBudget
from proxy.admission.host_budget import WIDEST_MEMORY_S, HostBudgetServer, HostGcra, decide
from proxy.admission.margin import AdaptiveMargin
from proxy.admission.spacing import spacing_interval
from proxy.errors import Overloaded

TEMPLATE, WABA = "GetChatappTemplateDetail", "QueryChatappBindWaba"
MARGIN = 0.02


def test_consecutive_slots_are_one_interval_apart_without_burst() -> None:
    gcra = HostGcra()
    interval = spacing_interval(5, MARGIN)
    slots = [gcra.reserve(TEMPLATE, interval, 10.0, now=100.0) for _ in range(4)]
    assert all(s.granted for s in slots)
    assert [s.at for s in slots] == pytest.approx([100.0 + i * interval for i in range(4)])
    assert [s.wait_s for s in slots] == pytest.approx([i * interval for i in range(4)])


def test_an_idle_action_grants_now_and_keeps_no_credit() -> None:
    gcra = HostGcra()
    interval = spacing_interval(5, MARGIN)
    assert gcra.reserve(TEMPLATE, interval, 0.0, now=1.0).at == 1.0
    later = gcra.reserve(TEMPLATE, interval, 0.0, now=50.0)  # long idle: the slot is now, no saved-up burst
    assert later.granted and later.at == 50.0
    follow = gcra.reserve(TEMPLATE, interval, 0.0, now=50.0)
    assert not follow.granted and follow.wait_s == pytest.approx(interval)


def test_a_slot_beyond_max_wait_is_refused_with_the_wait_and_reserves_nothing() -> None:
    gcra = HostGcra()
    interval = spacing_interval(5, MARGIN)
    gcra.reserve(TEMPLATE, interval, 0.0, now=0.0)
    gcra.reserve(TEMPLATE, interval, 1.0, now=0.0)
    refused = gcra.reserve(TEMPLATE, interval, 0.3, now=0.0)  # next free is 2T = 0.408 away
    assert not refused.granted and refused.wait_s == pytest.approx(2 * interval)
    assert (gcra.granted, gcra.refused) == (2, 1)
    granted = gcra.reserve(TEMPLATE, interval, 0.5, now=0.0)  # the refusal took nothing: same slot
    assert granted.granted and granted.at == pytest.approx(2 * interval)


def test_the_widest_interval_narrows_again_once_nobody_asked_with_it_for_a_while() -> None:
    gcra = HostGcra()
    wide, narrow = spacing_interval(5, 0.1), spacing_interval(5, MARGIN)
    gcra.reserve(TEMPLATE, wide, 100.0, now=0.0)
    gcra.reserve(TEMPLATE, narrow, 100.0, now=WIDEST_MEMORY_S - 1)
    assert gcra.interval(TEMPLATE) == wide  # asked for recently: still in force
    gcra.reserve(TEMPLATE, narrow, 100.0, now=WIDEST_MEMORY_S + 1)
    assert gcra.interval(TEMPLATE) == narrow  # the wide worker stopped asking 10 s ago (its margin narrowed)


def test_a_learning_workers_interval_spaces_its_own_slot_but_is_not_remembered() -> None:
    gcra = HostGcra()
    learning, measured = spacing_interval(5, 0.25), spacing_interval(5, MARGIN)
    first = gcra.reserve(TEMPLATE, measured, 100.0, now=0.0)
    second = gcra.reserve(TEMPLATE, learning, 100.0, now=0.0, learning=True)
    third = gcra.reserve(TEMPLATE, measured, 100.0, now=0.0)
    assert second.at - first.at == pytest.approx(measured)  # the gap before it was set by the slot before
    assert third.at - second.at == pytest.approx(learning)  # the learning worker's slot is spaced wide after it
    assert gcra.interval(TEMPLATE) == measured  # but its guess is not imposed on the others for 10 s
    fourth = gcra.reserve(TEMPLATE, measured, 100.0, now=0.0)
    assert fourth.at - third.at == pytest.approx(measured)
    alone = HostGcra()
    a = alone.reserve(TEMPLATE, learning, 100.0, now=0.0, learning=True)
    b = alone.reserve(TEMPLATE, learning, 100.0, now=0.0, learning=True)
    assert b.at - a.at == pytest.approx(learning)  # every worker learning: every slot spaced wide
    wider = HostGcra()
    wider.reserve(TEMPLATE, spacing_interval(5, 0.3), 100.0, now=0.0)
    c = wider.reserve(TEMPLATE, learning, 100.0, now=0.0, learning=True)
    d = wider.reserve(TEMPLATE, learning, 100.0, now=0.0, learning=True)
    assert d.at - c.at == pytest.approx(spacing_interval(5, 0.3))  # a measured wider spacing still holds


def test_the_largest_interval_seen_wins() -> None:
    gcra = HostGcra()
    wide, narrow = spacing_interval(5, MARGIN), spacing_interval(10, MARGIN)
    first = gcra.reserve(TEMPLATE, wide, 10.0, now=0.0)
    second = gcra.reserve(TEMPLATE, narrow, 10.0, now=0.0)  # a worker with a smaller interval cannot narrow it
    third = gcra.reserve(TEMPLATE, narrow, 10.0, now=0.0)
    assert second.at - first.at == pytest.approx(wide)
    assert third.at - second.at == pytest.approx(wide)
    assert gcra.interval(TEMPLATE) == wide


def test_actions_have_separate_budgets() -> None:
    gcra = HostGcra()
    gcra.reserve(TEMPLATE, spacing_interval(5, MARGIN), 0.0, now=0.0)
    assert gcra.reserve(WABA, spacing_interval(10, MARGIN), 0.0, now=0.0).granted
    assert gcra.interval(WABA) == spacing_interval(10, MARGIN)


@pytest.mark.parametrize("cap", [1, 5, 10])
def test_any_cap_plus_one_consecutive_slots_span_one_second_and_the_margin(cap: int) -> None:
    """Many workers asking at jittered times, in any order: no window of 1 s holds cap + 1 slots."""
    gcra = HostGcra()
    interval = spacing_interval(cap, MARGIN)
    slots: list[float] = []
    clock = 0.0
    for step in itertools.islice(itertools.cycle([0.0, 0.001, 0.05, 0.0, 0.3, 0.0, 0.013]), 400):
        clock += step
        decision = gcra.reserve(TEMPLATE, interval, 2.0, now=clock)
        if decision.granted:
            slots.append(decision.at)
    assert len(slots) > 3 * cap
    assert slots == sorted(slots)
    for first, last in zip(slots, slots[cap:], strict=False):
        assert last - first >= 1.0 + MARGIN - 1e-9


def test_bad_values_are_refused() -> None:
    gcra = HostGcra(max_actions=2)
    for interval in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="interval"):
            gcra.reserve(TEMPLATE, interval, 1.0, now=0.0)
    with pytest.raises(ValueError, match="max_wait"):
        gcra.reserve(TEMPLATE, 0.2, float("nan"), now=0.0)
    gcra.reserve("a", 0.2, 1.0, now=0.0)
    gcra.reserve("b", 0.2, 1.0, now=0.0)
    with pytest.raises(ValueError, match="too many actions"):
        gcra.reserve("c", 0.2, 1.0, now=0.0)


def test_the_line_protocol_answers_absolute_slot_times_and_errors() -> None:
    gcra = HostGcra()
    line = orjson.dumps({"id": 3, "action": TEMPLATE, "interval": 0.25, "by": 11.0})
    assert orjson.loads(decide(gcra, line, now=10.0)) == {"id": 3, "granted": True, "at": 10.0, "wait": 0.0}
    assert orjson.loads(decide(gcra, line, now=10.0)) == {"id": 3, "granted": True, "at": 10.25, "wait": 0.25}
    late = orjson.dumps({"id": 4, "action": TEMPLATE, "interval": 0.25, "by": 10.4})
    assert orjson.loads(decide(gcra, late, now=10.0)) == {"id": 4, "granted": False, "at": 10.5, "wait": 0.5}
    for bad in (b"nope", b"[]", b'{"id":5,"action":"","interval":1,"by":1}',
                b'{"id":5,"action":"x","interval":true,"by":1}', b'{"id":5,"action":"x","interval":1}',
                b'{"id":5,"action":"x","interval":1,"by":1,"learning":"yes"}'):
        answer = orjson.loads(decide(gcra, bad, now=10.0))
        assert "error" in answer and "granted" not in answer


async def test_the_client_sleeps_until_its_slot_and_refuses_when_none_fits(tmp_path: Path) -> None:
    server = HostBudgetServer(str(tmp_path / "budget.sock"))
    await server.start()
    assert (tmp_path / "budget.sock").stat().st_mode & 0o777 == 0o600
    budget = HostBudget(server.path, MARGIN)
    loop = asyncio.get_running_loop()
    interval = spacing_interval(10, MARGIN)
    try:
        send_by = [await budget.slot(WABA, 10, interval, loop.time() + 5) for _ in range(3)]
        assert all(isinstance(s, float) for s in send_by)
        gaps = [b - a for a, b in itertools.pairwise(s for s in send_by if s is not None)]
        # Slots are whole intervals apart: T, or 2T when a wake-up later than the guard (a loaded machine) left one
        # empty and the client asked again. Never closer.
        assert all(round(gap / interval) >= 1 and gap == pytest.approx(round(gap / interval) * interval)
                   for gap in gaps), gaps
        with pytest.raises(Overloaded, match="no slot before this request's deadline"):
            await budget.slot(WABA, 10, interval, loop.time())  # the next slot is ~T away
        assert budget.status()["host_slots"] == 3 and budget.status()["refused"] == 1
    finally:
        budget.close()
        await server.close()


async def test_a_client_without_its_supervisor_refuses_and_recovers(tmp_path: Path) -> None:
    path = str(tmp_path / "budget.sock")
    budget = HostBudget(path, MARGIN)
    loop = asyncio.get_running_loop()
    with pytest.raises(Overloaded, match="unreachable") as refused:
        await budget.slot(TEMPLATE, 5, 0.2, loop.time() + 5)
    assert refused.value.headers["Retry-After"] == "1"
    server = HostBudgetServer(path)
    await server.start()
    try:
        assert await budget.slot(TEMPLATE, 5, 0.2, loop.time() + 5) is not None  # reconnects on the next miss
    finally:
        await server.close()
    with pytest.raises(Overloaded, match="unreachable"):  # the supervisor went away: nothing more is granted
        await budget.slot(TEMPLATE, 5, 0.2, loop.time() + 5)
    assert budget.status()["unreachable"] == 2
    budget.close()


async def test_a_worker_started_without_the_socket_refuses_every_miss() -> None:
    assert HostBudget.for_worker(1, AdaptiveMargin(MARGIN), {}) is None
    budget = HostBudget.for_worker(4, AdaptiveMargin(MARGIN), {})
    assert budget is not None
    with pytest.raises(Overloaded, match="without the supervisor"):
        await budget.slot(TEMPLATE, 5, 0.2, asyncio.get_running_loop().time() + 5)


async def test_a_slot_read_too_late_is_left_empty_and_asked_for_again(tmp_path: Path) -> None:
    """The first answer names a slot a second in the past (as if the reply sat unread behind a busy loop)."""
    skews = iter([1.0])
    server = HostBudgetServer(str(tmp_path / "budget.sock"), clock=lambda: time.monotonic() - next(skews, 0.0))
    await server.start()
    budget = HostBudget(server.path, MARGIN)
    loop = asyncio.get_running_loop()
    try:
        send_by = await budget.slot(TEMPLATE, 5, 0.2, loop.time() + 5)
        assert send_by is not None and send_by >= loop.time() - budget.late_guard_s
        assert budget.status()["late_slots"] == 1 and budget.status()["host_slots"] == 1
        assert server.gcra.granted == 2  # the late one was reserved, and stays empty
    finally:
        budget.close()
        await server.close()
