"""Where an upstream slot comes from when there are replicas: the shared budget, or this replica's safe capacity.

With Redis healthy every slot is reserved in the shared budget (`shared.RedisBudget`): one round trip,
then a sleep until the slot. Reservations look at most ``horizon`` ahead (a slot further away is asked
for again later), so when Redis dies no replica holds a reservation more than ``horizon`` away.

Without Redis a replica spends only its safe capacity: the shares its lease was granted, which the shared
budget holds back from the others while this replica's renewals are missing (`proxy.admission.safe_capacity`
states the rules and the guarantee; `proxy.replica.heartbeat` renews the lease):

* **Failure** (a Redis call fails, the breaker opens): this replica goes *quiet* until `LocalLease.local_from`
  (about ``STALE_S + horizon + 1.5 s`` after its last renewal could have landed: by then the others hold its
  share back, and its own last shared slot is a window old), then sends on its shares, spaced
  ``(1 s + δ) / share`` (and at least the account-wide spacing the queue asks for, times the live replicas),
  until its lease runs out. A share of 0, no lease (never reached Redis since start) or a lease run out sends
  nothing: misses are refused with ``Retry-After`` while hits keep flowing.
* **Recovery** (a probe succeeds after the breaker's cooldown): shared slots resume a window (`WINDOW_S`)
  after this replica's last local send, at once if it sent none. The others hold its share back until it renews,
  which the heartbeat does no earlier; the shared budget does not hold a replica's share back from itself.
* **Slot timing**: a slot is a moment on Redis's clock (``TIME`` + wait, in the reply). This replica
  turns it into a local moment with its estimate of Redis's clock (`redis_clock.RedisClock`, from the
  fastest recent round trip), so neither a slow Redis nor the jitter of one reply shifts the send.
  Reservations are made ``lead`` ahead (the slowest recent round trip), so the reply usually arrives
  before the slot.
* **Late reply or late wake-up**: a reply that arrives more than ``late_guard`` after its slot, or a
  replica that wakes more than ``late_guard`` after it, does not send on that slot (it stays empty) and
  asks again; a local slot has the same send window. The caller has its upstream connection in hand before
  asking, and checks the window once more right before the write (nothing awaits in between): a call that
  missed it is not sent (`SendWindowMissed`) and asks for a new slot.

Quiet periods make misses wait (within their deadlines), never fail outright.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.admission.margin import AdaptiveMargin
from proxy.admission.shared import BudgetUnavailable, RedisBudget
from proxy.admission.spacing import spacing_interval
from proxy.errors import Overloaded
from proxy.logs import get_logger
from proxy.replica.breaker import CircuitBreaker
from proxy.replica.clock import RedisClock
from proxy.replica.heartbeat import Heartbeat

log = get_logger("proxy.admission")


class SlotMissed(Exception):
    """A reserved slot could not be used (woken too late for it): nothing was sent; ask for a new slot."""


@dataclass(frozen=True, slots=True)
class Reserved:
    """A slot this replica holds: a shared one at local loop time ``at``, or (``at`` None) the local share."""

    action: str
    cap: int
    at: float | None
    #: The account-wide spacing the queue asked with (the adaptive rate and margin): the local share keeps it.
    interval: float = 0.0


@dataclass
class CoordinatorStats:
    shared_slots: int = 0
    local_slots: int = 0
    late_slots: int = 0
    late_replies: int = 0
    outages: int = 0
    recoveries: int = 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(seconds * 1000, 3)


class Coordinator:
    def __init__(
        self,
        budget: RedisBudget,
        heartbeat: Heartbeat,
        breaker: CircuitBreaker,
        margin: float | AdaptiveMargin,
        *,
        horizon_s: float = 1.0,
        late_guard_s: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.budget = budget
        self.heartbeat = heartbeat
        self.breaker = breaker
        self.margin = margin if isinstance(margin, AdaptiveMargin) else AdaptiveMargin(margin)
        self.horizon_s = horizon_s
        self.late_guard_s = self.margin.guard_s if late_guard_s is None else late_guard_s
        self._clock = clock
        self.quiet_until = 0.0
        self.stats = CoordinatorStats()
        self._next_local: dict[str, float] = {}
        self.clock: RedisClock = heartbeat.clock  # one estimate of Redis's clock, fed by every script that reads TIME
        self.lease = heartbeat.lease
        self.held_back: dict[str, int] = {}

    @property
    def margin_s(self) -> float:
        """δ now (the process's adaptive margin)."""
        return self.margin.value(time.monotonic())

    @property
    def clock_allowance_s(self) -> float:
        """What the shared spacing adds to δ for the replicas' clock estimates: each replica's error is at most
        half its fastest round trip to Redis, and two replicas' slots can be off by both, so the shared slots are
        spaced ``(1 + δ)(1 + 2u)/R`` apart (u this replica's bound; the widest any replica asks is used). Before
        any clock sample: the margin's ceiling."""
        uncertainty = self.clock.uncertainty
        return 2 * uncertainty if math.isfinite(uncertainty) else self.margin.ceiling_s

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
                "late_replies": self.stats.late_replies, "outages": self.stats.outages,
                "safe_capacity": {**self.lease.status(now), "held_back_for_others": dict(self.held_back)},
                "redis_clock": {"samples": self.clock.observed, "best_rtt_ms": _ms(self.clock.best_rtt),
                                "uncertainty_ms": _ms(self.clock.uncertainty),
                                "allowance_ms": _ms(self.clock_allowance_s)}}

    def record_failure(self, error: Exception) -> None:
        """Redis failed somewhere (budget, heartbeat): open the breaker and go quiet before the local share."""
        now = self._now()
        was_healthy = self.breaker.healthy
        self.breaker.failure(now)
        if was_healthy:
            self.stats.outages += 1
            self.quiet_until = max(self.quiet_until, self.lease.local_from(now))
            log.warning("redis unreachable: shared budget suspended; safe capacity after a quiet period",
                        error=str(error), live_replicas=self.heartbeat.live, quiet_s=round(self.quiet_until - now, 3),
                        shares={action: self.lease.share(action, self.quiet_until) for action in self.lease.shares})

    def _recovered(self) -> None:
        now = self._now()
        self.breaker.success(now)
        self.stats.recoveries += 1
        # Shared slots a window after the last local send (none: at once). The others hold this replica's share
        # back until it renews its lease, which the heartbeat does no earlier either.
        self.quiet_until = max(now, self.lease.renew_after())
        log.warning("redis is back: rejoining the shared budget after a quiet period",
                    quiet_s=round(self.quiet_until - now, 3))

    async def probe_if_due(self) -> None:
        """While the breaker is open, try Redis once its cooldown has passed (the heartbeat calls this, so
        recovery is noticed even when no miss comes)."""
        if self.breaker.healthy or not self.breaker.allow(self._now()):
            return
        try:
            with self.breaker.probing():  # a cancelled probe is released, not left half-done
                await self.budget.probe()
        except BudgetUnavailable as exc:
            self.record_failure(exc)
            return
        self._recovered()

    async def slot(self, action: str, cap: int, interval: float, grant_by: float) -> float | None:
        """`reserve` then `wait`, in one step: the loop time by which the call must have been written (a shared
        slot), or None (the local share, spaced here). Raises `Overloaded` or `SlotMissed`."""
        return await self.wait(await self.reserve(action, cap, interval, grant_by))

    async def reserve(self, action: str, cap: int, interval: float, grant_by: float) -> Reserved:
        """Reserve this replica's next slot for ``action`` (one Redis round trip when healthy), without waiting
        for it: the queue passes the turn on right after, so the next call reserves while this one waits, and a
        slow Redis does not stretch the spacing. Raise `Overloaded` if no slot comes before ``grant_by``."""
        loop = asyncio.get_running_loop()
        # Whether ``interval`` was taken from a margin still learning: decided now, with the interval, not after
        # the waits below (a guess asked with after learning ended would be remembered for every replica).
        learning = not self.margin.learned
        while True:
            now = self._now()
            if now < self.quiet_until:
                if not self.breaker.healthy and self.lease.share(action, self.quiet_until) == 0:
                    raise self._no_share(action, now)  # nothing to wait for: say so now
                await asyncio.sleep(self.quiet_until - now)
                continue
            if self.breaker.allow(now):
                if not self.breaker.healthy:
                    try:
                        with self.breaker.probing():  # released if the caller's deadline cancels it
                            await self.budget.probe()
                    except BudgetUnavailable as exc:
                        self.record_failure(exc)
                        continue
                    self._recovered()
                    continue
                slot_at = await self._shared_slot(loop, action, cap, interval, grant_by, learning)
                if slot_at is not None:
                    return Reserved(action, cap, slot_at, interval)
                continue
            return Reserved(action, cap, None, interval)

    async def wait(self, reserved: Reserved) -> float | None:
        """Sleep until the reserved slot (shared, or the next of this replica's safe capacity); return the loop
        time by which the call must have been written. Raise `SlotMissed` if this replica woke too late for it,
        `Overloaded` if it holds no safe capacity."""
        if reserved.at is None:
            return await self._local_slot(reserved.action, reserved.cap, reserved.interval)
        loop = asyncio.get_running_loop()
        delay = reserved.at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() - reserved.at > self.late_guard_s:
            self.stats.late_slots += 1
            raise SlotMissed(f"woke {loop.time() - reserved.at:.3f}s after the shared slot for {reserved.action}")
        self.stats.shared_slots += 1
        return reserved.at + self.late_guard_s

    def sharers(self) -> int:
        """Replicas that share the budget, as the heartbeats last counted."""
        return max(1, self.heartbeat.live)

    def missed(self) -> None:
        """A granted shared slot was not used: the call could not leave in time."""
        self.stats.late_slots += 1

    async def sample_clock(self) -> None:
        """One sample of Redis's clock (the heartbeat calls this every second, so the estimate stays fresh
        while no miss comes). Raises `BudgetUnavailable`."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        redis_now = await self.budget.redis_time()
        self.clock.observe(asked, loop.time(), redis_now)

    async def _shared_slot(self, loop: asyncio.AbstractEventLoop, action: str, cap: int, interval: float,
                           grant_by: float, learning: bool) -> float | None:
        asked = loop.time()
        remaining = grant_by - asked
        lead = self.clock.lead(self.horizon_s / 2)
        interval *= 1 + self.clock_allowance_s  # two replicas' slots can be off by both clock estimates' errors
        try:
            reservation = await self.budget.reserve(action, interval, min(self.horizon_s, max(0.0, remaining)),
                                                    lead, cap=cap, replica=self.heartbeat.replica_id,
                                                    learning=learning)
        except BudgetUnavailable as exc:
            self.record_failure(exc)
            return None
        replied = loop.time()
        self.clock.observe(asked, replied, reservation.redis_now)
        self.held_back[action] = reservation.held_back
        if not reservation.granted and reservation.held_back >= cap:
            raise Overloaded(f"The shared upstream budget for {action} is held back in full for replicas cut from "
                             f"Redis (their safe capacity, {reservation.held_back}/s of {cap}/s) until their leases "
                             "end", self.lease.lease_s / 4)
        if not reservation.granted:
            if reservation.wait_s > remaining:
                raise Overloaded(f"The shared upstream budget for {action} has no slot before this request's "
                                 "deadline", reservation.wait_s)
            await asyncio.sleep(max(0.0, reservation.wait_s - self.horizon_s))
            return None
        # The slot is a moment on Redis's clock; the estimate of that clock (from the fastest recent round
        # trip, not from this reply's own timing) makes it a local moment, so reply jitter does not move it.
        slot_at = self.clock.to_local(reservation.slot)
        if replied - slot_at > self.late_guard_s:
            self.stats.late_replies += 1  # the reply came after its slot: give the slot up, ask again
            return None
        return slot_at

    def _no_share(self, action: str, now: float) -> Overloaded:
        return Overloaded(f"Redis is unreachable and {self.lease.why_none(action, now)}: misses of {action} wait "
                          f"for Redis (hits and stale answers still flow).", self.breaker.cooldown)

    async def _local_slot(self, action: str, cap: int, asked_interval: float = 0.0) -> float:
        """The next moment of this replica's safe capacity for ``action``; returns the send-by time."""
        now = self._now()
        share = self.lease.share(action, now)
        if share == 0:
            raise self._no_share(action, now)
        # One caller at a time per action (the queue's send slot), so plain spacing needs no lock; it
        # also keeps the spacing across a change of share, which a new limiter would not.
        # The share of the account's spacing too, when the adaptive rate or margin asks for wider than the cap's.
        interval = max(spacing_interval(share, self.margin_s), asked_interval * max(1, self.heartbeat.live))
        slot = max(now, self._next_local.get(action, 0.0))
        if slot > now:
            await asyncio.sleep(slot - now)
        now = self._now()
        if self.breaker.healthy:  # Redis came back meanwhile: a local send now would share a window with shared slots
            raise SlotMissed(f"Redis is back: the {action} call asks the shared budget instead of its local slot")
        if now - slot > self.late_guard_s or now >= self.lease.lease_until():
            self._next_local[action] = max(now, slot)  # keep the spacing from the slot not used
            self.stats.late_slots += 1
            raise SlotMissed(f"woke {now - slot:.3f}s after the local slot for {action} (or the lease ran out)")
        self._next_local[action] = slot + interval
        self.stats.local_slots += 1
        send_by = slot + self.late_guard_s
        self.lease.spent_locally(send_by)
        return send_by
