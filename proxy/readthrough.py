"""The read-through flow, in one readable place: cache, coalesce, admit, call, classify, store.

    lookup       the cache; a fresh entry is a HIT (no queue, no upstream); a stale one (within
                 stale-while-revalidate) is answered at once as STALE and starts ONE background
                 refresh (one per key across replicas: the fill lease); an older one is kept as the
                 stale-if-error fallback and the request goes on as a miss
    coalesce     a miss joins the flight for its key, or starts it (MISS for the leader, COALESCED
                 for the others); everyone waits with their own deadline
    fill         per attempt: a slot from the action's queue (at the caller's priority and tenant:
                 `proxy.admission.fair`), then one signed upstream call, then the outcome table
                 (`proxy.upstream.errors`, `proxy.freshness.RULES`): successes are stored for the
                 action's TTL, not-found and denied answers for the negative TTL; THROTTLED and
                 FAULT (and no answer at all) are retried through the queue while attempts and
                 the deadline allow; nothing else is stored
    fallback     when the miss fails (throttled, 5xx, no answer, queue refusal, deadline) and a
                 stale entry is still within the maximum staleness, that entry is the answer

The answer is always the upstream's status and body bytes, untouched. A cache backend error never
fails a request: the lookup counts as a miss and the store is skipped (both logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final

import orjson

from proxy.actions import ActionSpec
from proxy.admission.coordinator import SlotMissed
from proxy.admission.fair import Priority
from proxy.admission.queue import Demand, UpstreamQueue
from proxy.cache.base import Cache, CacheError, Entry
from proxy.cache.tagindex import TagIndex
from proxy.coalesce import SingleFlight
from proxy.errors import DeadlineExceeded, DeadlineTooShort, GatewayError, Overloaded, UpstreamFailed
from proxy.freshness import Freshness, Lifetimes, store_seconds
from proxy.keys import cache_key
from proxy.logs import get_logger
from proxy.metrics import Metrics
from proxy.replica.bus import Bus, Notice
from proxy.replica.leases import Leases, LeaseUnavailable
from proxy.tags import tags_for, waba_link
from proxy.tasks import TaskOwner
from proxy.upstream.client import UpstreamClient, UpstreamResponse
from proxy.upstream.connections import Connection
from proxy.upstream.errors import (
    INVALID_ANSWER,
    Outcome,
    SendWindowMissed,
    UpstreamError,
    UpstreamInvalidAnswer,
    UpstreamTimeout,
    classify,
)

if TYPE_CHECKING:
    from proxy.refresh import RefreshAhead

log = get_logger("proxy.readthrough")


class CacheStatus(Enum):
    HIT = "HIT"
    STALE = "STALE"
    MISS = "MISS"
    COALESCED = "COALESCED"


#: Outcomes after which a stale entry is served instead (stale-if-error).
FAILED: Final = frozenset({Outcome.THROTTLED, Outcome.FAULT})
#: The queue tenant of background refreshes (their tier is above tenants anyway).
REFRESH_TENANT: Final = "(refresh)"


@dataclass(frozen=True, slots=True)
class Fill:
    """What one flight produced."""

    entry: Entry
    outcome: Outcome
    code: str
    attempts: int
    queue_wait: float
    upstream_time: float
    stored: bool
    #: Filled by another replica (this one waited on its lease).
    shared: bool = False


@dataclass(frozen=True)
class Replicas:
    """What cross-replica coalescing needs: the fill leases and the notice bus."""

    leases: Leases
    bus: Bus


@dataclass(frozen=True, slots=True)
class Answer:
    entry: Entry
    cache: CacheStatus
    fill: Fill | None = None
    #: For STALE: why ("stale-while-revalidate" or "stale-if-error"), and the failed upstream status if any.
    stale_reason: str = ""
    failed_status: int = 0
    #: A miss that went upstream with a stale entry in hand (Cache-Status ``fwd=stale``).
    had_stale: bool = False


@dataclass
class Counters:
    """Plain counts of what the flow did (metrics export comes later)."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    stale_served: int = 0
    stale_if_error: int = 0
    refreshes: int = 0
    refreshes_skipped: int = 0
    refresh_failures: int = 0
    upstream_calls: int = 0
    upstream_throttled: int = 0
    upstream_faults: int = 0
    upstream_no_answer: int = 0
    cache_errors: int = 0
    missed_send_windows: int = 0
    #: Misses refused before any flight: their deadline is shorter than the fastest possible miss.
    deadline_too_short: int = 0
    #: Upstream calls in a row that got no answer or a fault (0 after any real answer): /readyz reads it.
    upstream_failures_in_a_row: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def failure_notice(key: str, origin: str, error: GatewayError) -> Notice:
    """The notice a lease holder publishes when its fill failed: the error's code, message, status and, for a
    refusal, when to retry (each waiter renders it with its own request id)."""
    retry_after = error.retry_after_s if isinstance(error, Overloaded) else None
    body = orjson.dumps({"Code": error.code, "Message": error.message, "RetryAfterS": retry_after})
    return Notice("fail", key, origin, error.status, body, "application/json;charset=utf-8")


