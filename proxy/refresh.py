"""Refresh-ahead: keys hit during their TTL are refreshed shortly before they expire, with spare upstream
capacity only, so in steady state a hot key never misses.

The policy (`RefreshPolicy`, `RefreshPlan`) is pure and bounded:

* **which keys**: a key is planned when a request *hits* it (a fill alone plans nothing: a key nobody
  reads again is left to expire);
* **how early**: ``lead = clamp(fraction × TTL, min_lead, max_lead)`` before ``fresh_until`` (never more
  than half the TTL);
* **how much work**: at most ``max_planned`` keys are planned at once (further hits are not planned
  and counted); a planned key is dropped if its entry expired before capacity was spare (the next
  hit gets stale-while-revalidate instead).

`RefreshAhead` runs the plan: it sleeps until the next key is due, and starts its refresh (at the
queues' REFRESH priority, below every interactive miss) only while that action's queue has no miss
waiting and fewer than ``cap`` refreshes in flight. Across replicas every replica plans the keys it
saw hit; the fill lease and a freshness re-check make it one refresh per key.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from proxy.actions import ActionSpec
from proxy.admission.queue import UpstreamQueue
from proxy.logs import get_logger

log = get_logger("proxy.refresh")


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    fraction: float = 0.1
    min_lead_s: float = 1.0
    max_lead_s: float = 30.0
    max_planned: int = 10_000

    def due(self, fetched_at: float, fresh_until: float) -> float:
        """When to refresh an entry fetched at ``fetched_at`` and fresh until ``fresh_until``."""
        ttl = max(0.0, fresh_until - fetched_at)
        lead = min(max(ttl * self.fraction, self.min_lead_s), self.max_lead_s, ttl / 2)
        return fresh_until - lead


@dataclass(frozen=True, slots=True)
class Job:
    key: str
    spec: ActionSpec
    params: Mapping[str, str]
    fresh_until: float  # of the entry that was hit: the refresh is due for that generation


@dataclass
class RefreshPlan:
    """Planned refreshes by due time (wall clock), one heap per action, at most one job per key and entry
    generation."""

    policy: RefreshPolicy = field(default_factory=RefreshPolicy)
    _heaps: dict[str, list[tuple[float, int, Job]]] = field(default_factory=dict)
    _planned: dict[str, float] = field(default_factory=dict)  # key -> fresh_until planned for
    _order: int = 0
    not_planned: int = 0

    def __len__(self) -> int:
        return len(self._planned)

    def planned(self, key: str, fresh_until: float) -> bool:
        return self._planned.get(key) == fresh_until

    def note_hit(self, key: str, spec: ActionSpec, params: Mapping[str, str], fetched_at: float,
                 fresh_until: float) -> float | None:
        """Plan a refresh of this entry generation; its due time, or None if already planned or full."""
        if self._planned.get(key) == fresh_until:
            return None
        if key not in self._planned and len(self._planned) >= self.policy.max_planned:
            self.not_planned += 1
            return None
        due = self.policy.due(fetched_at, fresh_until)
        self._push(due, Job(key, spec, params, fresh_until))
        return due

    def _push(self, due: float, job: Job) -> None:
        self._planned[job.key] = job.fresh_until
        self._order += 1
        heapq.heappush(self._heaps.setdefault(job.spec.name, []), (due, self._order, job))

    def next_due(self, action: str) -> float | None:
        heap = self._heaps.get(action, [])
        while heap:
            _, _, job = heap[0]
            if self._planned.get(job.key) == job.fresh_until:
                return heap[0][0]
            heapq.heappop(heap)  # superseded by a newer generation
        return None

    def take_due(self, action: str, now: float) -> Job | None:
        """The most overdue job of ``action`` whose time has come, or None."""
        due = self.next_due(action)
        if due is None or due > now:
            return None
        _, _, job = heapq.heappop(self._heaps[action])
        del self._planned[job.key]
        return job


class RefreshAhead:
    """Runs a `RefreshPlan` against the read-through path (see the module docstring)."""

    def __init__(self, plan: RefreshPlan, queues: Mapping[str, UpstreamQueue],
                 start_refresh: Callable[[ActionSpec, Mapping[str, str], str, float], asyncio.Task[None] | None],
                 wall_clock: Callable[[], float]) -> None:
        self.plan = plan
        self._queues = queues
        self._start = start_refresh
        self._wall = wall_clock
        self._wake = asyncio.Event()
        self._inflight: dict[str, int] = dict.fromkeys(queues, 0)
        self.started = 0
        self.expired = 0

    def note_hit(self, key: str, spec: ActionSpec, params: Mapping[str, str], fetched_at: float,
                 fresh_until: float) -> None:
        if self.plan.planned(key, fresh_until):  # the usual case on a hot key: one dict lookup
            return
        earlier = self.plan.next_due(spec.name)
        due = self.plan.note_hit(key, spec, params, fetched_at, fresh_until)
        if due is not None and (earlier is None or due < earlier):
            self._wake.set()

    def _spare(self, action: str) -> bool:
        queue = self._queues[action]
        return queue.waiting == 0 and self._inflight[action] < queue.rate

    def _finished(self, action: str, _task: object) -> None:
        self._inflight[action] -= 1
        self._wake.set()

    def _step(self, now: float) -> float | None:
        """Start what is due and may start now; the next time worth looking again (None: only on a wake)."""
        wake_at: float | None = None
        for action, queue in self._queues.items():
            while self._spare(action) and (job := self.plan.take_due(action, now)) is not None:
                if now >= job.fresh_until:
                    self.expired += 1  # too late to refresh ahead; stale-while-revalidate takes over
                    continue
                task = self._start(job.spec, job.params, job.key, job.fresh_until)
                if task is not None:
                    self.started += 1
                    self._inflight[action] += 1
                    task.add_done_callback(functools.partial(self._finished, action))
            due = self.plan.next_due(action)
            if due is not None:
                look = max(due, now + queue.interval) if due <= now else due  # busy: look again in one slot
                wake_at = look if wake_at is None else min(wake_at, look)
        return wake_at

    async def run(self) -> None:
        while True:
            now = self._wall()
            self._wake.clear()
            wake_at = self._step(now)
            try:
                async with asyncio.timeout(None if wake_at is None else max(0.0, wake_at - now)):
                    await self._wake.wait()
            except TimeoutError:
                pass
