"""The running gateway as one object: every resource `open_gateway` opened, and the one account of its state.

`Gateway.status` is the status document (``/admin/status``); `Gateway.readiness` (``/readyz``) and
`Gateway.sample_metrics` (the gauges, every second and on each scrape) read the same parts through the same
functions (`queue_status`, `memory_document`), so the three never disagree about a queue, a margin or Redis.

What only the HTTP layer knows (its edge counters, the call handler's side caches) is passed in as plain
mappings: this module never imports the web layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from proxy.access_log import AccessLog
from proxy.actions import ACTIONS
from proxy.admission.queue import UpstreamQueue
from proxy.bounded import MemoryShares
from proxy.cache import Cache, CacheError, MemoryCache
from proxy.cache.redis import RedisCache
from proxy.cache.tagindex import MemoryTagIndex
from proxy.cache.tiered import TieredCache
from proxy.credentials import CredentialSource
from proxy.gateway.replicas import ReplicaKit
from proxy.logs import get_logger
from proxy.metrics import Metrics
from proxy.purge import Purger
from proxy.readthrough import ReadThrough
from proxy.settings import GatewaySettings
from proxy.tasks import TaskOwner
from proxy.tenants import TenantDirectory, TenantResolver, TenantsFileWatcher

log = get_logger("proxy.gateway")
#: Consecutive upstream failures after which /readyz says the upstream is failing.
UPSTREAM_FAILING_AFTER: Final = 3
#: The key /readyz reads when there is no Redis: a broken memory cache makes the replica unavailable.
READY_PROBE_KEY: Final = "k1:readyz:probe"


def in_process_cache(cache: Cache) -> MemoryCache | None:
    """The process's own cache tier: the L1 of a tiered cache, the memory cache itself, or None (Redis only)."""
    if isinstance(cache, TieredCache):
        return cache.l1
    return cache if isinstance(cache, MemoryCache) else None


def queue_status(queue: UpstreamQueue, now: float, monotonic: float) -> dict[str, Any]:
    """One action's queue as every view reports it (``now`` loop time, ``monotonic`` for the margin)."""
    stats = queue.stats
    row: dict[str, Any] = {
        "waiting": queue.waiting, "granted": stats.granted, "cap": queue.rate, "rate": round(queue.current_rate(), 3),
        "use": round(queue.use(now), 3),
        "depth": {priority.name.lower(): n for priority, n in queue.depths().items()},
        "refused": stats.refused_full + stats.refused_deadline + stats.refused_late,
        "mode": "shadow" if queue.shadow else "enforce", "interval_s": round(queue.interval, 4),
        "max_send_delay_ms": round(stats.max_send_delay * 1000, 2),
        "margin_ms": round(queue.margin.value(monotonic) * 1000, 3),
        "adaptive_rate": queue.adaptive_rate.status(monotonic)}
    if queue.shadow:
        row["shadow"] = dict(stats.shadow)
    return row


@dataclass(frozen=True)
class Readiness:
    """``/readyz``: ``ready``, ``degraded`` (200, with reasons: still worth routing to) or ``unavailable`` (503)."""

    status: str
    http_status: int
    body: dict[str, Any]


