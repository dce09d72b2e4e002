"""One action's upstream queue in one process: grants spaced `spacing_interval` apart, bounded,
with deadlines, shared fairly.

Who goes next is decided by `FairQueue` (priority tiers, then deficit round robin over tenants by
weight): waiters queue there, and one at a time the chosen one takes the *turn* and goes through the
spacing below; the turn passes on when it holds its grant. So a newcomer from a quiet tenant, or an
interactive miss behind refreshes, waits for at most the slot in progress plus its fair position.

Grants are spaced by a gate of one (no initial burst, consecutive grants at least ``T`` apart), with
``T = (1 s + δ(t)) / R`` re-read at every grant: δ(t) is the process's adaptive margin
(`proxy.admission.margin.AdaptiveMargin`), fed with the answer time of every call and with every throttle.
The turn holder's way from its turn to its send moment is `proxy.admission.grant_path.GrantPath`: an upstream
connection in hand *before* the slot, the grant gate, the shared slot if the budget is shared, and the send slot:
a grant (`proxy.admission.grant.Grant`) is also a send slot, and sends are paced from the previous one's
(`proxy.admission.send_pacing`), so any ``cap + 1`` consecutive requests leave at least ``1 s + δ − guard`` apart,
measured when their bytes were written.

Guarantees:

* a miss whose deadline is shorter than the upstream's usual answer time (an average of recent calls) could
  not be served even with an empty queue: the read-through refuses it before any flight or queue with
  `DeadlineTooShort` (400, no retry time: `check_deadline`, `proxy.admission.spacing.DeadlineFloor`); one that
  reaches `acquire` with less than that left (its time went elsewhere: another replica's fill, a retry) is
  `DeadlineExceeded` at once, never queued;
* a miss that finds its tenant's queue full (``bound`` per tenant and priority), or that the calls
  ahead of it (its fair position, `FairQueue.ahead_of`) cannot be served before its deadline, is
  refused at once with `Overloaded` and an honest retry time: how long the calls now ahead take (one
  value for the message and both headers, `proxy.errors.retry_after_ms`).
  "Served before its deadline" means granted early enough for the upstream's usual answer time to fit
  too, and the wait is estimated with the spacing actually observed
  under backlog when that is wider than ``T`` (`proxy.admission.backlog`);
* δ(t) may widen after a call was admitted (admission plans at the spacing of the moment): at every grant
  the queued calls are re-checked in the order they would be served, and one that no longer fits is
  refused then with `Overloaded` and its new wait, never sent;
* a miss that is still queued when its grant could no longer fit leaves the queue
  (`DeadlineExceeded`) and is never sent;
* nothing is dropped silently: every `acquire` returns a grant or raises.

Non-guarantees: the waits are estimates (`proxy.admission.backlog`); in shadow mode (`proxy.admission.shadow`)
every call is granted at once and none of the refusals above happens (a closed queue still refuses).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.admission.aimd import AdaptiveRate
from proxy.admission.backlog import INITIAL_UPSTREAM_TIME, SPACING_PRIOR, ewma, late_refusals, learned_spacing
from proxy.admission.demand import Demand
from proxy.admission.fair import FairQueue, Priority, TenantQueueFull
from proxy.admission.grant import Grant
from proxy.admission.grant_path import GrantPath
from proxy.admission.margin import AdaptiveMargin
from proxy.admission.shadow import ShadowBudget
from proxy.admission.sources import ConnectionSource, SlotSource
from proxy.admission.spacing import DeadlineFloor, deadline_floor, estimated_wait, spacing_interval
from proxy.errors import DeadlineExceeded, DeadlineTooShort, Overloaded
from proxy.logs import get_logger

# Demand lives in `proxy.admission.demand`; it stays importable from here for `proxy.readthrough`.
__all__ = ["Demand", "QueueStats", "UpstreamQueue"]

log = get_logger("proxy.admission")


def _nothing() -> None:
    return None


@dataclass
class QueueStats:
    granted: int = 0
    refused_full: int = 0
    refused_deadline: int = 0
    #: Admitted, then refused while queued because its deadline could no longer be met (`_refuse_late`).
    refused_late: int = 0
    #: Refused before the queue: the deadline is shorter than the fastest possible miss (`check_deadline`).
    refused_too_short: int = 0
    #: Reached `acquire` with less of its deadline left than an answer takes: `DeadlineExceeded`, never queued.
    refused_no_time_left: int = 0
    expired: int = 0
    max_send_delay: float = 0.0
    #: Shadow mode: what enforcing would have done (granted at once, made to wait, refused).
    shadow: dict[str, int] = field(default_factory=lambda: {"granted": 0, "delayed": 0, "refused": 0})

    def record_send_delay(self, delay: float) -> None:
        self.max_send_delay = max(self.max_send_delay, delay)


class UpstreamQueue:
    def __init__(self, action: str, rate_per_second: int, margin: float | AdaptiveMargin, bound: int,
                 coordinator: SlotSource | None = None, weight: Callable[[str], float] = lambda tenant: 1.0,
                 shadow: bool = False, connections: ConnectionSource | None = None) -> None:
        self.action = action
        self.rate = rate_per_second  # the documented cap: the ceiling
        #: The rate grants are spaced by now (≤ the cap): cut when the account is throttled below the cap.
        self.adaptive_rate = AdaptiveRate(rate_per_second, start=time.monotonic())
        #: δ(t): one per process, shared by its queues (a number is a fixed floor that still adapts).
        self.margin = margin if isinstance(margin, AdaptiveMargin) else AdaptiveMargin(margin)
        self.bound = bound
        self.stats = QueueStats()
        self._fair: FairQueue[asyncio.Future[None]] = FairQueue(weight, bound)
        self._turn: asyncio.Future[None] | None = None  # the waiter going through the spacing now
        self._latest_grant: dict[asyncio.Future[None], float] = {}  # queued call -> when it must be granted by
        self._closed: str | None = None  # why the queue refuses everything (shutting down)
        self.shadow = shadow
        self._shadow_budget = ShadowBudget()  # shadow mode: when the enforced budget would next grant
        self._recent_grants: deque[float] = deque(maxlen=max(1, rate_per_second))
        self._last_grant: float | None = None
        #: The grant gate, the shared slot and the send slot (`GrantPath.take`); the issuer of the grants.
        self._path = GrantPath(action, rate_per_second, lambda: self.interval, self.margin.guard_s,
                               self.stats.record_send_delay, coordinator, connections)
        # Priors until calls are observed: spacing a little wider than T, and an answer time typical of a CAMS
        # call from the same region.
        self._observed_spacing = self.interval * SPACING_PRIOR
        self._upstream_time = INITIAL_UPSTREAM_TIME

    @property
    def coordinator(self) -> SlotSource | None:
        """The shared budget's slots (None: this process's own spacing alone)."""
        return self._path.coordinator

    @property
    def connections(self) -> ConnectionSource | None:
        return self._path.connections

    @property
    def send_guard(self) -> float:
        """How late a send may be against its aimed moment without pushing the next one back (δ/4)."""
        return self._path.pacing.guard_s

    @property
    def waiting(self) -> int:
        return len(self._fair) + (self._turn is not None)

    def depths(self) -> dict[Priority, int]:
        """Calls queued per priority (the one going through the spacing now not included)."""
        return {priority: self._fair.depth(priority) for priority in Priority}

    def use(self, now: float) -> float:
        """Grants in the last second as a share of the cap."""
        return sum(1 for granted in self._recent_grants if granted > now - 1.0) / self.rate

    def rate_limit(self, now: float) -> tuple[int, float]:
        """(slots left in this second, seconds until a new miss would be granted): the ``RateLimit`` header."""
        return self.remaining(now), self.estimated_wait(now)

    def remaining(self, now: float) -> int:
        """Slots of the current 1-second window this queue has not granted (the ``RateLimit`` header's r)."""
        used = sum(1 for granted in self._recent_grants if granted > now - 1.0)
        return max(0, self.rate - used - self.waiting)

    @property
    def interval(self) -> float:
        """``T = (1 s + δ(t)) / R(t)`` now (R(t): the adaptive rate, at most the cap)."""
        now = time.monotonic()
        return spacing_interval(self.adaptive_rate.rate(now), self.margin.value(now))

    def current_rate(self) -> float:
        return self.adaptive_rate.rate(time.monotonic())

    @property
    def effective_interval(self) -> float:
        return max(self.interval, self._observed_spacing)

    def observe_upstream_time(self, seconds: float) -> None:
        """Feed the average answer time that admission keeps free before a deadline, and the margin's
        estimate of the path's jitter."""
        self._upstream_time = ewma(self._upstream_time, seconds)
        self.margin.observe(seconds)
        self._report_margin("answer times")

    def throttled(self) -> None:
        """The upstream throttled a call of this queue: widen the margin at once, and tell the adaptive rate."""
        self.margin.throttled(time.monotonic())
        self._report_margin("throttled")
        self.throttled_elsewhere(here=True)

    def throttled_elsewhere(self, here: bool = False) -> None:
        """A call of this account and action was throttled (on another replica, unless ``here``): the adaptive
        rate may cut (the margin is this process's path: it is not widened by another's throttle)."""
        if self.adaptive_rate.throttled(time.monotonic()):
            log.warning("upstream rate cut", action=self.action, cap=self.rate, why=self.adaptive_rate.why,
                        seen="here" if here else "on another replica",
                        rate=round(self.adaptive_rate.rate(time.monotonic()), 3))

    def _report_margin(self, why: str) -> None:
        now = time.monotonic()
        if self.margin.changed_much(now):
            log.info("spacing margin changed", action=self.action, why=why, **self.margin.status(now))

    def estimated_wait(self, now: float, tenant: str = "anonymous",
                       priority: Priority = Priority.INTERACTIVE, ahead: int | None = None) -> float:
        """Seconds until a new call from ``tenant`` at ``priority`` would be granted (or one with ``ahead``
        calls in front of it)."""
        anchor = self._last_grant
        last_sent = self._path.pacing.last_sent
        if last_sent is not None and (anchor is None or last_sent > anchor):
            anchor = last_sent
        if ahead is None:
            ahead = self._fair.ahead_of(tenant, priority) + (self._turn is not None)
        return estimated_wait(now, anchor, ahead, self.effective_interval)

    def deadline_floor(self) -> DeadlineFloor:
        """The shortest deadline a miss of this action can have, even with an empty queue (now)."""
        return deadline_floor(self._upstream_time, self.effective_interval)

    def check_deadline(self, budget_s: float, asked: str) -> None:
        """Raise `DeadlineTooShort` if a miss with ``budget_s`` seconds left could not be served even with nothing
        queued (`DeadlineFloor.refuses`): called before the flight, the lease and the queue, so it costs nothing.
        ``asked`` names the deadline in the message. Shadow mode enforces nothing, this included."""
        if self.shadow:
            return
        floor = self.deadline_floor()
        if floor.refuses(budget_s):
            self.stats.refused_too_short += 1
            raise DeadlineTooShort(self.action, asked, floor.fastest_s, floor.advised_s)

    def _pass_turn(self) -> None:
        """Give the turn to the next waiter `FairQueue` picks, if nobody holds it."""
        while self._turn is None:
            chosen = self._fair.pop()
            if chosen is None:
                return
            if not chosen.done():  # a waiter cancelled between its timeout and removal is skipped
                chosen.set_result(None)
                self._turn = chosen

    def _end_turn(self, ticket: asyncio.Future[None]) -> None:
        if self._turn is ticket:
            self._turn = None
            self._pass_turn()

    def close(self, reason: str, retry_after_s: float = 1.0) -> int:
        """Refuse every queued call now, and every later one, with `Overloaded` (graceful shutdown: each gets
        an answer that says why and when to retry; calls already granted go on). Returns how many were queued."""
        self._closed = reason
        refused = 0
        while (ticket := self._fair.pop()) is not None:
            if not ticket.done():
                ticket.set_exception(Overloaded(reason, retry_after_s))
                refused += 1
        return refused

    async def acquire(self, deadline: float, tenant: str = "anonymous",
                      priority: Priority = Priority.INTERACTIVE, demand: Demand | None = None) -> Grant:
        """Wait for an upstream slot; the caller must send at once and then call ``grant.sent(at)``
        (or ``grant.release()`` if nothing was sent).

        ``deadline`` is in event-loop time. With ``demand`` (a coalesced flight), its deadline, tenant and
        priority are used instead and followed while the call waits: a longer deadline moves the give-up time,
        a higher priority moves the call up (`FairQueue.promote`). Raises `Overloaded` (refused at once, or
        when the queue closes), `DeadlineExceeded` (less time left than an answer takes, or gave up while
        queued), or `UpstreamError` (no connection could be opened; nothing was sent). A deadline too short
        for any miss is refused before this, by `check_deadline`."""
        if demand is not None:
            deadline, tenant, priority = demand.deadline, demand.tenant, demand.priority
        if self._closed is not None:
            raise Overloaded(self._closed, 1.0)
        loop = asyncio.get_running_loop()
        if self.shadow:
            return self._shadow_grant(loop.time(), deadline)
        now = loop.time()
        grant_by = deadline - self._upstream_time
        if now > grant_by:  # no answer could arrive in time even if granted now: no queue helps, no retry time
            self.stats.refused_no_time_left += 1
            raise DeadlineExceeded(f"Too little of the request's deadline is left for an upstream call to "
                                   f"{self.action} ({max(0.0, deadline - now) * 1000:.0f} ms; the upstream answers "
                                   f"in about {self._upstream_time * 1000:.0f} ms); it was not sent.")
        wait = self.estimated_wait(now, tenant, priority)
        if now + wait > grant_by:
            self.stats.refused_deadline += 1
            raise Overloaded(f"The upstream queue for {self.action} cannot serve this request before its deadline: "
                             f"the calls ahead of it, at {self.rate}/s, take longer than it allows", wait)
        ticket: asyncio.Future[None] = loop.create_future()
        try:
            self._fair.push(ticket, tenant, priority)
        except TenantQueueFull:
            self.stats.refused_full += 1
            raise Overloaded(f"The upstream queue for {self.action} is full for tenant {tenant} ({self.bound} "
                             f"waiting)", wait) from None
        self._latest_grant[ticket] = grant_by
        self._pass_turn()
        unwatch: Callable[[], None] = _nothing
        try:
            async with asyncio.timeout_at(max(now, grant_by)) as scope:
                if demand is not None:
                    unwatch = demand.watch(lambda: self._follow(demand, ticket, scope))
                await ticket  # our turn: only the turn holder goes through the spacing
                send_by, connection, send_at = await self._path.take(
                    loop, lambda: self._grant_by(deadline, demand), lambda: self._end_turn(ticket),
                    lambda: len(self._fair) > 0)  # frees what it took if it raises
        except TimeoutError as exc:
            self.stats.expired += 1
            raise DeadlineExceeded(f"The request's deadline passed while it waited for an upstream slot for "
                                   f"{self.action}; it was not sent.") from exc
        finally:
            unwatch()
            self._latest_grant.pop(ticket, None)
            self._fair.remove(ticket)
            if not ticket.done():
                ticket.cancel()
            self._end_turn(ticket)
        granted = loop.time()
        self._recent_grants.append(granted)
        if self._last_grant is not None and self.waiting > 0:
            # Back-to-back grants under backlog: learn the spacing actually achieved (bounded: `learned_spacing`).
            self._observed_spacing = learned_spacing(self._observed_spacing, granted - self._last_grant,
                                                     self.interval, self._sharers())
        self._last_grant = granted
        self.stats.granted += 1
        grant = Grant(self._path, granted, send_by, connection, send_at)
        try:
            self._refuse_late(granted)
        except BaseException:
            grant.release()  # never leave the send slot held by a grant nobody received
            raise
        return grant

    def _refuse_late(self, now: float) -> None:
        """Refuse now, with `Overloaded` and the wait it would have had, every queued call that can no longer be
        granted before its deadline at the spacing seen now (δ widened after it was admitted, or grants fell
        behind the estimate): an answer that says when to retry instead of a wait that ends in a 504. Checked
        at every grant, in the order `FairQueue` would serve; a refused call shortens the wait of those behind."""
        if not self._latest_grant:
            return
        interval = self.effective_interval
        first = self.estimated_wait(now, ahead=int(self._turn is not None))
        queued = ((ticket, None if ticket.done() else self._latest_grant.get(ticket)) for ticket in self._fair.order())
        for ticket, wait in late_refusals(now, first, interval, queued):
            self.stats.refused_late += 1
            ticket.set_exception(Overloaded(
                f"The upstream queue for {self.action} can no longer serve this request before its deadline: the "
                f"calls ahead of it now take longer (spacing {interval * 1000:.0f} ms, margin "
                f"{self.margin.value(time.monotonic()) * 1000:.0f} ms); it was not sent", wait))

    def _sharers(self) -> int:
        sharers = getattr(self.coordinator, "sharers", None)
        return int(sharers()) if callable(sharers) else 1

    def _grant_by(self, deadline: float, demand: Demand | None) -> float:
        return (demand.deadline if demand is not None else deadline) - self._upstream_time

    def _follow(self, demand: Demand, ticket: asyncio.Future[None], scope: asyncio.Timeout) -> None:
        """A request joined the flight this call fills: take its longer deadline and higher priority."""
        grant_by = max(scope.when() or 0.0, demand.deadline - self._upstream_time)
        scope.reschedule(grant_by)
        if ticket in self._latest_grant:
            self._latest_grant[ticket] = grant_by
        self._fair.promote(ticket, demand.tenant, demand.priority)

    def _shadow_grant(self, now: float, deadline: float) -> Grant:
        """``--budget-mode shadow``: grant at once, and count what the enforced budget would have done with
        this call (a virtual GCRA clock at this queue's spacing): granted now, delayed, or refused because the
        delay would not fit the deadline. Nothing waits, so the upstream may throttle: a mode for trying caps."""
        self.stats.shadow[self._shadow_budget.judge(now, deadline - self._upstream_time, self.interval)] += 1
        self.stats.granted += 1
        self._recent_grants.append(now)
        return Grant(self._path, now, holds_slot=False)  # no send slot is held in shadow mode
