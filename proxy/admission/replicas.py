"""How many replicas share the budget: heartbeats in one Redis sorted set, scored by expiry.

Each replica runs `Heartbeat.beat` every ``interval`` seconds; the script drops members whose expiry
passed (Redis ``TIME``) and adds this replica for ``ttl``. The count it returns is remembered, so when
Redis goes away each replica still knows how many it last shared the cap with, and takes
``floor(cap / live)`` (whole numbers: a fractional split lets cap + 1 into some window; a share of 0
sends nothing). One key per AccessKey, hash-tagged: cluster-safe. Redis failures come out of the one
seam as `RedisUnavailable` (`proxy.redis_clients`).
"""

from __future__ import annotations

import math
from typing import Any, Final

from proxy.redis_clients import RedisClient, best_effort, redis_call

HEARTBEAT_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""


def replicas_key(access_key_id: str) -> str:
    return f"cams:replicas:{{{access_key_id}}}"


def local_share(cap: int, live: int) -> int:
    """Calls per second this replica may make alone: ``floor(cap / live)`` (live >= 1)."""
    return math.floor(cap / max(1, live))


class Heartbeat:
    def __init__(self, client: RedisClient, access_key_id: str, replica_id: str, ttl_s: float = 3.0) -> None:
        self._client = client
        self._key = replicas_key(access_key_id)
        self._replica_id = replica_id
        self._ttl_ms = int(ttl_s * 1000)
        self._script: Any = client.register_script(HEARTBEAT_SCRIPT)
        self.live = 1

    async def beat(self) -> int:
        """Register this replica; return (and remember) the live count. Raises `RedisUnavailable`."""
        live = await redis_call(self._script(keys=[self._key], args=[self._replica_id, self._ttl_ms]), "heartbeat")
        self.live = max(1, int(live))
        return self.live

    async def leave(self) -> None:
        """Best effort: if Redis fails, the entry expires on its own after ``ttl``."""
        await best_effort(self._client.zrem(self._key, self._replica_id), "heartbeat leave")
