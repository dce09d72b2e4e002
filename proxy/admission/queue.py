"""One action's upstream queue in one process: grants spaced `spacing_interval` apart, bounded,
with deadlines, shared fairly.

Who goes next is decided by `FairQueue` (priority tiers, then deficit round robin over tenants by
weight): waiters queue there, and one at a time the chosen one takes the *turn* and goes through the
spacing below; the turn passes on when it holds its grant. So a newcomer from a quiet tenant, or an
interactive miss behind refreshes, waits for at most the slot in progress plus its fair position.

Grants are spaced by a gate of one (no initial burst, consecutive grants at least ``T`` apart), with
``T = (1 s + δ(t)) / R`` re-read at every grant: δ(t) is the process's adaptive margin
(`proxy.admission.margin.AdaptiveMargin`), fed with the answer time of every call and with every throttle.

Spacing grants is not enough: the upstream counts *arrivals*, and under load the time between a grant
and the request leaving the socket varies (a busy event loop, a new connection). So:

* the turn holder takes an upstream connection *before* its slot (`ConnectionSource.connection`: a warm
  one, or one opened now, TLS handshake included), and while others wait the source keeps one more warm
  (`prewarm`); nothing between the slot and the write waits on the network;
* a grant is also a *send slot*: the next grant waits until the previous granted request has been
  written (or has failed to be) and until ``T`` after the moment it was aimed at, or ``T − guard`` after
  it actually left if that is later (guard = δ/4), so a few ms of event-loop lateness per send do not
  accumulate into lost quota.

Any ``cap + 1`` consecutive requests therefore leave at least ``cap·T − guard = 1 s + δ − guard`` apart
(consecutive ones ``T − guard``), measured when their bytes were written, whatever happened between grant
and send; only the network's own jitter remains for the rest of δ to cover.

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
  under backlog when that is wider than ``T`` (sends anchor the next grant, see above);
* δ(t) may widen after a call was admitted (admission plans at the spacing of the moment): at every grant
  the queued calls are re-checked in the order they would be served, and one that no longer fits is
  refused then with `Overloaded` and its new wait, never sent;
* a miss that is still queued when its grant could no longer fit leaves the queue
  (`DeadlineExceeded`) and is never sent;
* nothing is dropped silently: every `acquire` returns a grant or raises.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from proxy.admission.aimd import AdaptiveRate
from proxy.admission.coordinator import Coordinator
from proxy.admission.fair import FairQueue, Priority, TenantQueueFull
from proxy.admission.margin import AdaptiveMargin
from proxy.admission.spacing import DeadlineFloor, deadline_floor, estimated_wait, spacing_interval
from proxy.errors import DeadlineExceeded, DeadlineTooShort, Overloaded
from proxy.logs import get_logger

log = get_logger("proxy.admission")

#: Weight of the newest sample in the running averages of spacing and answer time.
EWMA_WEIGHT: Final = 0.2
#: Assumed answer time (seconds) before the first call is observed.
INITIAL_UPSTREAM_TIME: Final = 0.25


class SlotSource(Protocol):
    """Where a slot comes from besides this queue's own spacing: the budget shared by replicas through Redis
    (`proxy.admission.coordinator.Coordinator`) or by ``--workers`` on one host (`proxy.admission.host`)."""

    async def slot(self, action: str, cap: int, interval: float, grant_by: float) -> float | None:
        """Sleep until this process may send one call; return the loop time by which the call must have been
        written (None: no window). Raise `Overloaded` if no slot can come before ``grant_by``."""
        ...

    def missed(self) -> None:
        """A slot returned by `slot` was not used: the call could not be written within its window."""
        ...

    def status(self) -> dict[str, object]:
        ...


class ConnectionSource(Protocol):
    """Upstream connections taken before the slot (`proxy.upstream.client.UpstreamClient`)."""

    async def connection(self) -> object:
        """A connection in hand (may open one). Raises `proxy.upstream.errors.UpstreamError`."""
        ...

    def give_back(self, connection: object) -> None:
        """A connection from `connection` that was not used."""
        ...

    def prewarm(self, count: int) -> None:
        """Keep ``count`` connections idle or opening."""
        ...


def _nothing() -> None:
    return None


class Demand:
    """Who a call is for and until when; a coalesced flight's demand rises as requests join it.

    `join` keeps the longest deadline and the highest priority (with that request's tenant) of everyone
    waiting, and tells the watchers (the queue the call waits in)."""

    __slots__ = ("_watchers", "deadline", "priority", "tenant")

    def __init__(self, tenant: str, priority: Priority, deadline: float) -> None:
        self.tenant = tenant
        self.priority = priority
        self.deadline = deadline
        self._watchers: list[Callable[[], None]] = []

    def join(self, tenant: str, priority: Priority, deadline: float) -> None:
        changed = False
        if deadline > self.deadline:
            self.deadline, changed = deadline, True
        if priority < self.priority:
            self.priority, self.tenant, changed = priority, tenant, True
        if changed:
            for watcher in list(self._watchers):
                watcher()

    def watch(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher`` on every change until the returned function is called."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None


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
        self.coordinator = coordinator
        self.connections = connections
        self.rate = rate_per_second  # the documented cap: the ceiling
        #: The rate grants are spaced by now (≤ the cap): cut when the account is throttled below the cap.
        self.adaptive_rate = AdaptiveRate(rate_per_second, start=time.monotonic())
        #: δ(t): one per process, shared by its queues (a number is a fixed floor that still adapts).
        self.margin = margin if isinstance(margin, AdaptiveMargin) else AdaptiveMargin(margin)
        self.bound = bound
        self.stats = QueueStats()
        self._next_grant = 0.0  # the grant gate: no grant before this loop time
        self._fair: FairQueue[asyncio.Future[None]] = FairQueue(weight, bound)
        self._turn: asyncio.Future[None] | None = None  # the waiter going through the spacing now
        self._latest_grant: dict[asyncio.Future[None], float] = {}  # queued call -> when it must be granted by
        self._closed: str | None = None  # why the queue refuses everything (shutting down)
        self.shadow = shadow
        self._shadow_next = 0.0  # shadow mode: when the enforced budget would next grant (GCRA, no burst)
        self._recent_grants: deque[float] = deque(maxlen=max(1, rate_per_second))
        self._last_grant: float | None = None
        self._last_sent: float | None = None
        self._last_aimed: float | None = None  # when the last sent call was meant to leave
        #: How late a send may be against its aimed moment without pushing the next one back (δ/4): sends k and
        #: k + cap are then at least cap·T − guard = 1 s + δ − guard apart, and lateness does not accumulate.
        self.send_guard = self.margin.guard_s
        self._send_slot = asyncio.Lock()
        # Priors until calls are observed: spacing 3% wider than T (send anchoring and timer granularity add
        # a few ms per slot), and an answer time typical of a CAMS call from the same region.
        self._observed_spacing = self.interval * 1.03
        self._upstream_time = INITIAL_UPSTREAM_TIME

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
        self._upstream_time += EWMA_WEIGHT * (seconds - self._upstream_time)
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
        if self._last_sent is not None and (anchor is None or self._last_sent > anchor):
            anchor = self._last_sent
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
        holding = False
        send_by: float | None = None
        send_at = 0.0
        connection: object | None = None
        unwatch: Callable[[], None] = _nothing
        try:
            async with asyncio.timeout_at(max(now, grant_by)) as scope:
                if demand is not None:
                    unwatch = demand.watch(lambda: self._follow(demand, ticket, scope))
                await ticket  # our turn: only the turn holder goes through the spacing
                if self.connections is not None:
                    # The connection first, so nothing after the slot waits on the network.
                    connection = await self.connections.connection()
                    if len(self._fair):
                        self.connections.prewarm(1)  # the next turn finds one in hand
                await self._grant_gate(loop)
                if isinstance(self.coordinator, Coordinator):
                    # Replicas: reserve the shared slot, then pass the turn on before waiting for it, so the
                    # next call's reservation (a Redis round trip) overlaps this one's wait.
                    reserved = await self.coordinator.reserve(self.action, self.rate, self.interval,
                                                              self._grant_by(deadline, demand))
                    self._end_turn(ticket)
                    await self._send_slot.acquire()
                    holding = True
                    send_by = await self.coordinator.wait(reserved)
                    send_at = self._earliest_send(loop.time())  # and the spacing of this process's own sends
                    if reserved.at is not None:
                        send_at = max(send_at, reserved.at)
                    if send_at > loop.time():
                        await asyncio.sleep(send_at - loop.time())  # past the send window: not sent (send_by)
                else:
                    await self._send_slot.acquire()
                    holding = True
                    send_at = self._earliest_send(loop.time())
                    if send_at > loop.time():
                        await asyncio.sleep(send_at - loop.time())
                    if self.coordinator is not None:
                        send_by = await self.coordinator.slot(self.action, self.rate, self.interval,
                                                              self._grant_by(deadline, demand))
        except TimeoutError as exc:
            if holding:
                self._send_slot.release()
            self._give_back(connection)
            self.stats.expired += 1
            raise DeadlineExceeded(f"The request's deadline passed while it waited for an upstream slot for "
                                   f"{self.action}; it was not sent.") from exc
        except BaseException:
            if holding:
                self._send_slot.release()
            self._give_back(connection)
            raise
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
            # Back-to-back grants under backlog: learn the spacing actually achieved. One gap counts for at most
            # what a fair split with every process sharing the budget gives (x1.5): a stall at start-up (first
            # connections, a quiet period) must not make admission refuse for minutes afterwards.
            gap = min(granted - self._last_grant, 1.5 * self.interval * self._sharers())
            self._observed_spacing += EWMA_WEIGHT * (gap - self._observed_spacing)
        self._last_grant = granted
        self.stats.granted += 1
        grant = Grant(self, granted, send_by, connection, send_at)
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
        kept = 0
        for ticket in self._fair.order():
            wait = first + kept * interval
            grant_by = self._latest_grant.get(ticket)
            if grant_by is None or ticket.done() or now + wait <= grant_by:
                kept += 1
                continue
            self.stats.refused_late += 1
            ticket.set_exception(Overloaded(
                f"The upstream queue for {self.action} can no longer serve this request before its deadline: the "
                f"calls ahead of it now take longer (spacing {interval * 1000:.0f} ms, margin "
                f"{self.margin.value(time.monotonic()) * 1000:.0f} ms); it was not sent", wait))

    async def _grant_gate(self, loop: asyncio.AbstractEventLoop) -> None:
        """At most one grant per ``T`` (the turn holder alone passes here, so no lock is needed)."""
        wait = self._next_grant - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_grant = loop.time() + self.interval

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

    def _give_back(self, connection: object | None) -> None:
        if connection is not None and self.connections is not None:
            self.connections.give_back(connection)

    def _shadow_grant(self, now: float, deadline: float) -> Grant:
        """``--budget-mode shadow``: grant at once, and count what the enforced budget would have done with
        this call (a virtual GCRA clock at this queue's spacing): granted now, delayed, or refused because the
        delay would not fit the deadline. Nothing waits, so the upstream may throttle: a mode for trying caps."""
        slot = max(self._shadow_next, now)
        wait = slot - now
        if now + wait > deadline - self._upstream_time:
            self.stats.shadow["refused"] += 1  # a refused call takes no slot
        else:
            self.stats.shadow["delayed" if wait > 0 else "granted"] += 1
            self._shadow_next = slot + self.interval
        self.stats.granted += 1
        self._recent_grants.append(now)
        grant = Grant(self, now)
        grant._done = True  # no send slot is held in shadow mode
        return grant

    def _earliest_send(self, now: float) -> float:
        """When the next call may leave: ``T`` after the moment the last one was aimed at, and never less than
        ``T − guard`` after it actually left (a late send shifts the schedule only beyond the guard)."""
        if self._last_sent is None:
            return now
        aimed = self._last_aimed if self._last_aimed is not None else self._last_sent
        return max(aimed + self.interval, self._last_sent + self.interval - self.send_guard)

    def _sent(self, grant: Grant, at: float) -> None:
        if self._last_sent is None or at >= self._last_sent:
            self._last_aimed = min(grant.aimed_at, at) if grant.aimed_at else at
        self._last_sent = at if self._last_sent is None else max(self._last_sent, at)
        self.stats.record_send_delay(at - grant.granted_at)
        self._send_slot.release()

    def _released(self) -> None:
        self._send_slot.release()


class Grant:
    """One upstream send slot, with the connection taken for it. Exactly one of `sent` or `release` frees the
    slot; later calls do nothing. The connection goes to whoever calls `take_connection` (the upstream call);
    if nobody does, `release` gives it back."""

    __slots__ = ("_connection", "_done", "_queue", "aimed_at", "granted_at", "send_by")

    def __init__(self, queue: UpstreamQueue, granted_at: float, send_by: float | None = None,
                 connection: object | None = None, aimed_at: float = 0.0) -> None:
        self._queue = queue
        self.granted_at = granted_at
        #: The moment this call was meant to leave (its slot, or the spacing's next moment); 0: unknown.
        self.aimed_at = aimed_at
        #: Loop time by which the call must have been written (shared slots); None: no window.
        self.send_by = send_by
        self._connection = connection
        self._done = False

    def take_connection(self) -> object | None:
        """The connection taken before the slot (None without a connection source); it is the caller's now."""
        connection, self._connection = self._connection, None
        return connection

    def sent(self, at: float) -> None:
        """The request's headers were written at loop time ``at``."""
        if not self._done:
            self._done = True
            self._queue._sent(self, at)

    def release(self) -> None:
        """Nothing was sent (or `sent` was already called); an untaken connection goes back."""
        connection, self._connection = self._connection, None
        self._queue._give_back(connection)
        if not self._done:
            self._done = True
            self._queue._released()