def failure_from_notice(notice: Notice) -> GatewayError:
    """The error a waiter on another replica answers with, from a ``fail`` notice."""
    try:
        data = orjson.loads(notice.body)
        code, message, retry_after = str(data["Code"]), str(data["Message"]), data.get("RetryAfterS")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message, retry_after = UpstreamFailed.code, "The replica filling this key failed.", None
    if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
        refused = Overloaded(message, float(retry_after), rendered=True)  # the message says the wait already
        refused.code, refused.status = code, notice.status or refused.status
        return refused
    return GatewayError(message, code=code, status=notice.status or UpstreamFailed.status)


class ReadThrough:
    def __init__(
        self,
        *,
        cache: Cache,
        client: UpstreamClient,
        queues: Mapping[str, UpstreamQueue],
        ttl: Callable[[str], float],
        attempts: int,
        access_key_id: Callable[[], str],
        owner: TaskOwner,
        wall_clock: Callable[[], float] = time.time,
        replicas: Replicas | None = None,
        tags: TagIndex | None = None,
        lifetimes: Lifetimes | None = None,
        refresh_deadline_s: float = 30.0,
        max_refreshes: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self.cache = cache
        self._client = client
        self._queues = queues
        self._ttl = ttl
        self._attempts = attempts
        self._access_key_id = access_key_id
        self._flights: SingleFlight[Fill] = SingleFlight(owner)
        self._demands: dict[str, Demand] = {}
        self._wall = wall_clock
        self._replicas = replicas
        self._tags = tags
        self.lifetimes = lifetimes or Lifetimes()
        self._owner = owner
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._refresh_deadline = refresh_deadline_s
        self._max_refreshes = max_refreshes
        self.metrics = metrics or Metrics()
        #: Set by the app when refresh-ahead is on (`proxy.refresh`).
        self.refresh_ahead: RefreshAhead | None = None
        self._endpoint = str(client.endpoint)
        self.counters = Counters()

    def access_key_id(self) -> str:
        return self._access_key_id()

    def key_for(self, spec: ActionSpec, params: Mapping[str, str]) -> str:
        return cache_key(endpoint=self._endpoint, access_key_id=self._access_key_id(),
                         action=spec.name, version=spec.version, params=params)

    def freshness(self, entry: Entry) -> Freshness:
        return self.lifetimes.freshness(entry.fresh_until, entry.stale_until, self._wall())

    async def fetch(self, spec: ActionSpec, params: Mapping[str, str], deadline: float, *, key: str | None = None,
                    found: Entry | None = None, looked_up: bool = False, tenant: str = "anonymous",
                    priority: Priority = Priority.INTERACTIVE, budget_s: float | None = None,
                    asked: str | None = None) -> Answer:
        """The answer for one validated call; raises `GatewayError` when there is none to give.

        ``looked_up``: the caller already read the cache under ``key`` and found ``found`` (or nothing).
        ``budget_s``: the whole budget the request was given (default: what is left of ``deadline`` now), and
        ``asked``: how it was set, for the message ("X-Request-Timeout-Ms 50"). A miss that would start a flight
        with a budget shorter than the fastest possible miss is refused with `DeadlineTooShort` before the flight
        (no lease, no queue, no quota), or answered from a stale entry still within the maximum staleness; joining
        a flight already under way needs no minimum. The whole budget decides, not what is left of it: time spent
        before (a slow cache lookup) is not the caller's mistake, and meets the queue's own deadline checks."""
        key = key or self.key_for(spec, params)
        if not looked_up:
            found = await self._lookup(key)
        fallback: Entry | None = None
        if found is not None:
            state = self.freshness(found)
            if state is Freshness.FRESH:
                self.counters.hits += 1
                self.note_hit(key, spec, params, found)
                return Answer(found, CacheStatus.HIT)
            if state is Freshness.STALE:
                self.counters.stale_served += 1
                self.revalidate(spec, params, key, found.fresh_until)
                return Answer(found, CacheStatus.STALE, stale_reason="stale-while-revalidate")
            fallback = found
        if not self._flights.has(key) and key not in self._refreshing:
            try:
                self._check_deadline(spec.name, deadline, budget_s, asked)
            except DeadlineTooShort as exc:
                self.counters.deadline_too_short += 1
                return self._stale_or_raise(fallback, exc, exc)
        flight, leader = self._flights.join(
            key, lambda: self._flight(spec, dict(params), key, self._demand_for(key, tenant, priority, deadline)))
        if leader:
            self.counters.misses += 1
        else:
            self.counters.coalesced += 1
            joined = self._demands.get(key)
            if joined is not None:  # the flight waits for everyone on it: longest deadline, highest priority
                joined.join(tenant, priority, deadline)
        try:
            fill = await SingleFlight.wait(flight, deadline)
        except TimeoutError as exc:
            error: GatewayError = DeadlineExceeded(
                f"The request's deadline passed while the upstream call for {spec.name} was in progress; the "
                "call goes on and will fill the cache.")
            return self._stale_or_raise(fallback, error, exc)
        except GatewayError as exc:
            return self._stale_or_raise(fallback, exc, exc)
        if fill.outcome in FAILED and fallback is not None and self._servable(fallback):
            self.counters.stale_if_error += 1
            return Answer(fallback, CacheStatus.STALE, fill, "stale-if-error", fill.entry.status)
        return Answer(fill.entry, CacheStatus.MISS if leader and not fill.shared else CacheStatus.COALESCED, fill,
                      had_stale=fallback is not None)

    def _check_deadline(self, action: str, deadline: float, budget_s: float | None, asked: str | None) -> None:
        """`UpstreamQueue.check_deadline` for a miss about to start a flight (``deadline`` in loop time)."""
        budget = deadline - asyncio.get_running_loop().time() if budget_s is None else budget_s
        self._queues[action].check_deadline(budget, asked or f"This request's deadline ({budget * 1000:.0f} ms)")

    def _demand_for(self, key: str, tenant: str, priority: Priority, deadline: float) -> Demand:
        """The demand of a new flight for ``key``, kept while the flight runs so joiners can raise it."""
        demand = self._demands[key] = Demand(tenant, priority, deadline)
        return demand

    def _servable(self, entry: Entry) -> bool:
        return self.lifetimes.servable_on_error(entry.stale_until, self._wall())

    def _stale_or_raise(self, fallback: Entry | None, error: GatewayError, cause: BaseException) -> Answer:
        if fallback is not None and self._servable(fallback):
            self.counters.stale_if_error += 1
            return Answer(fallback, CacheStatus.STALE, stale_reason="stale-if-error", failed_status=error.status)
        raise error from cause

    def record_hit(self, key: str, spec: ActionSpec, params: Mapping[str, str], entry: Entry, tenant: str) -> None:
        """A fresh hit answered by the web layer's short path: counted (hits, request metrics) and noted for
        refresh-ahead, in one call (it runs on every hit)."""
        self.counters.hits += 1
        self.metrics.count_request(spec.name, "HIT", entry.status, tenant)
        if self.refresh_ahead is not None and 200 <= entry.status < 300:
            self.refresh_ahead.note_hit(key, spec, params, entry.fetched_at, entry.fresh_until)

    def note_hit(self, key: str, spec: ActionSpec, params: Mapping[str, str], entry: Entry) -> None:
        """A fresh hit: plan this key's refresh-ahead (successes only; negative answers just expire)."""
        if self.refresh_ahead is not None and 200 <= entry.status < 300:
            self.refresh_ahead.note_hit(key, spec, params, entry.fetched_at, entry.fresh_until)

    def revalidate(self, spec: ActionSpec, params: Mapping[str, str], key: str,
                   stale_before: float) -> asyncio.Task[None] | None:
        """Start one background refresh of ``key`` (an entry fresh until ``stale_before``) unless one (or a
        miss) is already under way here; the fill lease makes it one across replicas. None when skipped."""
        if key in self._refreshing or self._flights.has(key):
            return None
        if len(self._refreshing) >= self._max_refreshes:
            self.counters.refreshes_skipped += 1
            return None
        try:
            task = self._owner.spawn(self._refresh(spec, dict(params), key, stale_before), name=f"refresh:{key}")
        except RuntimeError:  # shutting down: the stale answer stands, no refresh starts
            return None
        self._refreshing[key] = task
        task.add_done_callback(lambda _task: self._refreshing.pop(key, None))
        return task

    async def _refresh(self, spec: ActionSpec, params: dict[str, str], key: str, stale_before: float) -> None:
        deadline = asyncio.get_running_loop().time() + self._refresh_deadline
        demand = Demand(REFRESH_TENANT, Priority.REFRESH, deadline)
        try:
            if self._replicas is None:
                await self._fill(spec, params, key, demand)
            else:
                try:
                    holder = await self._replicas.leases.acquire(key)
                except LeaseUnavailable:
                    await self._fill(spec, params, key, demand)  # Redis down: this process alone
                    self.counters.refreshes += 1
                    return
                if not holder:  # another replica is filling or refreshing this key
                    self.counters.refreshes_skipped += 1
                    return
                current = await self._lookup_shared(key)
                if current is not None and current.fresh_until > stale_before:
                    await self._replicas.leases.release(key)  # refreshed elsewhere just now
                    self.counters.refreshes_skipped += 1
                    return
                await self._fill_holding_lease(spec, params, key, demand)
            self.counters.refreshes += 1
        except GatewayError as exc:
            self.counters.refresh_failures += 1
            log.info("background refresh failed; the stale entry stays", action=spec.name, code=exc.code)

    async def _lookup_shared(self, key: str) -> Entry | None:
        """The entry every replica sees (Redis, past this replica's L1)."""
        shared = getattr(self.cache, "shared_get", None)
        try:
            return await (shared(key) if shared is not None else self.cache.get(key))
        except CacheError:
            return None

    async def _lookup(self, key: str) -> Entry | None:
        try:
            return await self.cache.get(key)
        except CacheError as exc:
            self.counters.cache_errors += 1
            log.warning("cache lookup failed; treating as a miss", backend=self.cache.name, error=str(exc))
            return None

    async def _store(self, key: str, entry: Entry, ttl: float) -> bool:
        try:
            await self.cache.set(key, entry, ttl)
        except CacheError as exc:
            self.counters.cache_errors += 1
            log.warning("cache store failed; answer not cached", backend=self.cache.name, error=str(exc))
            return False
        return True

    async def _tag(self, spec: ActionSpec, params: Mapping[str, str], key: str, body: bytes,
                   until: float) -> None:
        """Index a stored answer under its purge tags; a failure costs purgeability, never the answer."""
        if self._tags is None:
            return
        try:
            await self._tags.add(key, tags_for(spec.name, params, body), until)
            if link := waba_link(spec.name, params, body):
                await self._tags.link(*link)
        except CacheError as exc:
            self.counters.cache_errors += 1
            log.warning("tag index update failed; the entry cannot be purged by tag", error=str(exc))

    async def _flight(self, spec: ActionSpec, params: dict[str, str], key: str, demand: Demand) -> Fill:
        """This process's one fill for ``key``; with replicas, first agree across them who fills. It runs until
        the longest deadline of the requests waiting on it (``demand`` follows them)."""
        try:
            return await self._flight_for(spec, params, key, demand)
        finally:
            if self._demands.get(key) is demand:
                del self._demands[key]

    async def _flight_for(self, spec: ActionSpec, params: dict[str, str], key: str, demand: Demand) -> Fill:
        refreshing = self._refreshing.get(key)
        if refreshing is not None:  # a background refresh of this key is under way here: use it
            await asyncio.wait({refreshing}, timeout=max(0.0, demand.deadline - asyncio.get_running_loop().time()))
            entry = await self._lookup(key)
            if entry is not None and self.freshness(entry) is Freshness.FRESH:
                return self._shared_fill(entry)
        if self._replicas is None:
            return await self._fill(spec, params, key, demand)
        leases, bus = self._replicas.leases, self._replicas.bus
        loop = asyncio.get_running_loop()
        while True:
            notice = bus.expect(key)  # before looking at the lease: no notice can slip between
            try:
                try:
                    holder = await leases.acquire(key)
                except LeaseUnavailable:
                    return await self._fill(spec, params, key, demand)  # Redis down: this process alone
                if holder:
                    entry = await self._lookup_shared(key)  # filled and released just before we took the lease?
                    if entry is not None and self.freshness(entry) is Freshness.FRESH:
                        await leases.release(key)
                        return self._shared_fill(entry)
                    return await self._fill_holding_lease(spec, params, key, demand)
                entry = await self._lookup_shared(key)  # the holder may have finished just now
                if entry is not None and self.freshness(entry) is Freshness.FRESH:
                    return self._shared_fill(entry)
                wait_until = min(demand.deadline, loop.time() + leases.ttl_s)
                try:
                    async with asyncio.timeout_at(wait_until):
                        got = await asyncio.shield(notice)
                except TimeoutError:
                    if loop.time() >= demand.deadline:
                        raise DeadlineExceeded(f"The request's deadline passed while another replica filled "
                                               f"{spec.name}.") from None
                    continue  # the holder may be gone: try to take the lease over
                if got.kind == "fail":
                    failure = failure_from_notice(got)
                    if failure.code == DeadlineExceeded.code and loop.time() < demand.deadline:
                        continue  # the holder's own deadline passed, not ours: take the lease over
                    raise failure  # answered with this request's own id and Retry-After
                return self._shared_fill(Entry(got.status, got.body, self._wall(),
                                               got.content_type or "application/json;charset=utf-8",
                                               got.fresh_until, got.stale_until))
            finally:
                bus.forget(key, notice)

    def _shared_fill(self, entry: Entry) -> Fill:
        classified = classify(entry.status, entry.body)
        return Fill(entry, classified.outcome, classified.code, 0, 0.0, 0.0, False, shared=True)

    async def _fill_holding_lease(self, spec: ActionSpec, params: dict[str, str], key: str,
                                  demand: Demand) -> Fill:
        assert self._replicas is not None
        leases, bus = self._replicas.leases, self._replicas.bus

        async def renew() -> None:
            while True:
                await asyncio.sleep(leases.ttl_s / 3)
                try:
                    await leases.renew(key)
                except LeaseUnavailable:
                    return

        renewer = asyncio.get_running_loop().create_task(renew())
        try:
            fill = await self._fill(spec, params, key, demand)
        except GatewayError as exc:
            await bus.publish(failure_notice(key, bus.replica_id, exc))
            raise
        finally:
            renewer.cancel()
            await leases.release(key)
        await bus.publish(Notice("fill", key, bus.replica_id, fill.entry.status, fill.entry.body,
                                 fill.entry.content_type, fill.entry.fresh_until, fill.entry.stale_until))
        return fill

    def _tell_replicas_throttled(self, action: str) -> None:
        """Every replica's adaptive rate hears of the throttle. Not awaited: Redis may be slow, and the retry must
        not wait on it; nothing is told while shutting down."""
        assert self._replicas is not None
        bus = self._replicas.bus
        with contextlib.suppress(RuntimeError):
            self._owner.spawn(bus.publish(Notice("throttle", action, bus.replica_id)), name=f"throttle:{action}")

    async def _fill(self, spec: ActionSpec, params: dict[str, str], key: str, demand: Demand) -> Fill:
        queue = self._queues[spec.name]
        loop = asyncio.get_running_loop()
        queued_for = upstream_time = 0.0
        last: UpstreamResponse | None = None
        last_error: UpstreamError | None = None
        attempt = 0
        while attempt < self._attempts:
            attempt += 1
            asked = loop.time()
            try:
                grant = await queue.acquire(demand.deadline, demand=demand)
            except SlotMissed:
                attempt -= 1  # reserved but woken too late for it: nothing sent, ask again
                self.counters.missed_send_windows += 1
                continue
            except GatewayError:
                if last is None and last_error is None:
                    raise
                break  # a retry found no slot in time: answer with what the upstream last said
            except UpstreamError as exc:
                # No connection could be opened before the slot: nothing was sent, no quota spent.
                self.counters.upstream_no_answer += 1
                self.counters.upstream_failures_in_a_row += 1
                self.metrics.count_upstream(spec.name, "no_answer", None)
                last_error = exc
                log.warning("upstream unreachable", action=spec.name, attempt=attempt, error=str(exc))
                continue
            queued_for += grant.granted_at - asked
            self.metrics.observe_wait(spec.name, demand.priority, grant.granted_at - asked)
            connection = grant.take_connection()
            try:
                response = await self._client.call(
                    spec.name, params, version=spec.version, on_sent=grant.sent, send_by=grant.send_by,
                    connection=connection if isinstance(connection, Connection) else None)
            except SendWindowMissed:
                # Not sent, no quota spent: ask for a new slot without using up an attempt.
                attempt -= 1
                self.counters.missed_send_windows += 1
                if queue.coordinator is not None:
                    queue.coordinator.missed()
                continue
            except UpstreamError as exc:
                self.counters.upstream_calls += 1
                self.counters.upstream_no_answer += 1
                self.counters.upstream_failures_in_a_row += 1
                self.metrics.count_upstream(spec.name, "no_answer", None)
                last_error = exc
                log.warning("upstream gave no answer", action=spec.name, attempt=attempt, error=str(exc))
                continue
            finally:
                grant.release()
            self.counters.upstream_calls += 1
            upstream_time += response.elapsed
            queue.observe_upstream_time(response.elapsed)
            classified = classify(response.status, response.body)
            if classified.code == INVALID_ANSWER:  # never passed on, never cached: retried like a fault
                last_error = UpstreamInvalidAnswer(f"HTTP {response.status}, {len(response.body)} bytes, not a JSON "
                                                   "object with Code")
            else:
                last, last_error = response, None
            self.metrics.count_upstream(spec.name, classified.outcome.value, response.elapsed)
            if classified.outcome is Outcome.FAULT:
                self.counters.upstream_failures_in_a_row += 1
            else:
                self.counters.upstream_failures_in_a_row = 0
            self.counters.outcomes[classified.outcome.value] = self.counters.outcomes.get(
                classified.outcome.value, 0) + 1
            if classified.outcome is Outcome.THROTTLED:
                self.counters.upstream_throttled += 1
                queue.throttled()  # widen the margin at once; the adaptive rate may cut
                log.warning("upstream throttled a call", action=spec.name, code=classified.code, attempt=attempt)
                if self._replicas is not None:
                    self._tell_replicas_throttled(spec.name)
            elif classified.outcome is Outcome.FAULT:
                self.counters.upstream_faults += 1
            if classified.outcome.retryable and attempt < self._attempts and loop.time() < demand.deadline:
                continue
            if classified.code == INVALID_ANSWER:
                break
            now = self._wall()
            windows = self.lifetimes.windows(classified.outcome, self._ttl(spec.name), now)
            fresh_until, stale_until = windows or (now, now)
            entry = Entry(response.status, response.body, now,
                          response.content_type or "application/json;charset=utf-8", fresh_until, stale_until)
            stored = False
            if windows is not None:
                stored = await self._store(key, entry, store_seconds(stale_until, now))
                if stored:
                    await self._tag(spec, params, key, entry.body, stale_until)
            return Fill(entry, classified.outcome, classified.code, attempt, queued_for, upstream_time, stored)
        if isinstance(last_error, UpstreamInvalidAnswer):
            log.warning("upstream answer invalid", action=spec.name, error=str(last_error))
            raise UpstreamFailed(f"The upstream's answer to {spec.name} was not a valid CAMS answer "
                                 f"({last_error}); nothing was cached.", code=INVALID_ANSWER, status=502)
        if last is not None:
            classified = classify(last.status, last.body)
            now = self._wall()
            entry = Entry(last.status, last.body, now, last.content_type, now, now)
            return Fill(entry, classified.outcome, classified.code, self._attempts, queued_for, upstream_time, False)
        if isinstance(last_error, UpstreamTimeout):
            raise UpstreamFailed(f"The upstream did not answer {spec.name} in time.", code="Proxy.UpstreamTimeout",
                                 status=504)
        raise UpstreamFailed(f"The upstream could not be reached for {spec.name}.")
