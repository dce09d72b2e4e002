"""Where purge tags live: tag -> cache keys, and WabaId -> CustSpaceIds (see `proxy.tags`).

Two backends with one shape: `MemoryTagIndex` for a single process, `RedisTagIndex` shared by every
replica (one Redis set per tag; a store costs one pipelined round trip; a purge reads the sets it
names, never ``SCAN``). Purged keys stay in their sets (deleting them again is a no-op). Sets expire
``retention`` after their last addition, at least the longest cache TTL, so a set outlives every
entry it names. `RedisTagIndex` raises every Redis failure as a `CacheError` (`RedisCacheError`, through
the one seam in `proxy.redis_clients`), and fails at once while the breaker says Redis is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from proxy.cache.redis import RedisCacheError
from proxy.redis_clients import RedisClient, translating


class TagIndex(Protocol):
    async def add(self, key: str, tags: Iterable[str]) -> None: ...

    async def link(self, waba_id: str, space_id: str) -> None: ...

    async def keys(self, tags: Iterable[str]) -> set[str]: ...

    async def spaces(self, waba_id: str) -> set[str]: ...


class MemoryTagIndex:
    """Bounded: at most ``max_keys`` (tag, key) pairs; expired sets are pruned when the bound is reached,
    then the oldest sets go first."""

    def __init__(self, retention: float, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retention = retention
        self.max_keys = max_keys
        self._clock = clock
        self._sets: dict[str, tuple[set[str], float]] = {}
        self._size = 0

    def _put(self, name: str, member: str) -> None:
        now = self._clock()
        members, _ = self._sets.pop(name, (set(), 0.0))
        if member not in members:
            members.add(member)
            self._size += 1
        self._sets[name] = (members, now + self.retention)  # re-inserted last: dict order is age order
        while self._size > self.max_keys and len(self._sets) > 1:
            oldest = next(iter(self._sets))
            self._size -= len(self._sets.pop(oldest)[0])

    def _get(self, name: str) -> set[str]:
        found = self._sets.get(name)
        if found is None:
            return set()
        if found[1] <= self._clock():
            self._size -= len(self._sets.pop(name)[0])
            return set()
        return set(found[0])

    async def add(self, key: str, tags: Iterable[str]) -> None:
        for name in tags:
            self._put(f"tag:{name}", key)

    async def link(self, waba_id: str, space_id: str) -> None:
        self._put(f"waba:{waba_id}", space_id)

    async def keys(self, tags: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for name in tags:
            found |= self._get(f"tag:{name}")
        return found

    async def spaces(self, waba_id: str) -> set[str]:
        return self._get(f"waba:{waba_id}")


class RedisTagIndex:
    def __init__(self, client: RedisClient, retention: float, prefix: str = "cams:",
                 healthy: Callable[[], bool] = lambda: True) -> None:
        self._client = client
        self._healthy = healthy
        self._retention_ms = max(1, int(retention * 1000))
        self._prefix = prefix

    def _tag(self, name: str) -> str:
        return f"{self._prefix}tag:{name}"

    async def _run(self, operation: str, build: Callable[[Any], None]) -> list[Any]:
        if not self._healthy():  # the breaker is open: fail at once rather than wait out a timeout
            raise RedisCacheError(f"redis {operation} skipped: redis marked down")
        with translating(operation, into=RedisCacheError):
            async with self._client.pipeline(transaction=False) as pipe:
                build(pipe)
                return list(await pipe.execute())

    async def add(self, key: str, tags: Iterable[str]) -> None:
        names = [self._tag(name) for name in tags]
        if not names:
            return

        def build(pipe: Any) -> None:
            for name in names:
                pipe.sadd(name, key)
                pipe.pexpire(name, self._retention_ms)

        await self._run("tag add", build)

    async def link(self, waba_id: str, space_id: str) -> None:
        name = f"{self._prefix}wabaspaces:{waba_id}"

        def build(pipe: Any) -> None:
            pipe.sadd(name, space_id)
            pipe.pexpire(name, self._retention_ms)

        await self._run("waba link", build)

    async def keys(self, tags: Iterable[str]) -> set[str]:
        names = [self._tag(name) for name in tags]
        if not names:
            return set()

        def build(pipe: Any) -> None:
            for name in names:
                pipe.smembers(name)

        found: set[str] = set()
        for members in await self._run("tag read", build):
            found |= {m.decode() if isinstance(m, bytes) else str(m) for m in members}
        return found

    async def spaces(self, waba_id: str) -> set[str]:
        name = f"{self._prefix}wabaspaces:{waba_id}"

        def build(pipe: Any) -> None:
            pipe.smembers(name)

        (members,) = await self._run("waba read", build)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}
