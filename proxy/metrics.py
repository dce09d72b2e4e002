"""Prometheus metrics (prometheus-client), in the ecosystem's conventions.

| metric | type | labels |
| --- | --- | --- |
| ``cams_proxy_requests_total`` | counter | action, cache (HIT, STALE, MISS, COALESCED, ERROR), status, tenant |
| ``cams_proxy_upstream_calls_total`` | counter | action, outcome (an `Outcome` value, or no_answer) |
| ``cams_proxy_upstream_latency_seconds`` | histogram | action |
| ``cams_proxy_queue_wait_seconds`` | histogram | action, priority (interactive, refresh, warm) |
| ``cams_proxy_queue_depth`` | gauge | action, priority |
| ``cams_proxy_budget_cap`` | gauge | action (calls/s) |
| ``cams_proxy_budget_use_ratio`` | gauge | action (grants in the last second / cap) |
| ``cams_proxy_budget_rate`` | gauge | action (the adaptive rate, calls/s, ≤ the cap; min over workers) |
| ``cams_proxy_budget_margin_seconds`` | gauge | (the adaptive spacing margin δ(t); max over workers) |
| ``cams_proxy_budget_shadow_decisions`` | gauge (a count) | action, decision (granted, delayed, refused): shadow mode |
| ``cams_proxy_redis_up`` | gauge | (1 shared, 0 degraded; absent without Redis) |
| ``cams_proxy_l1_entries`` | gauge | (entries in the in-process cache) |
| ``cams_proxy_access_log_dropped_total`` | counter | (access-log lines dropped: the buffer was full) |

Tenant labels are bounded: the tenants of the tenants file, ``anonymous``, else ``other``. No label ever
holds a secret (labels are actions, outcomes, statuses and configured tenant names).

Under ``--workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` for its workers and `/metrics`
answers from prometheus-client's multi-process collector, so any worker's scrape covers all of them.
Gauges are refreshed by each process once a second (`Metrics.sample`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.admission.fair import Priority

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OTHER: Final = "other"
WAIT_BUCKETS: Final = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self, tenants: Collection[str] = (), registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._tenants = frozenset(tenants) | {"anonymous"}
        r = self.registry
        self.requests = Counter("cams_proxy_requests", "Gateway answers", ["action", "cache", "status", "tenant"],
                                registry=r)
        self.upstream_calls = Counter("cams_proxy_upstream_calls", "Upstream calls by outcome",
                                      ["action", "outcome"], registry=r)
        self.access_log_dropped = Counter("cams_proxy_access_log_dropped", "Access-log lines dropped because the "
                                          "buffer was full (the log sink slower than the traffic)", registry=r)
        self._access_log_dropped_seen = 0
        self.upstream_latency = Histogram("cams_proxy_upstream_latency_seconds", "Upstream answer time",
                                          ["action"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("cams_proxy_queue_wait_seconds", "Time a miss waited for an upstream slot",
                                    ["action", "priority"], buckets=WAIT_BUCKETS, registry=r)
        self.queue_depth = Gauge("cams_proxy_queue_depth", "Calls waiting for an upstream slot",
                                 ["action", "priority"], registry=r, multiprocess_mode="livesum")
        self.budget_cap = Gauge("cams_proxy_budget_cap", "Upstream cap, calls per second", ["action"],
                                registry=r, multiprocess_mode="max")
        self.budget_use = Gauge("cams_proxy_budget_use_ratio", "Upstream grants in the last second over the cap",
                                ["action"], registry=r, multiprocess_mode="livesum")
        self.budget_shadow = Gauge("cams_proxy_budget_shadow_decisions", "Shadow mode: what enforcing would have done",
                                   ["action", "decision"], registry=r, multiprocess_mode="livesum")
        self.budget_rate = Gauge("cams_proxy_budget_rate", "Adaptive rate grants are spaced by, calls per second",
                                 ["action"], registry=r, multiprocess_mode="livemin")
        self.budget_margin = Gauge("cams_proxy_budget_margin_seconds", "Adaptive spacing margin delta(t)",
                                   registry=r, multiprocess_mode="max")
        self.redis_up = Gauge("cams_proxy_redis_up", "1: Redis and the shared budget in use; 0: degraded",
                              registry=r, multiprocess_mode="livemin")
        self.l1_entries = Gauge("cams_proxy_l1_entries", "Entries in the in-process cache", registry=r,
                                multiprocess_mode="livesum")
        #: Answers counted since the last flush into ``requests`` (plain ints on the hot path; flushed by
        #: `sample`, which runs every second and before each scrape).
        self._pending_requests: dict[tuple[str, str, int, str], int] = {}

    def tenant(self, name: str) -> str:
        """The label for a tenant: configured ones by name, every other one as ``other`` (bounded)."""
        return name if name in self._tenants else OTHER

    def count_request(self, action: str, cache: str, status: int, tenant: str) -> None:
        """One answered call. This runs on every hit, so it only bumps a plain dict entry; `flush_requests`
        moves the counts into the Prometheus counter."""
        key = (action, cache, status, tenant)
        pending = self._pending_requests
        pending[key] = pending.get(key, 0) + 1

    def flush_requests(self) -> None:
        pending, self._pending_requests = self._pending_requests, {}
        for (action, cache, status, tenant), count in pending.items():
            self.requests.labels(action, cache, str(status), self.tenant(tenant)).inc(count)

    def requests_by_tenant(self) -> dict[str, dict[str, int]]:
        """This process's answers per tenant label and cache outcome (for the status view)."""
        self.flush_requests()
        found: dict[str, dict[str, int]] = {}
        for family in self.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    by_cache = found.setdefault(sample.labels["tenant"], {})
                    cache = sample.labels["cache"]
                    by_cache[cache] = by_cache.get(cache, 0) + int(sample.value)
        return found

    def count_upstream(self, action: str, outcome: str, seconds: float | None) -> None:
        self.upstream_calls.labels(action, outcome).inc()
        if seconds is not None:
            self.upstream_latency.labels(action).observe(seconds)

    def observe_wait(self, action: str, priority: Priority, seconds: float) -> None:
        self.queue_wait.labels(action, priority.name.lower()).observe(seconds)

    def count_access_log_dropped(self, total: int) -> None:
        """Bring the drop counter up to the access log's running ``total``."""
        if total > self._access_log_dropped_seen:
            self.access_log_dropped.inc(total - self._access_log_dropped_seen)
            self._access_log_dropped_seen = total

    def sample(self, depths: Mapping[str, Mapping[Priority, int]], use: Mapping[str, float], l1: int | None,
               redis_up: bool | None, shadow: Mapping[str, Mapping[str, int]] | None = None) -> None:
        """Refresh this process's gauges and flush its request counts (called once a second and before each
        scrape)."""
        self.flush_requests()
        for action, decisions in (shadow or {}).items():
            for decision, count in decisions.items():
                self.budget_shadow.labels(action, decision).set(count)
        for action, by_priority in depths.items():
            for priority in Priority:
                self.queue_depth.labels(action, priority.name.lower()).set(by_priority.get(priority, 0))
        for action, ratio in use.items():
            self.budget_use.labels(action).set(ratio)
        if l1 is not None:
            self.l1_entries.set(l1)
        if redis_up is not None:
            self.redis_up.set(1 if redis_up else 0)

    def exposition(self) -> bytes:
        """The text format of every metric (of every worker, under multi-process mode)."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
