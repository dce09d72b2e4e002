"""The gateway application: `create_app(settings)`, its resources, routes and middleware.

Resources (upstream session, cache backend, queues, owned fill tasks) are opened and closed in one
cleanup context. Routes:

| route | what |
| --- | --- |
| ``GET|POST /`` | a CAMS RPC call, exactly as the SDK sends it (``x-acs-action``) or with ``Action`` |
| ``GET|POST /v1/{Action}`` | the same for curl users |
| ``GET /healthz`` | liveness |
| ``GET /readyz`` | readiness: the cache backend answers |
| anything else | 404 ``InvalidAction.NotFound`` in the upstream shape |

Limits (documented in the README): request line and each header at most `MAX_LINE_BYTES`, body at
most `MAX_BODY_BYTES`; over them, a JSON 4xx in the upstream's shape.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web
from multidict import istr

from proxy.access_log import AccessLog
from proxy.actions import ACTIONS, ActionSpec
from proxy.admission.host import HostBudget
from proxy.admission.margin import AdaptiveMargin
from proxy.admission.queue import UpstreamQueue
from proxy.bounded import BoundedMap, MemoryShares, memory_shares
from proxy.cache import Cache, CacheError, Entry, MemoryCache
from proxy.cache.redis import RedisCache
from proxy.cache.tagindex import MemoryTagIndex, RedisTagIndex, TagIndex
from proxy.cache.tiered import TieredCache
from proxy.credentials import ChainSource, CredentialSource, StaticSource
from proxy.errors import GatewayError, RequestRejected
from proxy.logs import get_logger
from proxy.metrics import CONTENT_TYPE, Metrics
from proxy.nonces import MemoryNonces, SharedNonces
from proxy.purge import Purger
from proxy.readthrough import Answer, ReadThrough
from proxy.refresh import RefreshAhead, RefreshPlan, RefreshPolicy
from proxy.replicas import ReplicaKit
from proxy.settings import GatewaySettings
from proxy.signing import DEFAULT_MAX_SKEW
from proxy.tasks import TaskOwner
from proxy.tenants import (
    ANONYMOUS,
    TenantDirectory,
    TenantResolver,
    TenantsFileWatcher,
    header_label,
    query_label,
)
from proxy.upstream.client import UpstreamClient
from proxy.web.admin import PURGER, AdminRoutes
from proxy.web.calls import deadline_asked, parse_call, priority_of
from proxy.web.calls import deadline_seconds as request_deadline
from proxy.web.headers import (
    RATE_LIMIT_REUSE_S,
    REQUEST_ID,
    HitHeaders,
    age,
    cache_status,
    rate_limit,
    rate_limit_policy,
)
from proxy.web.rendering import error_response, new_request_id, request_id_for
from proxy.web.server import EdgeLimits, EdgeStats, runner_for

MAX_LINE_BYTES: Final = 8190
MAX_BODY_BYTES: Final = 64 * 1024

SETTINGS: Final = web.AppKey("settings", GatewaySettings)
READTHROUGH: Final = web.AppKey("readthrough", ReadThrough)
TENANTS: Final = web.AppKey("tenants", TenantResolver)
QUEUES: Final = web.AppKey("queues", dict[str, UpstreamQueue])
DIRECTORY: Final = web.AppKey("directory", TenantDirectory)
REPLICA_KIT: Final[web.AppKey[ReplicaKit | None]] = web.AppKey("replica_kit")
METRICS: Final = web.AppKey("metrics", Metrics)
CREDENTIALS: Final = web.AppKey("credentials", CredentialSource)
EDGE_STATS: Final = web.AppKey("edge_stats", EdgeStats)
TASKS: Final = web.AppKey("tasks", TaskOwner)
TENANTS_WATCH: Final = web.AppKey("tenants_watch", TenantsFileWatcher)
MEMORY_SHARES: Final = web.AppKey("memory_shares", MemoryShares)
ACCESS_LOG: Final[web.AppKey[AccessLog | None]] = web.AppKey("access_log")


@dataclass
class OpsPort:
    """Where ``/metrics``, ``/admin/*`` and the details of ``/readyz`` are served (``--ops-port``).

    ``port`` None: on every port (the API port included, the default). Otherwise only a request that arrived on a
    socket bound to ``port`` gets them; on any other port ``/metrics`` and ``/admin/*`` are 404 in the upstream
    shape and ``/readyz`` answers its status (and status code) without the body's details. ``/healthz``, the API
    and the audit callback (CAMS calls it from outside) stay on the API port."""

    port: int | None = None

    def serves(self, request: web.Request) -> bool:
        if self.port is None:
            return True
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return isinstance(sockname, tuple) and len(sockname) >= 2 and sockname[1] == self.port


OPS_PORT: Final = web.AppKey("ops_port", OpsPort)


def ops_only(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` on the ops port, the catch-all 404 elsewhere (see `OpsPort`)."""
    async def on_ops_port(request: web.Request) -> web.StreamResponse:
        if not request.app[OPS_PORT].serves(request):
            return await not_found(request)
        return await handler(request)

    return on_ops_port

log = get_logger("proxy.access")


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    static = settings.static_credentials()
    source: CredentialSource
    if static is not None:
        source = StaticSource(static)
    else:
        source = ChainSource()
        await source.start()  # raises CredentialsUnavailable, reported as one line by the CLI
    account = settings.account or source.current().access_key_id
    if static is None and settings.account is None:
        log.warning("keys from the default credential chain and no PROXY_ACCOUNT: the budget and the cache are "
                    "keyed on the AccessKey id at start-up; set PROXY_ACCOUNT so replicas share one budget across "
                    "a key rotation", account=account)
    app[CREDENTIALS] = source
    owner = TaskOwner("fills")
    app[TASKS] = owner
    owner.spawn(source.run(), name="credentials", long_running=not isinstance(source, StaticSource))
    margin = settings.spacing_margin_ms / 1000.0
    # δ(t): one per process, measured on the upstream path, floor --spacing-margin-ms, the ceiling until measured
    adaptive = AdaptiveMargin(margin, learning=True)
    shares = app[MEMORY_SHARES]  # --memory-max-bytes, split between the cache and the side caches
    memory = MemoryCache(max_entries=settings.memory_max_entries, max_bytes=shares.cache)
    kit: ReplicaKit | None = None
    cache: Cache = memory
    if settings.redis_url:
        kit = ReplicaKit.build(settings.redis_url, account, margin=adaptive,
                               redis_timeout_s=settings.redis_timeout_s, l1=memory,
                               caps={name: settings.local_cap(name) for name in ACTIONS},
                               l1_max_ttl_s=settings.l1_max_ttl_s, lease_ttl_s=settings.lease_ttl_s,
                               budget_lease_s=settings.budget_lease_s,
                               cluster=settings.redis_cluster, decoded_bytes=shares.decoded)
        cache = kit.cache
        await kit.start(owner)
    app[REPLICA_KIT] = kit
    host = None if kit else HostBudget.for_worker(settings.workers, adaptive, os.environ)  # --workers, no Redis
    if host is not None:
        owner.spawn(host.run(), name="host-budget", long_running=True)
    client = UpstreamClient(settings.upstream, source.current, timeout=settings.upstream_timeout_s,
                            connect_timeout=settings.upstream_connect_timeout_s,
                            keepalive_s=settings.upstream_keepalive_s, ca_file=settings.upstream_ca_file,
                            max_answer_bytes=settings.upstream_max_answer_bytes)
    queues = {
        name: UpstreamQueue(name, settings.local_cap(name), adaptive, settings.queue_bound(name),
                            coordinator=kit.coordinator if kit else host, weight=app[DIRECTORY].weight,
                            shadow=settings.budget_mode == "shadow", connections=client)
        for name in ACTIONS
    }
    app[QUEUES] = queues
    if kit is not None:  # the adaptive rate hears every replica's throttles
        kit.bus.on_throttle = lambda action: queues[action].throttled_elsewhere() if action in queues else None
    metrics = app[METRICS] = Metrics(tenants=app[DIRECTORY].tenants)
    for name, queue in queues.items():
        metrics.budget_cap.labels(name).set(queue.rate)
    longest_kept = max(settings.ttl(name) for name in ACTIONS) + max(settings.max_stale_s,
                                                                      settings.stale_while_revalidate_s)
    retention = longest_kept + 60
    tags: TagIndex = (RedisTagIndex(kit.client, retention, healthy=lambda: kit.breaker.healthy) if kit is not None
                      else MemoryTagIndex(retention, max_bytes=shares.tag_index, forget=memory.discard))
    app[READTHROUGH] = ReadThrough(cache=cache, client=client, queues=queues, ttl=settings.ttl,
                                   attempts=settings.upstream_attempts,
                                   access_key_id=lambda: account, owner=owner,
                                   replicas=kit.for_readthrough if kit else None, tags=tags,
                                   lifetimes=settings.lifetimes(), metrics=metrics)
    app[PURGER] = Purger(cache, tags)
    if settings.refresh_ahead_fraction > 0:
        refresher = RefreshAhead(RefreshPlan(RefreshPolicy(fraction=settings.refresh_ahead_fraction)), queues,
                                 app[READTHROUGH].revalidate, time.time)
        app[READTHROUGH].refresh_ahead = refresher
        owner.spawn(refresher.run(), name="refresh-ahead", long_running=True)
    local_nonces = MemoryNonces(skew_s=DEFAULT_MAX_SKEW.total_seconds())
    nonces = SharedNonces(kit.client, local_nonces) if kit is not None else local_nonces
    app[TENANTS] = TenantResolver(app[DIRECTORY], nonces)
    if settings.tenants_file is not None:
        watcher = app[TENANTS_WATCH] = TenantsFileWatcher(settings.tenants_file, app[DIRECTORY],
                                                          forbidden_token=settings.admin_token)
        owner.spawn(watcher.run(), name="tenants-file", long_running=True)
    app[HANDLER].bind(app[READTHROUGH], app[TENANTS], queues)
    owner.spawn(_sample_metrics_every_second(app), name="metrics", long_running=True)
    access_log = app[ACCESS_LOG]
    if access_log is not None:
        owner.spawn(access_log.run(), name="access-log", long_running=True)
    try:
        yield
    finally:
        await owner.close()
        if access_log is not None:  # after the last request: every line recorded is written
            await access_log.close()
            metrics.count_access_log_dropped(access_log.dropped)
        if kit is not None:
            await kit.close()
        else:
            await cache.close()
        await client.close()


class CallHandler:
    """``GET|POST /`` and ``/v1/{Action}``: one CAMS call, with the request id, the access-log line and
    every error rendered in the upstream shape.

    The hit path is kept short on purpose (see docs/benchmarks.md): a request whose path, raw query and
    action/version headers were seen before (and that has no body) reuses the validated call and its
    cache key from a bounded memo, so a repeated hit costs a dict lookup, a cache lookup and a response.
    """

    def __init__(self, app: web.Application, access_log: AccessLog | None, shares: MemoryShares) -> None:
        self._app = app
        self._access_log = access_log
        self._memo: BoundedMap[tuple[str, str | None, str | None], MemoCall] = BoundedMap(shares.call_memo)
        self._memo_read = self._memo.mapping  # read without a method call on the hit path
        self._readthrough: ReadThrough
        self._queues: dict[str, UpstreamQueue] = {}
        self._policies: dict[str, str] = {}
        self._rate_limits: dict[str, tuple[float, str]] = {}
        self._hit_headers = HitHeaders(shares.hit_headers)
        self._directory = TenantDirectory(require_authentication=True)  # until bind(): the full path handles all
        self._access_key_id: Callable[[], str] = str

    def bind(self, readthrough: ReadThrough, resolver: TenantResolver, queues: dict[str, UpstreamQueue]) -> None:
        """Attach the resources opened at start-up (the hit path reads them without app lookups)."""
        self._readthrough = readthrough
        self._queues = queues
        self._policies = {name: rate_limit_policy(queue.rate) for name, queue in queues.items()}
        self._directory = resolver.directory  # replaced in place on a tenants-file reload
        self._access_key_id = readthrough.access_key_id

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic() if self._access_log is not None else 0.0
        headers = request.headers
        incoming = headers.get(REQUEST_ID)
        request_id = request_id_for(incoming) if incoming else new_request_id()
        fields: dict[str, Any] = {}
        try:
            # The short path, inline on purpose (each call costs on every hit): a call seen before (validated
            # and keyed, see `MemoCall`) with no body and no authentication to check.
            call = None
            if (not self._directory.require_authentication and request.method in SHORT_PATH_METHODS
                    and not request.body_exists):
                call = self._memo_read.get((request.raw_path, headers.get(ACS_ACTION), headers.get(ACS_VERSION)))
            if call is not None and call.access_key_id == self._access_key_id():
                tenant = header_label(headers) or call.query_label or ANONYMOUS
                readthrough = self._readthrough
                entry = readthrough.cache.peek(call.key)
                if entry is None:
                    try:
                        entry = await readthrough.cache.get(call.key)
                    except CacheError:
                        entry = None  # the full path below logs and counts it
                now = time.time()
                if entry is not None and now < entry.fresh_until:
                    readthrough.record_hit(call.key, call.spec, call.params, entry, tenant)
                    access_log = self._access_log
                    if access_log is not None:
                        access_log.record(now, request_id, request.method, request.path, entry.status,
                                          round((time.monotonic() - started) * 1000, 2),
                                          {"action": call.spec.name, "tenant": tenant, "cache": "HIT"})
                    # No X-Cache-Key on fresh hits: each header costs on every hit, and the key is on the answer
                    # that filled the entry (the purge API also takes the call itself).
                    ready = self._hit_headers.lookup(call.key, entry, now)
                    if ready is None:
                        name = call.spec.name
                        ready = self._hit_headers.render(call.key, entry, now, self._policies[name],
                                                         self._rate_limit(name))
                    response = web.Response(body=entry.body, status=entry.status, headers=ready)
                    response.headers.add(REQUEST_ID, request_id)
                    return response
                response = await self._answer(request, fields, request_id, found=(entry,))
            else:
                response = await self._answer(request, fields, request_id)
        except GatewayError as exc:
            fields["code"] = exc.code
            response = error_response(request_id, exc)
        except web.HTTPException as exc:
            rejected = _from_http_exception(exc)
            fields["code"] = rejected.code
            response = error_response(request_id, rejected)
        except Exception:
            log.exception("request failed", request_id=request_id)
            response = error_response(request_id, GatewayError("The gateway failed to handle the request."))
        self._readthrough.metrics.count_request(fields.get("action", "invalid"), fields.get("cache", "ERROR"),
                                                response.status, fields.get("tenant", ANONYMOUS))
        if self._access_log is not None:
            self._access_log.record(time.time(), request_id, request.method, request.path, response.status,
                                    round((time.monotonic() - started) * 1000, 2), fields)
        return response

    def side_cache_bytes(self) -> dict[str, int]:
        """Bytes counted by the handler's two side caches (the hit headers, the call memo)."""
        return {"hit_headers": self._hit_headers.bytes_used, "call_memo": self._memo.bytes_used}

    def _rate_limit(self, action: str) -> str:
        """The ``RateLimit`` header, rebuilt at most every `RATE_LIMIT_REUSE_S` per action."""
        now = asyncio.get_running_loop().time()
        built_at, header = self._rate_limits.get(action, (-1.0, ""))
        if now - built_at > RATE_LIMIT_REUSE_S:
            header = rate_limit(*self._queues[action].rate_limit(now))
            self._rate_limits[action] = (now, header)
        return header

    def _answer_response(self, answer: Answer, request_id: str, call: MemoCall) -> web.Response:
        entry = answer.entry
        now = time.time()
        name = call.spec.name
        return web.Response(body=entry.body, status=entry.status, headers={
            "Content-Type": entry.content_type, "X-Cache": answer.cache.value, "Age": age(entry.fetched_at, now),
            "Cache-Status": cache_status(answer, now), "X-Request-Id": request_id, "X-Cache-Key": call.key,
            "RateLimit-Policy": self._policies[name], "RateLimit": self._rate_limit(name)})

    async def _answer(self, request: web.Request, fields: dict[str, Any], request_id: str,
                      found: tuple[Entry | None] | None = None) -> web.Response:
        if request.method not in ("GET", "POST"):
            raise RequestRejected(f"Method {request.method} is not allowed; use GET or POST.",
                                  code="InvalidParameter.Method", status=405)
        app = self._app
        headers = request.headers
        memo_key = (request.raw_path, headers.get(ACS_ACTION), headers.get(ACS_VERSION))
        call = None if request.body_exists else self._memo.get(memo_key)
        readthrough = app[READTHROUGH]
        if call is None or call.access_key_id != readthrough.access_key_id():
            parsed = await parse_call(request)
            call = MemoCall(parsed.spec, parsed.params, readthrough.key_for(parsed.spec, parsed.params),
                            query_label(parsed.view.query), readthrough.access_key_id())
            if not request.body_exists:
                self._memo.put(memo_key, call, call.size + 2 * sum(len(part or "") for part in memo_key))
            view = parsed.view
        else:
            view = None
        fields["action"] = call.spec.name
        resolver = app[TENANTS]
        if resolver.directory.require_authentication:
            if view is None:
                view = (await parse_call(request)).view
            fields["tenant"] = await resolver.identify(view)
            scoped = resolver.directory.tenants.get(fields["tenant"])
            if scoped is not None:
                scoped.check_scope(call.params)  # before the cache is read: outside its scope it learns nothing
        else:
            fields["tenant"] = header_label(headers) or call.query_label or ANONYMOUS
        loop = asyncio.get_running_loop()
        default = app[SETTINGS].deadline_s
        budget = request_deadline(request, default)
        answer = await readthrough.fetch(call.spec, call.params, loop.time() + budget, key=call.key,
                                         found=found[0] if found else None, looked_up=found is not None,
                                         tenant=fields["tenant"], priority=priority_of(request),
                                         budget_s=budget, asked=deadline_asked(request, budget, default))
        fields["cache"] = answer.cache.value
        if answer.fill is not None:
            fields["queue_wait_ms"] = round(answer.fill.queue_wait * 1000, 2)
            fields["upstream_ms"] = round(answer.fill.upstream_time * 1000, 2)
            fields["attempts"] = answer.fill.attempts
            fields["outcome"] = answer.fill.outcome.value
        return self._answer_response(answer, request_id, call)


#: What one memoised call costs besides its strings (measured with tracemalloc: ~800 bytes in all for a typical
#: 150-character target).
MEMO_OVERHEAD: Final = 500
SHORT_PATH_METHODS: Final = frozenset({"GET", "POST"})
ACS_ACTION: Final = istr("x-acs-action")
ACS_VERSION: Final = istr("x-acs-version")


@dataclass(frozen=True, slots=True)
class MemoCall:
    spec: ActionSpec
    params: dict[str, str]
    key: str
    query_label: str | None
    access_key_id: str

    @property
    def size(self) -> int:
        """Bytes it is counted as in the call memo (its strings twice over for object headers, plus overhead)."""
        strings = len(self.key) + len(self.query_label or "") + sum(len(k) + len(v) for k, v in self.params.items())
        return MEMO_OVERHEAD + 2 * strings


HANDLER: Final = web.AppKey("call_handler", CallHandler)


def _from_http_exception(exc: web.HTTPException) -> RequestRejected:
    code = {404: "InvalidAction.NotFound", 405: "InvalidParameter.Method",
            413: "InvalidRequest.TooLarge"}.get(exc.status, "InvalidRequest")
    return RequestRejected(exc.reason or "Bad request.", code=code, status=max(exc.status, 400))


async def not_found(request: web.Request) -> web.Response:
    request_id = request_id_for(request.headers.get("X-Request-Id"))
    return error_response(request_id, RequestRejected(
        f"No such endpoint: {request.path[:80]}. Calls go to / or /v1/{{Action}}.", code="InvalidAction.NotFound",
        status=404))


async def drain(app: web.Application) -> None:
    """Shutdown, first step (the listener is already closed): refuse what still waits in the queues with a
    503 and Retry-After, so every queued request gets an answer now; calls already granted finish within
    the grace period, then the resources close (leases released, Redis and the session closed)."""
    refused = {name: queue.close("The gateway is shutting down (another replica will answer)")
               for name, queue in app[QUEUES].items()}
    log.info("shutting down: queued misses refused with Retry-After, calls in flight finish", refused=refused)


def in_process_cache(cache: Cache) -> MemoryCache | None:
    """The process's own cache tier: the L1 of a tiered cache, the memory cache itself, or None (Redis only)."""
    if isinstance(cache, TieredCache):
        return cache.l1
    return cache if isinstance(cache, MemoryCache) else None


def memory_document(app: web.Application) -> dict[str, Any]:
    """What each cache of the process counts against ``--memory-max-bytes``: used and allowed, in bytes."""
    shares = app[MEMORY_SHARES]
    cache = app[READTHROUGH].cache
    memory = in_process_cache(cache)
    used: dict[str, int] = {"cache": memory.bytes_used if memory is not None else 0,
                            **app[HANDLER].side_cache_bytes(), "decoded": 0, "tag_index": 0}
    l2 = cache.l2 if isinstance(cache, TieredCache) else cache
    if isinstance(l2, RedisCache):
        used["decoded"] = l2.decoded_bytes
    index = app[PURGER].index
    if isinstance(index, MemoryTagIndex):
        used["tag_index"] = index.bytes_used
    allowed = {"cache": shares.cache, "hit_headers": shares.hit_headers, "call_memo": shares.call_memo,
               "decoded": shares.decoded, "tag_index": shares.tag_index}
    return {"max_bytes": app[SETTINGS].memory_max_bytes, "used_bytes": sum(used.values()),
            "caches": {name: {"used_bytes": used[name], "max_bytes": allowed[name]} for name in used}}


def sample_metrics(app: web.Application) -> None:
    """Refresh this process's gauges: queue depths, budget use, L1 size, Redis state."""
    now = asyncio.get_running_loop().time()
    queues = app[QUEUES]
    kit = app[REPLICA_KIT]
    l1 = in_process_cache(app[READTHROUGH].cache)
    app[METRICS].sample({name: q.depths() for name, q in queues.items()},
                        {name: q.use(now) for name, q in queues.items()},
                        len(l1) if l1 is not None else None,
                        kit.breaker.healthy if kit is not None else None,
                        {name: q.stats.shadow for name, q in queues.items() if q.shadow})
    for queue in queues.values():  # one margin per process, shared by its queues
        app[METRICS].budget_margin.set(queue.margin.value(time.monotonic()))
        break
    for name, queue in queues.items():
        app[METRICS].budget_rate.labels(name).set(queue.current_rate())
    access_log = app[ACCESS_LOG]
    if access_log is not None:
        app[METRICS].count_access_log_dropped(access_log.dropped)


def _report_dropped_lines(dropped: int, total: int) -> None:
    log.warning("access log lines dropped: the log sink is slower than the traffic", dropped=dropped, total=total)


async def _sample_metrics_every_second(app: web.Application) -> None:
    while True:
        sample_metrics(app)
        await asyncio.sleep(1.0)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format (every worker's, under ``--workers``)."""
    sample_metrics(request.app)
    body = await asyncio.to_thread(request.app[METRICS].exposition)  # multi-process mode reads files
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


#: Consecutive upstream failures after which /readyz says the upstream is failing.
UPSTREAM_FAILING_AFTER: Final = 3


async def readyz(request: web.Request) -> web.Response:
    """Kubernetes readiness. ``ready``; ``degraded`` (200: still worth routing to, hits and stale entries flow)
    with the reasons: Redis down (L1 and the local share) or the upstream failing (the last calls got no answer
    or a 5xx); or ``unavailable`` (503: the memory cache is broken)."""
    readthrough = request.app[READTHROUGH]
    kit = request.app[REPLICA_KIT]
    queues = {name: {"waiting": q.waiting, "interval_s": round(q.interval, 4), "granted": q.stats.granted,
                     "max_send_delay_ms": round(q.stats.max_send_delay * 1000, 2),
                     "margin_ms": round(q.margin.value(time.monotonic()) * 1000, 3),
                     "rate": round(q.current_rate(), 3), "cap": q.rate}
              for name, q in request.app[QUEUES].items()}
    failing = readthrough.counters.upstream_failures_in_a_row
    body: dict[str, Any] = {"status": "ready", "cache": readthrough.cache.name, "queues": queues,
                            "upstream": {"failures_in_a_row": failing, "calls": readthrough.counters.upstream_calls}}
    reasons = []
    for name, queue in request.app[QUEUES].items():
        if queue.current_rate() < queue.rate:
            reasons.append(f"upstream throttling below the cap: {name} at {queue.current_rate():.2f}/s of "
                           f"{queue.rate}/s (someone else spends the account; {queue.adaptive_rate.why})")
    if failing >= UPSTREAM_FAILING_AFTER:
        reasons.append(f"upstream failing: the last {failing} calls got no answer or a 5xx")
    watch = request.app.get(TENANTS_WATCH)
    if watch is not None and watch.last_error:
        reasons.append(f"tenants file {watch.path} not reloaded ({watch.last_error}); the tenants loaded before "
                       "are in force")
    if TASKS in request.app:
        reasons += [f"background task {name} died ({why}); restart this replica"
                    for name, why in sorted(request.app[TASKS].died.items())]
    if kit is not None:
        body["replica"] = kit.replica_id
        body["redis"] = {**kit.coordinator.status(), "pubsub_connected": kit.bus.connected.is_set()}
        if not kit.breaker.healthy:
            reasons.append("redis unreachable: serving from L1 and the local share of the cap")
    if reasons:
        body.update(status="degraded", reasons=reasons)
    status = 200
    if kit is None:
        try:
            await readthrough.cache.get("k1:readyz:probe")
        except CacheError as exc:
            body.update(status="unavailable", error=str(exc))
            status = 503
    if not request.app[OPS_PORT].serves(request):
        body = {"status": body["status"]}  # the details are for the ops port
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def edge_limits(settings: GatewaySettings) -> EdgeLimits:
    """The HTTP edge's bounds (`proxy.web.server`) from the settings."""
    return EdgeLimits(header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
                      idle_timeout_s=settings.idle_timeout_s, max_connections=settings.max_connections,
                      max_body_bytes=MAX_BODY_BYTES)


def gateway_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner that serves the gateway: the bounded HTTP edge, its counters in ``app[EDGE_STATS]``."""
    return runner_for(app, edge_limits(app[SETTINGS]), app[EDGE_STATS], **kwargs)


def create_app(settings: GatewaySettings, directory: TenantDirectory | None = None) -> web.Application:
    """The gateway. No middleware: the call handler renders its own errors (cheaper on the hit path), and a
    catch-all route answers unknown paths in the upstream shape."""
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          handler_args={"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_LINE_BYTES})
    app[SETTINGS] = settings
    app[EDGE_STATS] = EdgeStats()  # filled by the HTTP edge (proxy.web.server) of the runner that serves the app
    app[DIRECTORY] = directory or TenantDirectory()
    if settings.admin_token is not None and app[DIRECTORY].knows_token(settings.admin_token.reveal()):
        raise ValueError("PROXY_ADMIN_TOKEN is also a tenant's token: the admin token must be its own")
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(drain)
    app[MEMORY_SHARES] = memory_shares(settings.memory_max_bytes, redis=bool(settings.redis_url))
    app[ACCESS_LOG] = access_log = (AccessLog(json_lines=settings.json_logs(sys.stderr.isatty()),
                                              report=_report_dropped_lines)
                                    if settings.log_level in {"debug", "info"} else None)
    app[HANDLER] = CallHandler(app, access_log=access_log, shares=app[MEMORY_SHARES])
    handler = app[HANDLER].handle
    app.router.add_route("*", "/", handler)
    for name in ACTIONS:  # plain routes resolve by index, faster than the pattern below
        app.router.add_route("*", f"/v1/{name}", handler)
    app.router.add_route("*", "/v1/{action}", handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app[OPS_PORT] = OpsPort(settings.ops_port or None)  # the bound port replaces it when --ops-port is 0
    app.router.add_get("/metrics", ops_only(metrics_endpoint))
    AdminRoutes(settings.admin_token, settings.callback_token).install(app, wrap_admin=ops_only)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app

