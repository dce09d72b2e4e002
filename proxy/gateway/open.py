"""`open_gateway(settings)`: open every resource of one gateway process on one exit stack.

The order, and why: credentials first (the cache key and the budget are keyed on the account); the owned-task
set; the adaptive margin; the cache (memory, or with Redis the replica kit: tiers, budget coordinator, leases,
bus, heartbeat) and otherwise the host budget shared by ``--workers``; the upstream client; one queue per
action; metrics; the tag index; the read-through flow and the purger; refresh-ahead; nonces and tenants; the
metrics sampler and the access log writer.

Guarantee: whatever was opened is closed, in the reverse order, both at shutdown and when start-up fails
part-way (an unreachable credential chain, a Redis kit that cannot start, a bug): the owned tasks are cancelled
first, then the access log writes what it holds, then the cache tiers and Redis clients close, then the HTTP
session. Non-guarantee: a resource whose own constructor fails leaves nothing to close by definition.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator

from proxy.access_log import AccessLog
from proxy.actions import ACTIONS
from proxy.admission.host import HostBudget
from proxy.admission.margin import AdaptiveMargin
from proxy.admission.queue import UpstreamQueue
from proxy.bounded import memory_shares
from proxy.cache import Cache, MemoryCache
from proxy.cache.tagindex import MemoryTagIndex, RedisTagIndex, TagIndex
from proxy.credentials import ChainSource, CredentialSource, StaticSource
from proxy.flights import LocalFlights
from proxy.gateway.core import Gateway
from proxy.gateway.replicas import ReplicaKit
from proxy.logs import get_logger
from proxy.metrics import Metrics
from proxy.nonces import MemoryNonces, SharedNonces
from proxy.purge import Purger
from proxy.readthrough import ReadThrough
from proxy.refresh import RefreshAhead, RefreshPlan, RefreshPolicy
from proxy.settings import GatewaySettings
from proxy.signing import DEFAULT_MAX_SKEW
from proxy.tasks import TaskOwner
from proxy.tenants import TenantDirectory, TenantResolver, TenantsFileWatcher
from proxy.upstream.client import UpstreamClient

log = get_logger("proxy.gateway")


async def open_credentials(settings: GatewaySettings) -> tuple[CredentialSource, str]:
    """The credential source (static keys, or the default chain, started: raises `CredentialsUnavailable`) and the
    account the budget and the cache are keyed on."""
    static = settings.static_credentials()
    source: CredentialSource
    if static is not None:
        source = StaticSource(static)
    else:
        source = ChainSource()
        await source.start()
    account = settings.account or source.current().access_key_id
    if static is None and settings.account is None:
        log.warning("keys from the default credential chain and no PROXY_ACCOUNT: the budget and the cache are "
                    "keyed on the AccessKey id at start-up; set PROXY_ACCOUNT so replicas share one budget across "
                    "a key rotation", account=account)
    return source, account


@contextlib.asynccontextmanager
async def open_gateway(settings: GatewaySettings, directory: TenantDirectory | None = None,
                       access_log: AccessLog | None = None) -> AsyncIterator[Gateway]:
    """The gateway's resources, open until the block ends (see the module docstring for order and guarantee).
    ``access_log``: the HTTP layer's access log, whose writer runs as an owned task and is closed here."""
    directory = directory or TenantDirectory()
    async with contextlib.AsyncExitStack() as stack:
        source, account = await open_credentials(settings)
        owner = TaskOwner("fills")
        # Closed last if start-up fails part-way; on the normal path the same close is pushed again below, so
        # that it runs first (TaskOwner.close is idempotent).
        stack.push_async_callback(owner.close)
        owner.spawn(source.run(), name="credentials", long_running=not isinstance(source, StaticSource))
        shares = memory_shares(settings.memory_max_bytes, redis=bool(settings.redis_url),
                               max_entries=settings.memory_max_entries)
        margin_s = settings.spacing_margin_ms / 1000.0
        # δ(t): one per process, measured on the upstream path, floor --spacing-margin-ms, the ceiling until measured
        adaptive = AdaptiveMargin(margin_s, learning=True)
        memory = MemoryCache(max_entries=settings.memory_max_entries, max_bytes=shares.cache)
        client = UpstreamClient(settings.upstream, source.current, timeout=settings.upstream_timeout_s,
                                connect_timeout=settings.upstream_connect_timeout_s,
                                keepalive_s=settings.upstream_keepalive_s, ca_file=settings.upstream_ca_file,
                                max_answer_bytes=settings.upstream_max_answer_bytes)
        stack.push_async_callback(client.close)
        kit: ReplicaKit | None = None
        cache: Cache = memory
        if settings.redis_url:
            kit = ReplicaKit.build(settings.redis_url, account, margin=adaptive,
                                   redis_timeout_s=settings.redis_timeout_s, l1=memory,
                                   caps={name: settings.local_cap(name) for name in ACTIONS},
                                   l1_max_ttl_s=settings.l1_max_ttl_s, lease_ttl_s=settings.lease_ttl_s,
                                   budget_lease_s=settings.budget_lease_s,
                                   cluster=settings.redis_cluster, decoded_bytes=shares.decoded)
            stack.push_async_callback(kit.close)
            cache = kit.cache
            await kit.start(owner)
        else:
            stack.push_async_callback(memory.close)
        host = None if kit else HostBudget.for_worker(settings.workers, adaptive, os.environ)  # --workers, no Redis
        if host is not None:
            owner.spawn(host.run(), name="host-budget", long_running=True)
        queues = {
            name: UpstreamQueue(name, settings.local_cap(name), adaptive, settings.queue_bound(name),
                                coordinator=kit.coordinator if kit else host, weight=directory.weight,
                                shadow=settings.budget_mode == "shadow", connections=client)
            for name in ACTIONS
        }
        if kit is not None:  # the adaptive rate hears every replica's throttles
            kit.bus.on_throttle = lambda action: queues[action].throttled_elsewhere() if action in queues else None
        metrics = Metrics(tenants=directory.tenants)
        for name, queue in queues.items():
            metrics.budget_cap.labels(name).set(queue.rate)
        longest_kept = max(settings.ttl(name) for name in ACTIONS) + max(settings.max_stale_s,
                                                                          settings.stale_while_revalidate_s)
        retention = longest_kept + 60
        tags: TagIndex = (RedisTagIndex(kit.client, retention, healthy=lambda: kit.breaker.healthy)
                          if kit is not None
                          else MemoryTagIndex(retention, max_bytes=shares.tag_index, forget=memory.discard))
        lifetimes = settings.lifetimes()
        readthrough = ReadThrough(cache=cache, client=client, queues=queues, ttl=settings.ttl,
                                  attempts=settings.upstream_attempts, access_key_id=lambda: account, owner=owner,
                                  flights=kit.flights(lifetimes, owner) if kit else LocalFlights(), tags=tags,
                                  lifetimes=lifetimes, metrics=metrics)
        if settings.refresh_ahead_fraction > 0:
            refresher = RefreshAhead(RefreshPlan(RefreshPolicy(fraction=settings.refresh_ahead_fraction)), queues,
                                     readthrough.revalidate, time.time)
            readthrough.refresh_ahead = refresher
            owner.spawn(refresher.run(), name="refresh-ahead", long_running=True)
        local_nonces = MemoryNonces(skew_s=DEFAULT_MAX_SKEW.total_seconds())
        nonces: MemoryNonces | SharedNonces = (SharedNonces(kit.client, local_nonces) if kit is not None
                                               else local_nonces)
        watcher = None
        if settings.tenants_file is not None:
            watcher = TenantsFileWatcher(settings.tenants_file, directory, forbidden_token=settings.admin_token)
            owner.spawn(watcher.run(), name="tenants-file", long_running=True)
        gateway = Gateway(settings=settings, credentials=source, tasks=owner, readthrough=readthrough,
                          queues=queues, purger=Purger(cache, tags), directory=directory,
                          tenants=TenantResolver(directory, nonces), metrics=metrics, memory_shares=shares,
                          replicas=kit, access_log=access_log, tenants_watch=watcher)
        owner.spawn(gateway.sample_metrics_every_second(), name="metrics", long_running=True)
        if access_log is not None:
            owner.spawn(access_log.run(), name="access-log", long_running=True)

            async def close_access_log() -> None:  # after the last request: every line recorded is written
                await access_log.close()
                metrics.count_access_log_dropped(access_log.dropped)

            stack.push_async_callback(close_access_log)
        stack.push_async_callback(owner.close)  # first at shutdown: no task outlives what it uses
        yield gateway
