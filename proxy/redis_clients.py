"""Redis clients for one server or a Redis Cluster, behind one type.

Everything cams-proxy keeps in Redis touches one key per command or script (budget, heartbeat, lease,
cache entry; keys that must share a slot carry a hash tag), and pub/sub is broadcast to every node of a
cluster, so the same code runs on both. Only the client class differs: ``--redis-cluster`` picks
redis-py's `RedisCluster`, which follows slots and redirections itself.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

RedisClient: TypeAlias = Redis | RedisCluster


#: Connections per client (per node on a cluster). A burst beyond it waits for a free connection (at most
#: `POOL_WAIT_S`) instead of failing: an exhausted pool says nothing about Redis's health, so the wait is not
#: the reply timeout (with a dead Redis, connections fail at their own connect timeout and free up quickly).
MAX_CONNECTIONS: Final = 128
POOL_WAIT_S: Final = 2.0


def connect(url: str, *, cluster: bool, timeout: float | None, connect_timeout: float) -> RedisClient:
    """A bytes-returning client for ``url``; ``timeout`` bounds each reply (None: wait, for pub/sub)."""
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                                     decode_responses=False, max_connections=MAX_CONNECTIONS)
    pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_S,
                                           socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                                           decode_responses=False, health_check_interval=0 if timeout else 5)
    return Redis.from_pool(pool)  # the client owns the pool and closes it
