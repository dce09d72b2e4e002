"""Fill leases across replicas: the one replica allowed to fill a key (``SET NX PX``).

The holder renews its lease while the fill runs (queue waits can be long) and releases it with a
compare-and-delete, so a late release never removes another replica's lease. If the holder dies the
lease expires after ``ttl`` and exactly one waiter takes it over (``SET NX`` admits one). Each lease is
one key, hash-tagged on the cache key: cluster-safe. Every Redis failure is raised as `LeaseUnavailable`
(a `RedisUnavailable`, from the one seam in `proxy.replica.redis_clients`); a failed release is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from proxy.replica.redis_clients import RedisClient, RedisUnavailable, best_effort, redis_call

RELEASE: Final = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
RENEW: Final = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
                "return 0")


class LeaseUnavailable(RedisUnavailable):
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
        return bool(await redis_call(self._client.set(lease_key(key), self.replica_id, nx=True,
                                                      px=int(self.ttl_s * 1000)), "lease acquire",
                                     into=LeaseUnavailable))

    async def renew(self, key: str) -> bool:
        """Extend this replica's lease; False if it is no longer ours. Raises `LeaseUnavailable`."""
        return bool(await redis_call(self._renew(keys=[lease_key(key)], args=[self.replica_id,
                                                                               int(self.ttl_s * 1000)]),
                                     "lease renew", into=LeaseUnavailable))

    async def release(self, key: str) -> None:
        """Best effort: if Redis fails the lease expires on its own after ``ttl``."""
        await best_effort(self._release(keys=[lease_key(key)], args=[self.replica_id]), "lease release")
