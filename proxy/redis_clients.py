"""Redis clients for one server or a Redis Cluster, behind one type.

Everything cams-proxy keeps in Redis touches one key per command or script (budget, heartbeat, lease,
cache entry; keys that must share a slot carry a hash tag), and pub/sub is broadcast to every node of a
cluster, so the same code runs on both. Only the client class differs: ``--redis-cluster`` picks
redis-py's `RedisCluster`, which follows slots and redirections itself.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

RedisClient: TypeAlias = Redis | RedisCluster


def connect(url: str, *, cluster: bool, timeout: float | None, connect_timeout: float) -> RedisClient:
    """A bytes-returning client for ``url``; ``timeout`` bounds each reply (None: wait, for pub/sub)."""
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                                     decode_responses=False)
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                          decode_responses=False, health_check_interval=0 if timeout else 5)
