"""Everything a replica shares through Redis, built and run together: the cache tiers, the budget
coordinator, fill leases, the notice bus and the heartbeat (which renews this replica's lease on safe capacity).

Two Redis clients: one for commands, with short timeouts (``redis_timeout_s``: a dead Redis costs one
timeout, then the breaker answers), and one for the pub/sub subscription, which idles between notices
and so has no read timeout.

Every Redis failure reaches this module as a `RedisUnavailable` (the one seam, `proxy.replica.redis_clients`):
start-up runs the Redis-down policy on it, the heartbeat opens the breaker on it, and closing ignores it.
Each command is bounded by `call_bound_s` in all (a cluster client retries), and so is the breaker's
probe lease, so neither a hit batch nor the breaker can be held by Redis for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.admission.coordinator import Coordinator
from proxy.admission.margin import AdaptiveMargin
from proxy.admission.safe_capacity import LEASE_S, LocalLease
from proxy.admission.shared import RedisBudget
from proxy.cache.base import Cache, CacheError
from proxy.cache.memory import MemoryCache
from proxy.cache.redis import DEFAULT_DECODED_BYTES, RedisCache
from proxy.cache.tiered import TieredCache
from proxy.freshness import Lifetimes
from proxy.logs import get_logger
from proxy.replica.breaker import CircuitBreaker
from proxy.replica.bus import Bus
from proxy.replica.clock import RedisClock
from proxy.replica.flight import LeasedFlights
from proxy.replica.heartbeat import Heartbeat, RenewalLate
from proxy.replica.leases import Leases
from proxy.replica.redis_clients import RedisClient, RedisUnavailable, best_effort, call_bound_s, connect
from proxy.tasks import TaskOwner, raise_if_cancelled

log = get_logger("proxy.replicas")
HEARTBEAT_INTERVAL_S = 1.0
#: Round trips that seed the estimate of Redis's clock at start-up (the fastest one wins).
CLOCK_SAMPLES_AT_START = 10
#: Connections of the budget's own client: one reservation per action in flight at a time, and the clock sample.
BUDGET_CONNECTIONS = 4


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def new_replica_id() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class ReplicaKit:
    replica_id: str
    client: RedisClient
    pubsub_client: RedisClient
    breaker: CircuitBreaker
    coordinator: Coordinator
    bus: Bus
    leases: Leases
    heartbeat: Heartbeat
    cache: Cache
    #: The budget's own client (reservations and clock samples only).
    budget_client: RedisClient

    @classmethod
    def build(cls, url: str, access_key_id: str, *, margin: float | AdaptiveMargin, redis_timeout_s: float,
              l1: MemoryCache, caps: Mapping[str, int], l1_max_ttl_s: float, lease_ttl_s: float,
              budget_lease_s: float = LEASE_S, cluster: bool = False,
              decoded_bytes: int = DEFAULT_DECODED_BYTES) -> ReplicaKit:
        replica_id = new_replica_id()
        client = connect(url, cluster=cluster, timeout=redis_timeout_s, connect_timeout=redis_timeout_s)
        pubsub_client = connect(url, cluster=cluster, timeout=None, connect_timeout=redis_timeout_s)
        # The budget and its clock samples on connections of their own, kept warm by the heartbeat: a reservation
        # never waits behind a burst of cache and lease commands for a pooled connection (or opens one), which
        # would make its reply late for its slot.
        budget_client = connect(url, cluster=cluster, timeout=redis_timeout_s, connect_timeout=redis_timeout_s,
                                max_connections=BUDGET_CONNECTIONS)
        breaker = CircuitBreaker(cooldown=1.0, probe_timeout=call_bound_s(redis_timeout_s))
        # Lease renewals are void if Redis reads them later than the reply timeout (the reply would be lost).
        heartbeat = Heartbeat(client, access_key_id, replica_id, caps, lease=LocalLease(budget_lease_s),
                              clock=RedisClock(), accept_s=redis_timeout_s, now=_loop_time)
        coordinator = Coordinator(RedisBudget(budget_client, access_key_id), heartbeat, breaker, margin)
        bus = Bus(pubsub_client, replica_id)
        l2 = RedisCache(client, timeout=call_bound_s(redis_timeout_s), decoded_bytes=decoded_bytes)
        cache: Cache = (TieredCache(l1, l2, bus, breaker, l1_max_ttl_s, on_redis_failure=coordinator.record_failure)
                        if l1_max_ttl_s > 0 else l2)
        return cls(replica_id, client, pubsub_client, breaker, coordinator, bus,
                   Leases(client, replica_id, lease_ttl_s, healthy=lambda: breaker.healthy), heartbeat, cache,
                   budget_client)

    def flights(self, lifetimes: Lifetimes, owner: TaskOwner) -> LeasedFlights:
        """One fill per key across replicas, over this kit's leases, bus and shared cache tier."""
        return LeasedFlights(self.leases, self.bus, cache=self.cache, lifetimes=lifetimes, wall=time.time,
                             owner=owner)

    async def start(self, owner: TaskOwner) -> None:
        """Probe the script support, then run the bus reader and the heartbeat as owned tasks."""
        try:
            await self.coordinator.budget.probe()
            for _ in range(CLOCK_SAMPLES_AT_START):  # a first estimate of Redis's clock before any slot or renewal
                await self.coordinator.sample_clock()
            await self.heartbeat.beat()
        except RenewalLate as exc:
            log.warning("the first lease renewal came too late; the heartbeat tries again", error=str(exc))
        except RedisUnavailable as exc:
            log.warning("redis cannot serve the shared budget at start-up (down, or scripts disabled): "
                        "running the Redis-down policy", error=str(exc))
            self.coordinator.record_failure(exc)
        owner.spawn(self.bus.run(), name="bus", long_running=True)
        owner.spawn(self._heartbeats(), name="heartbeat", long_running=True)
        try:
            async with asyncio.timeout(1.0):
                await self.bus.connected.wait()
        except TimeoutError:
            log.warning("pub/sub not connected yet; L1 coherence starts when it is")

    async def _heartbeats(self) -> None:
        """Beat while Redis is healthy, probe (once due) while it is not; until cancelled. A failure that is
        not Redis's (a bug) is logged and the loop goes on: recovery from an outage depends on it."""
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            try:
                if self.breaker.healthy:
                    try:
                        await self.coordinator.sample_clock()  # keeps the clock estimate fresh while idle
                        if self.heartbeat.due(_loop_time()):
                            await self.heartbeat.beat()
                    except RenewalLate as exc:
                        log.warning("lease renewal not accepted", error=str(exc))
                    except RedisUnavailable as exc:
                        self.coordinator.record_failure(exc)
                else:
                    await self.coordinator.probe_if_due()
            except Exception:
                log.exception("heartbeat round failed; trying again next round")
            raise_if_cancelled()  # redis-py may have swallowed a cancellation that reached a call above

    async def close(self) -> None:
        """Leave the heartbeat set and close the cache and both clients; Redis failures are ignored."""
        await self.heartbeat.leave()
        with contextlib.suppress(CacheError):
            await self.cache.close()
        for client in (self.client, self.pubsub_client, self.budget_client):
            await best_effort(client.aclose(), "close")
