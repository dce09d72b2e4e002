"""One fill of one key: the attempt loop through the action's queue to the upstream, its classification, and
the store (with the purge tags) of what is cacheable.

Per attempt: a slot from the action's queue (at the flight's priority and tenant: `proxy.admission.fair`), then
one signed upstream call, then the outcome table (`proxy.upstream.errors`, `proxy.freshness.RULES`): successes
are stored for the action's TTL, not-found and denied answers for the negative TTL; THROTTLED and FAULT (and no
answer at all, and an answer that is not a CAMS answer) are retried through the queue while attempts and the
deadline allow; nothing else is stored.

Guarantees: a slot that was reserved but not used (woken too late, or no connection in time) costs no attempt and
no quota; an invalid answer is never passed on nor cached; a cache or tag-index failure costs the store or the
purgeability, never the answer. Non-guarantee: the answer is the upstream's last one when every attempt was
throttled or failed (the caller may serve a stale entry instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from proxy.actions import ActionSpec
from proxy.admission.coordinator import SlotMissed
from proxy.admission.queue import Demand, UpstreamQueue
from proxy.cache.base import Cache, CacheError, Entry
from proxy.cache.tagindex import TagIndex
from proxy.errors import GatewayError, UpstreamFailed
from proxy.freshness import Lifetimes, store_seconds
from proxy.logs import get_logger
from proxy.metrics import Metrics
from proxy.tags import tags_for, waba_link
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

log = get_logger("proxy.readthrough")
JSON_TYPE = "application/json;charset=utf-8"


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
    #: Filled by another replica (this one waited on its lease), or by a refresh that ran meanwhile.
    shared: bool = False


def shared_fill(entry: Entry) -> Fill:
    """The `Fill` of an entry someone else filled (no attempt, no wait, not stored by this process)."""
    classified = classify(entry.status, entry.body)
    return Fill(entry, classified.outcome, classified.code, 0, 0.0, 0.0, False, shared=True)


@dataclass
class Counters:
    """Plain counts of what the read-through flow did (``/admin/status``; ``/readyz`` reads the failures)."""

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


class Filler:
    """Runs fills (`fill`) and owns the cache writes they make."""

    def __init__(self, *, cache: Cache, client: UpstreamClient, queues: Mapping[str, UpstreamQueue],
                 ttl: Callable[[str], float], attempts: int, lifetimes: Lifetimes, wall: Callable[[], float],
                 counters: Counters, metrics: Metrics, tags: TagIndex | None,
                 on_throttled: Callable[[str], None]) -> None:
        self.cache = cache
        self._client = client
        self._queues = queues
        self._ttl = ttl
        self._attempts = attempts
        self._lifetimes = lifetimes
        self._wall = wall
        self._counters = counters
        self._metrics = metrics
        self._tags = tags
        self._on_throttled = on_throttled

    async def fill(self, spec: ActionSpec, params: dict[str, str], key: str, demand: Demand) -> Fill:
        """Fill ``key`` (see the module docstring); raises `GatewayError` when there is no answer to give."""
        queue = self._queues[spec.name]
        counters, metrics = self._counters, self._metrics
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
                counters.missed_send_windows += 1
                continue
            except GatewayError:
                if last is None and last_error is None:
                    raise
                break  # a retry found no slot in time: answer with what the upstream last said
            except UpstreamError as exc:
                # No connection could be opened before the slot: nothing was sent, no quota spent.
                self._no_answer(spec.name, exc)
                last_error = exc
                log.warning("upstream unreachable", action=spec.name, attempt=attempt, error=str(exc))
                continue
            queued_for += grant.granted_at - asked
            metrics.observe_wait(spec.name, demand.priority, grant.granted_at - asked)
            connection = grant.take_connection()
            try:
                response = await self._client.call(
                    spec.name, params, version=spec.version, on_sent=grant.sent, send_by=grant.send_by,
                    connection=connection if isinstance(connection, Connection) else None)
            except SendWindowMissed:
                # Not sent, no quota spent: ask for a new slot without using up an attempt.
                attempt -= 1
                counters.missed_send_windows += 1
                if queue.coordinator is not None:
                    queue.coordinator.missed()
                continue
            except UpstreamError as exc:
                counters.upstream_calls += 1
                self._no_answer(spec.name, exc)
                last_error = exc
                log.warning("upstream gave no answer", action=spec.name, attempt=attempt, error=str(exc))
                continue
            finally:
                grant.release()
            counters.upstream_calls += 1
            upstream_time += response.elapsed
            queue.observe_upstream_time(response.elapsed)
            outcome, code = self._classified(spec.name, queue, response, attempt)
            if code == INVALID_ANSWER:  # never passed on, never cached: retried like a fault
                last_error = UpstreamInvalidAnswer(f"HTTP {response.status}, {len(response.body)} bytes, not a JSON "
                                                   "object with Code")
            else:
                last, last_error = response, None
            if outcome.retryable and attempt < self._attempts and loop.time() < demand.deadline:
                continue
            if code == INVALID_ANSWER:
                break
            entry, stored = await self._keep(spec, params, key, response, outcome)
            return Fill(entry, outcome, code, attempt, queued_for, upstream_time, stored)
        return self._last_word(spec.name, last, last_error, queued_for, upstream_time)

    def _no_answer(self, action: str, exc: UpstreamError) -> None:
        self._counters.upstream_no_answer += 1
        self._counters.upstream_failures_in_a_row += 1
        self._metrics.count_upstream(action, "no_answer", None)

    def _classified(self, action: str, queue: UpstreamQueue, response: UpstreamResponse,
                    attempt: int) -> tuple[Outcome, str]:
        """Classify an answer and count it; a throttle widens the margin at once and is told to every replica."""
        counters = self._counters
        classified = classify(response.status, response.body)
        outcome = classified.outcome
        self._metrics.count_upstream(action, outcome.value, response.elapsed)
        counters.upstream_failures_in_a_row = counters.upstream_failures_in_a_row + 1 if outcome is Outcome.FAULT \
            else 0
        counters.outcomes[outcome.value] = counters.outcomes.get(outcome.value, 0) + 1
        if outcome is Outcome.THROTTLED:
            counters.upstream_throttled += 1
            queue.throttled()  # widen the margin at once; the adaptive rate may cut
            log.warning("upstream throttled a call", action=action, code=classified.code, attempt=attempt)
            self._on_throttled(action)
        elif outcome is Outcome.FAULT:
            counters.upstream_faults += 1
        return outcome, classified.code

    async def _keep(self, spec: ActionSpec, params: Mapping[str, str], key: str, response: UpstreamResponse,
                    outcome: Outcome) -> tuple[Entry, bool]:
        """The entry of an answer, stored (and tagged) when its outcome is cacheable; whether it was stored."""
        now = self._wall()
        windows = self._lifetimes.windows(outcome, self._ttl(spec.name), now)
        fresh_until, stale_until = windows or (now, now)
        entry = Entry(response.status, response.body, now, response.content_type or JSON_TYPE, fresh_until,
                      stale_until)
        if windows is None:
            return entry, False
        stored = await self._store(key, entry, store_seconds(stale_until, now))
        if stored:
            await self._tag(spec, params, key, entry.body, stale_until)
        return entry, stored

    def _last_word(self, action: str, last: UpstreamResponse | None, last_error: UpstreamError | None,
                   queued_for: float, upstream_time: float) -> Fill:
        """Attempts or time ran out: the upstream's last real answer (not stored), else the error."""
        if isinstance(last_error, UpstreamInvalidAnswer):
            log.warning("upstream answer invalid", action=action, error=str(last_error))
            raise UpstreamFailed(f"The upstream's answer to {action} was not a valid CAMS answer "
                                 f"({last_error}); nothing was cached.", code=INVALID_ANSWER, status=502)
        if last is not None:
            classified = classify(last.status, last.body)
            now = self._wall()
            entry = Entry(last.status, last.body, now, last.content_type, now, now)
            return Fill(entry, classified.outcome, classified.code, self._attempts, queued_for, upstream_time, False)
        if isinstance(last_error, UpstreamTimeout):
            raise UpstreamFailed(f"The upstream did not answer {action} in time.", code="Proxy.UpstreamTimeout",
                                 status=504)
        raise UpstreamFailed(f"The upstream could not be reached for {action}.")

    async def _store(self, key: str, entry: Entry, ttl: float) -> bool:
        try:
            await self.cache.set(key, entry, ttl)
        except CacheError as exc:
            self._counters.cache_errors += 1
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
            self._counters.cache_errors += 1
            log.warning("tag index update failed; the entry cannot be purged by tag", error=str(exc))
