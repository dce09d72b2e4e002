"""Where an upstream slot comes from when there are replicas: the shared budget, or this replica's share.

With Redis healthy every slot is reserved in the shared budget (`shared.RedisBudget`): one round trip,
then a sleep until the slot. Reservations look at most ``horizon`` ahead (a slot further away is asked
for again later), so when Redis dies no replica holds a reservation more than ``horizon`` away.

The Redis-down policy, and why each rule keeps every 1-second window at or under the cap:

* **Failure** (a Redis call fails, the breaker opens): this replica goes *quiet* for
  ``horizon + 1 s + δ``, then sends on its own share, ``floor(cap / live replicas)`` per second, where
  ``live`` is what the heartbeats last counted. Quiet first because other replicas may still send on
  slots they reserved (at most ``horizon`` ahead); after that, every replica is either quiet or on its
  share, and whole-number shares add up to at most the cap. A share of 0 sends nothing: misses are
  refused with ``Retry-After`` while hits keep flowing.
* **Recovery** (a probe succeeds after the breaker's cooldown): quiet again for
  ``cooldown + 1 s + δ`` before the first shared slot, because the others may still be on their shares
  until their own breakers probe (at most ``cooldown`` later). Then shared slots resume without a burst.
* **Late wake-up**: a replica that wakes more than ``late_guard`` after its reserved slot does not send
  on it (the slot stays empty) and asks again. The slot time is taken as "when the reservation was
  asked + wait", the earliest Redis could have meant, so a reply processed late by a busy event loop
  counts as lateness instead of silently shifting the send. The same window is checked again once the
  upstream connection is in hand (the last wait before the request is written): a call that missed it
  is not sent (`SendWindowMissed`) and asks for a new slot.

Quiet periods make misses wait (within their deadlines), never fail outright.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from proxy.admission.replicas import Heartbeat, local_share
from proxy.admission.shared import BudgetUnavailable, RedisBudget
from proxy.admission.spacing import spacing_interval
from proxy.breaker import CircuitBreaker
from proxy.errors import Overloaded
from proxy.logs import get_logger

log = get_logger("proxy.admission")


@dataclass
class CoordinatorStats:
    shared_slots: int = 0
    local_slots: int = 0
    late_slots: int = 0
    outages: int = 0
    recoveries: int = 0


class Coordinator:
    def __init__(
        self,
        budget: RedisBudget,
        heartbeat: Heartbeat,
        breaker: CircuitBreaker,
        margin_s: float,
        *,
        horizon_s: float = 1.0,
        late_guard_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.budget = budget
        self.heartbeat = heartbeat
        self.breaker = breaker
        self.margin_s = margin_s
        self.horizon_s = horizon_s
        self.late_guard_s = margin_s / 2 if late_guard_s is None else late_guard_s
        self._clock = clock
        self.quiet_until = 0.0
        self.stats = CoordinatorStats()
        self._next_local: dict[str, float] = {}

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    @property
    def mode(self) -> str:
        return "shared" if self.breaker.healthy else "local"

    def status(self) -> dict[str, object]:
        now = self._now()
        return {"mode": self.mode, "breaker": self.breaker.state.value, "live_replicas": self.heartbeat.live,
                "quiet_for_s": round(max(0.0, self.quiet_until - now), 3), "shared_slots": self.stats.shared_slots,
                "local_slots": self.stats.local_slots, "late_slots": self.stats.late_slots,
                "outages": self.stats.outages}

    def record_failure(self, error: Exception) -> None:
        """Redis failed somewhere (budget, heartbeat): open the breaker and go quiet before the local share."""
        now = self._now()
        was_healthy = self.breaker.healthy
        self.breaker.failure(now)
        if was_healthy:
            self.stats.outages += 1
            self.quiet_until = max(self.quiet_until, now + self.horizon_s + 1.0 + self.margin_s)
            log.warning("redis unreachable: shared budget suspended; local share after a quiet period",
                        error=str(error), live_replicas=self.heartbeat.live, quiet_s=round(self.quiet_until - now, 3))

    def _recovered(self) -> None:
        now = self._now()
        self.breaker.success(now)
        self.stats.recoveries += 1
        self.quiet_until = max(self.quiet_until, now + self.breaker.cooldown + 1.0 + self.margin_s)
        log.warning("redis is back: rejoining the shared budget after a quiet period",
                    quiet_s=round(self.quiet_until - now, 3))

    async def probe_if_due(self) -> None:
        """While the breaker is open, try Redis once its cooldown has passed (the heartbeat calls this, so
        recovery is noticed even when no miss comes)."""
        if self.breaker.healthy or not self.breaker.allow(self._now()):
            return
        try:
            await self.budget.probe()
        except BudgetUnavailable as exc:
            self.record_failure(exc)
            return
        self._recovered()

    async def slot(self, action: str, cap: int, interval: float, grant_by: float) -> float | None:
        """Return when this replica may send one call for ``action``: the loop time by which the call
        must have left (a shared slot), or None (the local share, spaced here). Raise `Overloaded` if it
        cannot before ``grant_by``. The caller bounds the whole wait with its deadline."""
        loop = asyncio.get_running_loop()
        while True:
            now = self._now()
            if now < self.quiet_until:
                await asyncio.sleep(self.quiet_until - now)
                continue
            if self.breaker.allow(now):
                if not self.breaker.healthy:
                    try:
                        await self.budget.probe()
                    except BudgetUnavailable as exc:
                        self.record_failure(exc)
                        continue
                    self._recovered()
                    continue
                send_by = await self._shared_slot(loop, action, interval, grant_by)
                if send_by is not None:
                    return send_by
                continue
            await self._local_slot(action, cap)
            return None

    def missed(self) -> None:
        """A granted shared slot was not used: the call could not leave in time."""
        self.stats.late_slots += 1

    async def _shared_slot(self, loop: asyncio.AbstractEventLoop, action: str, interval: float,
                           grant_by: float) -> float | None:
        asked_at = loop.time()  # before the round trip: the slot is measured from here, conservatively
        remaining = grant_by - asked_at
        try:
            reservation = await self.budget.reserve(action, interval, min(self.horizon_s, max(0.0, remaining)))
        except BudgetUnavailable as exc:
            self.record_failure(exc)
            return None
        if not reservation.granted:
            if reservation.wait_s > remaining:
                raise Overloaded(f"The shared upstream budget for {action} has no slot before this request's "
                                 f"deadline (next in about {reservation.wait_s:.1f}s); retry then.", reservation.wait_s)
            await asyncio.sleep(max(0.0, reservation.wait_s - self.horizon_s))
            return None
        # Redis read its clock somewhere inside the round trip, so the slot is at asked_at + wait at the
        # earliest; a reply processed late (busy loop) therefore shows up as lateness, not as a shifted slot.
        slot_at = asked_at + reservation.wait_s
        delay = slot_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() - slot_at > self.late_guard_s:
            self.stats.late_slots += 1
            return None
        self.stats.shared_slots += 1
        return slot_at + self.late_guard_s

    async def _local_slot(self, action: str, cap: int) -> None:
        share = local_share(cap, self.heartbeat.live)
        if share == 0:
            raise Overloaded(f"Redis is unreachable and this replica's share of the {action} cap is 0 "
                             f"({cap}/s over {self.heartbeat.live} replicas): misses wait for Redis.",
                             self.breaker.cooldown)
        # One caller at a time per action (the queue's send slot), so plain spacing needs no lock; it
        # also keeps the spacing across a change of share, which a new limiter would not.
        interval = spacing_interval(share, self.margin_s)
        wait = self._next_local.get(action, 0.0) - self._now()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_local[action] = self._now() + interval
        self.stats.local_slots += 1
