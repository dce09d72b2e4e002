"""The read-through flow, in one readable place: look up, coalesce, fill (through the flights seam), fall back.

    lookup       the cache; a fresh entry is a HIT (no queue, no upstream); a stale one (within
                 stale-while-revalidate) is answered at once as STALE and starts ONE background
                 refresh (`proxy.revalidation`; one per key across replicas through the flights seam);
                 an older one is kept as the stale-if-error fallback and the request goes on as a miss
    coalesce     a miss joins this process's flight for its key, or starts it (MISS for the leader,
                 COALESCED for the others); everyone waits with their own deadline; the flight runs
                 until the longest of them
    fill         the flight asks the flights seam (`proxy.flights`) who fills: this process
                 (`proxy.fill.Filler`: queue, upstream, classification, store) or another replica
    fallback     when the miss fails (throttled, 5xx, no answer, queue refusal, deadline) and a
                 stale entry is still within the maximum staleness, that entry is the answer

The answer is always the upstream's status and body bytes, untouched. A cache backend error never
fails a request: the lookup counts as a miss and the store is skipped (both logged).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from proxy.actions import ActionSpec
from proxy.admission.fair import Priority
from proxy.admission.queue import Demand, UpstreamQueue
from proxy.answer import FAILED, Answer, CacheStatus
from proxy.cache.base import Cache, CacheError, Entry
from proxy.cache.tagindex import TagIndex
from proxy.coalesce import SingleFlight
from proxy.errors import DeadlineExceeded, DeadlineTooShort, GatewayError
from proxy.fill import Counters, Fill, Filler, shared_fill
from proxy.flights import Flights, LocalFlights
from proxy.freshness import Freshness, Lifetimes
from proxy.keys import cache_key
from proxy.logs import get_logger
from proxy.metrics import Metrics
from proxy.revalidation import Revalidator
from proxy.tasks import TaskOwner
from proxy.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from proxy.refresh import RefreshAhead

log = get_logger("proxy.readthrough")


class ReadThrough:
    """The flow (see the module docstring). ``flights``: who fills a key (`LocalFlights` without Redis,
    `proxy.replica.flight.LeasedFlights` with it)."""

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
        flights: Flights | None = None,
        tags: TagIndex | None = None,
        lifetimes: Lifetimes | None = None,
        refresh_deadline_s: float = 30.0,
        max_refreshes: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self.cache = cache
        self._queues = queues
        self._access_key_id = access_key_id
        self._local: SingleFlight[Fill] = SingleFlight(owner)
        self._demands: dict[str, Demand] = {}
        self._wall = wall_clock
        self.lifetimes = lifetimes or Lifetimes()
        self.metrics = metrics or Metrics()
        self.counters = Counters()
        self._flights: Flights = flights or LocalFlights()
        self.filler = Filler(cache=cache, client=client, queues=queues, ttl=ttl, attempts=attempts,
                             lifetimes=self.lifetimes, wall=wall_clock, counters=self.counters, metrics=self.metrics,
                             tags=tags, on_throttled=self._flights.throttled)
        self._revalidator = Revalidator(fill=self.filler.fill, flights=self._flights, owner=owner,
                                        counters=self.counters, deadline_s=refresh_deadline_s,
                                        max_refreshes=max_refreshes)
        #: Set by the composition root when refresh-ahead is on (`proxy.refresh`).
        self.refresh_ahead: RefreshAhead | None = None
        self._endpoint = str(client.endpoint)

    def access_key_id(self) -> str:
        return self._access_key_id()

    def key_for(self, spec: ActionSpec, params: Mapping[str, str]) -> str:
        return cache_key(endpoint=self._endpoint, access_key_id=self._access_key_id(),
                         action=spec.name, version=spec.version, params=params)

    def in_flight(self, key: str) -> bool:
        """Whether a fill of ``key`` is under way in this process (a request joining now is coalesced onto it)."""
        return self._local.has(key)

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
        if not self._local.has(key) and self._revalidator.running(key) is None:
            try:
                self._check_deadline(spec.name, deadline, budget_s, asked)
            except DeadlineTooShort as exc:
                self.counters.deadline_too_short += 1
                return self._stale_or_raise(fallback, exc, exc)
        flight, leader = self._local.join(
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
        self.note_hit(key, spec, params, entry)

    def note_hit(self, key: str, spec: ActionSpec, params: Mapping[str, str], entry: Entry) -> None:
        """A fresh hit: plan this key's refresh-ahead (successes only; negative answers just expire)."""
        if self.refresh_ahead is not None and 200 <= entry.status < 300:
            self.refresh_ahead.note_hit(key, spec, params, entry.fetched_at, entry.fresh_until)

    def revalidate(self, spec: ActionSpec, params: Mapping[str, str], key: str,
                   stale_before: float) -> asyncio.Task[None] | None:
        """Start one background refresh of ``key`` (an entry fresh until ``stale_before``) unless one (or a
        miss) is already under way here (`proxy.revalidation`). None when skipped."""
        if self._local.has(key):
            return None
        return self._revalidator.start(spec, params, key, stale_before)

    async def _lookup(self, key: str) -> Entry | None:
        try:
            return await self.cache.get(key)
        except CacheError as exc:
            self.counters.cache_errors += 1
            log.warning("cache lookup failed; treating as a miss", backend=self.cache.name, error=str(exc))
            return None

    async def _flight(self, spec: ActionSpec, params: dict[str, str], key: str, demand: Demand) -> Fill:
        """This process's one fill for ``key``, run until the longest deadline of the requests waiting on it
        (``demand`` follows them): a refresh of it under way here is used first, then the flights seam decides
        who fills."""
        try:
            refreshing = self._revalidator.running(key)
            if refreshing is not None:
                await asyncio.wait({refreshing},
                                   timeout=max(0.0, demand.deadline - asyncio.get_running_loop().time()))
                entry = await self._lookup(key)
                if entry is not None and self.freshness(entry) is Freshness.FRESH:
                    return shared_fill(entry)
            return await self._flights.fill(key, lambda: self.filler.fill(spec, params, key, demand),
                                            demand.deadline, spec.name)
        finally:
            if self._demands.get(key) is demand:
                del self._demands[key]
