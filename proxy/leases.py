"""Fill leases across replicas: the one replica allowed to fill a key (``SET NX PX``).

The holder renews its lease while the fill runs (queue waits can be long) and releases it with a
compare-and-delete, so a late release never removes another replica's lease. If the holder dies the
lease expires after ``ttl`` and exactly one waiter takes it over (``SET NX`` admits one). Each lease is
one key, hash-tagged on the cache key: cluster-safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

from redis.exceptions import RedisError

from proxy.redis_clients import RedisClient

RELEASE: Final = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
RENEW: Final = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
                "return 0")


class LeaseUnavailable(Exception):
    """Redis did not answer: fill locally (the process still coalesces its own misses)."""


def lease_key(cache_key: str) -> str:
    return f"cams:lease:{{{cache_key}}}"


class Leases:
    def __init__(self, client: RedisClient, replica_id: str, ttl_s: float = 2.0,
                 healthy: Callable[[], bool] = lambda: True) -> None:
        self._client = client
        self._healthy = healthy
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self._release: Any = client.register_script(RELEASE)
        self._renew: Any = client.register_script(RENEW)

    async def acquire(self, key: str) -> bool:
        """Raises `LeaseUnavailable` when Redis fails, or while the breaker says it is down (then the cache
        cannot be read either, so a lease would only let this replica fill twice)."""
        if not self._healthy():
            raise LeaseUnavailable("redis marked down")
        try:
            return bool(await self._client.set(lease_key(key), self.replica_id, nx=True,
                                               px=int(self.ttl_s * 1000)))
        except (RedisError, OSError) as exc:
            raise LeaseUnavailable(str(exc)) from exc

    async def renew(self, key: str) -> bool:
        try:
            return bool(await self._renew(keys=[lease_key(key)], args=[self.replica_id, int(self.ttl_s * 1000)]))
        except (RedisError, OSError) as exc:
            raise LeaseUnavailable(str(exc)) from exc

    async def release(self, key: str) -> None:
        with contextlib.suppress(RedisError, OSError):  # it expires on its own
            await self._release(keys=[lease_key(key)], args=[self.replica_id])
