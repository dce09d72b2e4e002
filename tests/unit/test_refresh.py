"""Refresh-ahead's pure policy and plan, and its scheduler step with stand-in queues (no I/O, no sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import pytest

from proxy.actions import ACTIONS, ActionSpec
from proxy.refresh import RefreshAhead, RefreshPlan, RefreshPolicy

TEMPLATE = ACTIONS["GetChatappTemplateDetail"]
WABA = ACTIONS["QueryChatappBindWaba"]


def test_lead_is_a_share_of_the_ttl_within_bounds() -> None:
    policy = RefreshPolicy(fraction=0.1, min_lead_s=1, max_lead_s=30)
    assert policy.due(0, 300) == 270  # 10 % of 300 s
    assert policy.due(0, 1000) == 970  # capped at 30 s
    assert policy.due(0, 5) == 4  # at least 1 s
    assert policy.due(0, 1) == 0.5  # never more than half the TTL


def test_plan_one_job_per_generation_bounded_and_in_due_order() -> None:
    plan = RefreshPlan(RefreshPolicy(fraction=0.1, max_planned=2))
    assert plan.note_hit("a", TEMPLATE, {}, 0, 100) == 90
    assert plan.note_hit("a", TEMPLATE, {}, 0, 100) is None  # already planned
    assert plan.note_hit("b", TEMPLATE, {}, 0, 50) == 45
    assert plan.note_hit("c", TEMPLATE, {}, 0, 50) is None and plan.not_planned == 1
    assert plan.note_hit("a", TEMPLATE, {}, 100, 200) == 190  # a new generation replaces the old job
    assert plan.take_due("GetChatappTemplateDetail", 44) is None
    job = plan.take_due("GetChatappTemplateDetail", 100)
    assert job is not None and job.key == "b"
    assert plan.take_due("GetChatappTemplateDetail", 100) is None  # a's old generation was superseded
    assert plan.next_due("GetChatappTemplateDetail") == 190 and len(plan) == 1


@dataclass
class StandInQueue:
    rate: int
    waiting: int = 0
    interval: float = 0.2


async def test_step_starts_due_refreshes_only_with_spare_capacity() -> None:
    started: list[str] = []
    loop = asyncio.get_running_loop()

    def start(spec: ActionSpec, params: Mapping[str, str], key: str, stale_before: float) -> asyncio.Task[None]:
        started.append(key)
        return loop.create_task(asyncio.sleep(0))

    queues = {"GetChatappTemplateDetail": StandInQueue(rate=2), "QueryChatappBindWaba": StandInQueue(rate=10)}
    refresher = RefreshAhead(RefreshPlan(RefreshPolicy(fraction=0.1)), cast(Any, queues), start, lambda: 0.0)
    for i in range(4):
        refresher.note_hit(f"t{i}", TEMPLATE, {}, 0, 100)
    refresher.note_hit("w", WABA, {}, 0, 100)
    refresher.note_hit("late", WABA, {}, 0, 50)
    queues["QueryChatappBindWaba"].waiting = 1  # an interactive miss waits: no refresh for WABA now
    wake = refresher._step(95)
    assert started == ["t0", "t1"]  # at most `rate` refreshes in flight per action
    assert wake == pytest.approx(95.2)  # look again in one slot
    queues["QueryChatappBindWaba"].waiting = 0
    refresher._step(96)
    assert started == ["t0", "t1", "w"] and refresher.expired == 1  # "late" expired at 50: left to SWR
    await asyncio.sleep(0.01)  # the stand-in refreshes finish
    refresher._step(96)
    assert started == ["t0", "t1", "w", "t2", "t3"]