@dataclass
class Gateway:
    """Everything one gateway process runs, opened together by `proxy.gateway.open_gateway`."""

    settings: GatewaySettings
    credentials: CredentialSource
    tasks: TaskOwner
    readthrough: ReadThrough
    queues: dict[str, UpstreamQueue]
    purger: Purger
    directory: TenantDirectory
    tenants: TenantResolver
    metrics: Metrics
    memory_shares: MemoryShares
    replicas: ReplicaKit | None
    access_log: AccessLog | None
    tenants_watch: TenantsFileWatcher | None
    #: The call handler's side caches in bytes (hit headers, call memo): set by the web layer once bound.
    side_caches: Callable[[], Mapping[str, int]] = dict

    @property
    def cache(self) -> Cache:
        return self.readthrough.cache

    def memory_document(self) -> dict[str, Any]:
        """What each cache of the process counts against ``--memory-max-bytes``: used and allowed, in bytes."""
        shares = self.memory_shares
        cache = self.cache
        memory = in_process_cache(cache)
        used: dict[str, int] = {"cache": memory.bytes_used if memory is not None else 0,
                                "hit_headers": 0, "call_memo": 0, **self.side_caches(), "decoded": 0, "tag_index": 0}
        l2 = cache.l2 if isinstance(cache, TieredCache) else cache
        if isinstance(l2, RedisCache):
            used["decoded"] = l2.decoded_bytes
        if isinstance(self.purger.index, MemoryTagIndex):
            used["tag_index"] = self.purger.index.bytes_used
        allowed = {"cache": shares.cache, "hit_headers": shares.hit_headers, "call_memo": shares.call_memo,
                   "decoded": shares.decoded, "tag_index": shares.tag_index}
        return {"max_bytes": self.settings.memory_max_bytes, "used_bytes": sum(used.values()),
                "caches": {name: {"used_bytes": used[name], "max_bytes": allowed[name]} for name in used}}

    def _queues_now(self) -> dict[str, dict[str, Any]]:
        now, monotonic = asyncio.get_running_loop().time(), time.monotonic()
        return {name: queue_status(queue, now, monotonic) for name, queue in self.queues.items()}

    def _cache_tiers(self) -> dict[str, Any]:
        cache = self.cache
        tiers: dict[str, Any] = {"backend": cache.name}
        if isinstance(cache, TieredCache):
            tiers.update(l1_entries=len(cache.l1), l1_hits=cache.l1_hits, l2_hits=cache.l2_hits,
                         invalidations=cache.invalidations)
        elif (memory := in_process_cache(cache)) is not None:
            tiers["entries"] = len(memory)
        return tiers

    def _redis_status(self) -> dict[str, Any] | None:
        kit = self.replicas
        if kit is None:
            return None
        return {**kit.coordinator.status(), "pubsub_connected": kit.bus.connected.is_set(),
                "notices_received": kit.bus.received}

    def status(self, edge: Mapping[str, Any]) -> dict[str, Any]:
        """The status document: flow counters, cache tiers, queues, tenants, the edge (``edge``: the HTTP
        layer's counters), nonces, memory, the access log, the margin and the Redis mode."""
        readthrough = self.readthrough
        document: dict[str, Any] = {
            "counters": dataclasses.asdict(readthrough.counters),
            "cache": self._cache_tiers(),
            "queues": self._queues_now(),
            "tenants": readthrough.metrics.requests_by_tenant(),
            "actions": sorted(ACTIONS),
            "edge": dict(edge),
            "nonces": self.tenants.nonces.status(),
            "memory": self.memory_document(),
        }
        if self.access_log is not None:  # lines written, dropped (buffer full) and waiting for the next batch
            document["access_log"] = self.access_log.status()
        for queue in self.queues.values():  # one adaptive margin per process, shared by its queues
            document["margin"] = queue.margin.status(time.monotonic())
            break
        if (redis := self._redis_status()) is not None:
            document["replica"] = self.replicas.replica_id if self.replicas else None
            document["redis"] = redis
        return document

    def degraded_reasons(self) -> list[str]:
        """Why this replica is degraded (empty: it is not): throttled below the cap, the upstream failing, a
        tenants file not reloaded, a background task dead, Redis unreachable."""
        reasons = []
        for name, queue in self.queues.items():
            if queue.current_rate() < queue.rate:
                reasons.append(f"upstream throttling below the cap: {name} at {queue.current_rate():.2f}/s of "
                               f"{queue.rate}/s (someone else spends the account; {queue.adaptive_rate.why})")
        failing = self.readthrough.counters.upstream_failures_in_a_row
        if failing >= UPSTREAM_FAILING_AFTER:
            reasons.append(f"upstream failing: the last {failing} calls got no answer or a 5xx")
        watch = self.tenants_watch
        if watch is not None and watch.last_error:
            reasons.append(f"tenants file {watch.path} not reloaded ({watch.last_error}); the tenants loaded "
                           "before are in force")
        reasons += [f"background task {name} died ({why}); restart this replica"
                    for name, why in sorted(self.tasks.died.items())]
        if self.replicas is not None and not self.replicas.breaker.healthy:
            reasons.append("redis unreachable: serving from L1 and the local share of the cap")
        return reasons

    async def readiness(self) -> Readiness:
        """``ready``; ``degraded`` (200: hits and stale entries flow) with `degraded_reasons`; or ``unavailable``
        (503: the memory cache is broken; with Redis, an unreachable Redis only degrades)."""
        counters = self.readthrough.counters
        body: dict[str, Any] = {"status": "ready", "cache": self.cache.name, "queues": self._queues_now(),
                                "upstream": {"failures_in_a_row": counters.upstream_failures_in_a_row,
                                             "calls": counters.upstream_calls}}
        if (redis := self._redis_status()) is not None and self.replicas is not None:
            body["replica"] = self.replicas.replica_id
            body["redis"] = redis
        if reasons := self.degraded_reasons():
            body.update(status="degraded", reasons=reasons)
        http_status = 200
        if self.replicas is None:
            try:
                await self.cache.get(READY_PROBE_KEY)
            except CacheError as exc:
                body.update(status="unavailable", error=str(exc))
                http_status = 503
        return Readiness(body["status"], http_status, body)

    def sample_metrics(self) -> None:
        """Refresh this process's gauges: queue depths, budget use, margin and rate, L1 size, Redis state, the
        access log's drops."""
        now = asyncio.get_running_loop().time()
        queues = self.queues
        l1 = in_process_cache(self.cache)
        kit = self.replicas
        self.metrics.sample({name: q.depths() for name, q in queues.items()},
                            {name: q.use(now) for name, q in queues.items()},
                            len(l1) if l1 is not None else None,
                            kit.breaker.healthy if kit is not None else None,
                            {name: q.stats.shadow for name, q in queues.items() if q.shadow})
        for queue in queues.values():  # one margin per process, shared by its queues
            self.metrics.budget_margin.set(queue.margin.value(time.monotonic()))
            break
        for name, queue in queues.items():
            self.metrics.budget_rate.labels(name).set(queue.current_rate())
        if self.access_log is not None:
            self.metrics.count_access_log_dropped(self.access_log.dropped)

    async def sample_metrics_every_second(self) -> None:
        while True:
            self.sample_metrics()
            await asyncio.sleep(1.0)
