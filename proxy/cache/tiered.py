"""A bounded in-process L1 in front of Redis (L2): most hits cost no Redis round trip.

* ``get``: L1, else L2 (GET + PTTL in one round trip), copied into L1 for what it has left in L2,
  capped at ``l1_max_ttl``. So an L1 entry never outlives its Redis entry.
* ``set`` / ``delete``: L2 first, then L1, then a notice on the bus; every other replica drops that
  key from its L1 and reads the new value from L2 on its next hit. ``delete`` says whether Redis or this
  L1 held the key.
* Redis unreachable (`CacheError` from L2: every Redis failure, a cluster with no reachable node included,
  arrives as one through the seam in `proxy.replica.redis_clients`): ``get`` answers from L1 alone and ``set``
  stores in L1 alone; ``delete`` drops the L1 entry, then raises `CacheError` (a purge must not report success while
  Redis may still hold the entry). ``on_redis_failure`` is told (it opens the breaker), so only the first
  request pays the Redis timeout. Only the budget's coordinator closes the breaker again (after a probe):
  this cache never does, so the rejoin rules hold.

Worst-case staleness of an L1 entry after another replica changed the key: the pub/sub delivery time
while the subscription is up (milliseconds); if it is down, at most ``l1_max_ttl`` (the bus clears L1
when it reconnects).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.cache.base import CacheError, Entry
from proxy.cache.memory import MemoryCache
from proxy.cache.redis import RedisCache, RedisCacheError
from proxy.logs import get_logger
from proxy.replica.breaker import CircuitBreaker
from proxy.replica.bus import Bus, Notice

log = get_logger("proxy.cache")


class TieredCache:
    name = "tiered"

    def __init__(self, l1: MemoryCache, l2: RedisCache, bus: Bus | None, breaker: CircuitBreaker,
                 l1_max_ttl: float = 10.0, on_redis_failure: Callable[[Exception], None] | None = None) -> None:
        self.l1 = l1
        self.l2 = l2
        self.bus = bus
        self.breaker = breaker
        self.l1_max_ttl = l1_max_ttl
        self._on_failure = on_redis_failure
        self.l1_hits = 0
        self.l2_hits = 0
        self.invalidations = 0
        if bus is not None:
            bus.on_invalidate = self._drop
            bus.on_reconnect = self._clear

    def _drop(self, key: str) -> None:
        self.invalidations += 1
        self.l1.discard(key)

    def _clear(self) -> None:
        self.l1.clear()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _failed(self, exc: Exception) -> None:
        if self._on_failure is not None:
            self._on_failure(exc)
        else:
            self.breaker.failure(self._now())

    def peek(self, key: str) -> Entry | None:
        """The L1 entry, if any (no Redis)."""
        entry = self.l1.peek(key)
        if entry is not None:
            self.l1_hits += 1
        return entry

    async def get(self, key: str) -> Entry | None:
        entry = self.peek(key)
        if entry is not None:
            return entry
        if not self.breaker.healthy:
            return None
        try:
            found = await self.l2.get_with_ttl(key)
        except CacheError as exc:
            self._failed(exc)
            return None
        if found is None:
            return None
        entry, left = found
        self.l2_hits += 1
        await self.l1.set(key, entry, min(left, self.l1_max_ttl))
        return entry

    async def shared_get(self, key: str) -> Entry | None:
        """The Redis copy, past L1 (what every replica would read); None while Redis is down."""
        if not self.breaker.healthy:
            return None
        try:
            return await self.l2.get(key)
        except CacheError as exc:
            self._failed(exc)
            return None

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        if self.breaker.healthy:
            try:
                await self.l2.set(key, entry, ttl)
            except CacheError as exc:
                self._failed(exc)
        await self.l1.set(key, entry, min(ttl, self.l1_max_ttl))
        if self.bus is not None:
            await self.bus.publish(Notice("invalidate", key, self.bus.replica_id))

    async def delete(self, key: str) -> bool:
        """Remove ``key`` from Redis, this L1 and (by notice) every other L1; True if Redis or this L1 held it.
        Redis unreachable: this L1 still drops it, then `CacheError` (whether Redis held it is unknown, and
        it may still be served from there once Redis is back)."""
        removed = False
        failure: CacheError | None = None
        if self.breaker.healthy:
            try:
                removed = await self.l2.delete(key)
            except CacheError as exc:
                self._failed(exc)
                failure = exc
        else:
            failure = RedisCacheError("redis DEL skipped: redis marked down")
        removed = await self.l1.delete(key) or removed
        if self.bus is not None:
            await self.bus.publish(Notice("invalidate", key, self.bus.replica_id))
        if failure is not None:
            raise failure
        return removed

    async def close(self) -> None:
        await self.l1.close()
        await self.l2.close()
