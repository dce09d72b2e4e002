"""Where purge tags live: tag -> cache keys, and WabaId -> CustSpaceIds (see `proxy.tags`).

Two backends with one shape: `MemoryTagIndex` for a single process, `RedisTagIndex` shared by every
replica (a store costs one pipelined round trip; a purge reads the sets it names, never ``SCAN``).

**Bounded by the entries they index.** Each key is indexed with ``until``, the wall-clock time its entry
leaves the cache (its ``stale_until``). A tag is a set scored by that time (a Redis sorted set; a dict in
memory), and additions drop the members whose entry left more than `GRACE_S` ago (Redis: every addition,
``ZREMRANGEBYSCORE``; memory: whenever a set has doubled since its last prune), so a tag names at most the
keys whose latest stored entry is still, or was within `GRACE_S`, in the cache: random template codes, or a
space whose keys keep changing, do not grow a set beyond the entries they created. Reads skip members past
that point too. `GRACE_S` covers the wall-clock difference between replicas (an entry stored by a replica
whose clock is behind lives a little past the score another replica compares with). A purged key stays in
its sets until its score passes (deleting it again is a no-op). Sets also expire ``retention`` after their
last addition, at least the longest time an entry is kept, so a set outlives every entry it names and an
unused tag vanishes. `RedisTagIndex` raises every Redis failure as a `CacheError` (`RedisCacheError`,
through the one seam in `proxy.replica.redis_clients`), and fails at once while the breaker says Redis is down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any, Final, Protocol

from proxy.cache.redis import RedisCacheError
from proxy.replica.redis_clients import RedisClient, translating

#: How long past its entry's expiry a member is kept (covers wall-clock differences between replicas).
GRACE_S: Final = 60.0
#: What `MemoryTagIndex` counts per (tag, key) pair and per set besides its name (measured with tracemalloc on
#: CPython 3.11: ~45 bytes a pair in a shared set, ~290 for a set of one; the key string is the cache's own).
PAIR_BYTES: Final = 100
SET_BYTES: Final = 300
#: The score of a member that never expires on its own (a WABA's spaces): 2**53 ms, beyond any real time.
NEVER_MS: Final = 2**53


class TagIndex(Protocol):
    async def add(self, key: str, tags: Iterable[str], until: float) -> None:
        """Index ``key`` under ``tags`` until wall-clock ``until`` (+ `GRACE_S`), when its entry leaves."""

    async def link(self, waba_id: str, space_id: str) -> None: ...

    async def keys(self, tags: Iterable[str]) -> set[str]: ...

    async def spaces(self, waba_id: str) -> set[str]: ...


class MemoryTagIndex:
    """Bounded twice: members past their entry's expiry (+ `GRACE_S`) are dropped, and the index is counted in
    bytes (`PAIR_BYTES` per (tag, key) pair, `SET_BYTES` plus the name per set) within ``max_bytes``, its share
    of ``--memory-max-bytes``. Past the bound the least recently added-to tag sets go first, and ``forget`` is
    called for every key they still name (the gateway passes the cache's own delete): a purge by tag never
    misses an entry the cache still holds. A WABA's spaces are counted but never evicted (they come from the
    account's own answers, not from what clients send). The clock is the wall clock (``until`` is one)."""

    def __init__(self, retention: float, max_bytes: int = 8 * 1024 * 1024,
                 clock: Callable[[], float] = time.time, forget: Callable[[str], object] = lambda key: None) -> None:
        self.retention = retention
        self.max_bytes = max_bytes
        self._clock = clock
        self._forget = forget
        #: name -> (member -> until, when the set expires, its size after its last prune)
        self._sets: dict[str, tuple[dict[str, float], float, int]] = {}
        self._size = 0
        self.bytes_used = 0
        self.forgotten = 0  # keys dropped from the cache because their tag set was evicted for room

    def __len__(self) -> int:
        """(tag, key) pairs held."""
        return self._size

    def _drop(self, name: str) -> dict[str, float]:
        members = self._sets.pop(name)[0]
        self._size -= len(members)
        self.bytes_used -= SET_BYTES + len(name) + PAIR_BYTES * len(members)
        return members

    def _put(self, name: str, member: str, until: float) -> None:
        now = self._clock()
        if name in self._sets:
            members, _, pruned_size = self._sets.pop(name)
        else:
            members, pruned_size = {}, 0
            self.bytes_used += SET_BYTES + len(name)
        if len(members) >= 2 * max(pruned_size, 8):  # amortised O(1): a prune at most every doubling
            live = {m: u for m, u in members.items() if u + GRACE_S > now}
            self._size -= len(members) - len(live)
            self.bytes_used -= PAIR_BYTES * (len(members) - len(live))
            members, pruned_size = live, len(live)
        if member not in members:
            self._size += 1
            self.bytes_used += PAIR_BYTES
        members[member] = until
        self._sets[name] = (members, now + self.retention, pruned_size)  # re-inserted last: dict order is age
        for oldest in list(islice(self._sets, 2)):  # expired sets go, oldest first (two per addition keeps up)
            if oldest == name or self._sets[oldest][1] > now:
                break
            self._drop(oldest)
        if self.bytes_used > self.max_bytes:
            self._make_room(name, now)

    def _make_room(self, newest: str, now: float) -> None:
        for oldest in list(self._sets):
            if self.bytes_used <= self.max_bytes:
                return
            if oldest == newest or not oldest.startswith("tag:"):
                continue
            for member, until in self._drop(oldest).items():
                if until + GRACE_S > now:
                    self._forget(member)
                    self.forgotten += 1

    def _get(self, name: str) -> set[str]:
        found = self._sets.get(name)
        if found is None:
            return set()
        now = self._clock()
        if found[1] <= now:
            self._drop(name)
            return set()
        return {member for member, until in found[0].items() if until + GRACE_S > now}

    async def add(self, key: str, tags: Iterable[str], until: float) -> None:
        for name in tags:
            self._put(f"tag:{name}", key, until)

    async def link(self, waba_id: str, space_id: str) -> None:
        self._put(f"waba:{waba_id}", space_id, math.inf)

    async def keys(self, tags: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for name in tags:
            found |= self._get(f"tag:{name}")
        return found

    async def spaces(self, waba_id: str) -> set[str]:
        return self._get(f"waba:{waba_id}")


def _decoded(members: Iterable[Any]) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


class RedisTagIndex:
    """One sorted set per tag (``cams:tags:<tag>``: member the cache key, score when its entry leaves, in ms
    since the epoch) and one set per WABA of the spaces bound to it. (Tags used to be plain sets under
    ``cams:tag:``; those expire on their own after ``retention``, and purges during a rolling upgrade from
    that version miss what the old replicas indexed.)"""

    def __init__(self, client: RedisClient, retention: float, prefix: str = "cams:",
                 healthy: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._healthy = healthy
        self._retention_ms = max(1, int(retention * 1000))
        self._prefix = prefix
        self._clock = clock

    def tag_key(self, name: str) -> str:
        """The Redis key of tag ``name`` (e.g. ``space:1``)."""
        return f"{self._prefix}tags:{name}"

    def _horizon_ms(self) -> int:
        """Members scored below this are past their entry's expiry and the grace."""
        return int((self._clock() - GRACE_S) * 1000)

    async def _run(self, operation: str, build: Callable[[Any], None]) -> list[Any]:
        if not self._healthy():  # the breaker is open: fail at once rather than wait out a timeout
            raise RedisCacheError(f"redis {operation} skipped: redis marked down")
        with translating(operation, into=RedisCacheError):
            async with self._client.pipeline(transaction=False) as pipe:
                build(pipe)
                return list(await pipe.execute())

    async def add(self, key: str, tags: Iterable[str], until: float) -> None:
        names = [self.tag_key(name) for name in tags]
        if not names:
            return
        horizon = self._horizon_ms()
        score = int(until * 1000) if math.isfinite(until) else NEVER_MS

        def build(pipe: Any) -> None:
            for name in names:
                pipe.zremrangebyscore(name, "-inf", f"({horizon}")
                pipe.zadd(name, {key: score})
                pipe.pexpire(name, self._retention_ms)

        await self._run("tag add", build)

    async def members(self, tag: str) -> int:
        """How many keys tag ``tag`` holds in Redis now, members past their expiry included (tests, status)."""
        with translating("tag size", into=RedisCacheError):
            return int(await self._client.zcard(self.tag_key(tag)))

    async def link(self, waba_id: str, space_id: str) -> None:
        name = f"{self._prefix}wabaspaces:{waba_id}"

        def build(pipe: Any) -> None:
            pipe.sadd(name, space_id)
            pipe.pexpire(name, self._retention_ms)

        await self._run("waba link", build)

    async def keys(self, tags: Iterable[str]) -> set[str]:
        names = [self.tag_key(name) for name in tags]
        if not names:
            return set()
        horizon = self._horizon_ms()

        def build(pipe: Any) -> None:
            for name in names:
                pipe.zrangebyscore(name, horizon, "+inf")

        found: set[str] = set()
        for members in await self._run("tag read", build):
            found |= _decoded(members)
        return found

    async def spaces(self, waba_id: str) -> set[str]:
        name = f"{self._prefix}wabaspaces:{waba_id}"

        def build(pipe: Any) -> None:
            pipe.smembers(name)

        (members,) = await self._run("waba read", build)
        return _decoded(members)
