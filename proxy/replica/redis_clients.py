"""Redis clients for one server or a Redis Cluster, behind one type.

Everything cams-proxy keeps in Redis touches one key per command or script (budget, heartbeat, lease,
cache entry; keys that must share a slot carry a hash tag), and pub/sub is broadcast to every node of a
cluster, so the same code runs on both. Only the client class differs: ``--redis-cluster`` picks
redis-py's `RedisCluster`, which follows slots and redirections itself.

**One seam for Redis failures.** redis-py fails in several unrelated ways: `RedisError` (and its
``ConnectionError``/``TimeoutError``), `RedisClusterException` (*not* a `RedisError`: a cluster client
that reaches no node raises it, as do its subclasses), and plain `OSError`/`TimeoutError` from the
sockets. `translating` (a context manager, also around awaits) and `redis_call` (await one call) are the only places
that name them; everything that talks to Redis goes through one of them and sees `RedisUnavailable`
(or a subclass the caller names with ``into``: the budget's, the leases', the cache's), chained from
the original exception. `best_effort` is the same for calls whose failure is harmless (a release, a
leave, a close).

Guarantees: every Redis-side failure listed above comes out as a `RedisUnavailable`; cancellation
(`asyncio.CancelledError`) is never translated, so callers' deadlines and shutdowns still work; an
``asyncio.timeout`` *inside* a `translating` block becomes `RedisUnavailable` (a bound on Redis), one
outside it stays the caller's `TimeoutError` (a deadline).
Non-guarantees: no retries but one, on a new connection, when a pooled one turns out dead (``ConnectionError``:
reset or closed; never a timeout); other exceptions (bugs: `TypeError`, ...) pass through untranslated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Final, TypeAlias, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

RedisClient: TypeAlias = Redis | RedisCluster
T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis did not answer, refused, or (a cluster) no node could be reached. ``__cause__`` is redis-py's
    own exception. Callers degrade (local share, L1, local fill); none of them retries at once."""


#: Everything redis-py (or its sockets) raises when Redis is down, slow or refusing: the one list.
#: `TimeoutError` is also `asyncio.TimeoutError` (3.11+) and an `OSError`; named for clarity.
REDIS_FAILURES: Final = (RedisError, RedisClusterException, OSError, TimeoutError)


@contextmanager
def translating(operation: str, into: type[RedisUnavailable] = RedisUnavailable) -> Iterator[None]:
    """Raise ``into`` (from the original) for any Redis failure inside the block; the one translation point."""
    try:
        yield
    except REDIS_FAILURES as exc:
        raise into(f"redis {operation} failed: {type(exc).__name__}: {exc}") from exc


async def redis_call(call: Awaitable[T], operation: str, *, into: type[RedisUnavailable] = RedisUnavailable) -> T:
    """Await one Redis call through `translating`. A caller that needs a bound on top of the client's own
    socket timeouts wraps this in ``asyncio.timeout``: the `TimeoutError` it raises outside is the caller's."""
    with translating(operation, into):
        return await call


async def best_effort(call: Awaitable[object], operation: str) -> bool:
    """Await a call whose failure is harmless (Redis expires what it leaves); False if Redis failed."""
    try:
        await redis_call(call, operation)
    except RedisUnavailable:
        return False
    return True


#: Connections per client (per node on a cluster). A burst beyond it waits for a free connection (at most
#: `POOL_WAIT_S`) instead of failing: an exhausted pool says nothing about Redis's health, so the wait is not
#: the reply timeout (with a dead Redis, connections fail at their own connect timeout and free up quickly).
MAX_CONNECTIONS: Final = 128
POOL_WAIT_S: Final = 2.0


def call_bound_s(timeout: float) -> float:
    """How long one command on a client from `connect` may take when Redis is healthy: a wait for a pooled
    connection, a connect and a reply. Past it, callers treat Redis as unavailable (a cluster client that
    retries node after node would otherwise take a multiple of it)."""
    return POOL_WAIT_S + 2 * timeout


def connect(url: str, *, cluster: bool, timeout: float | None, connect_timeout: float,
            max_connections: int = MAX_CONNECTIONS) -> RedisClient:
    """A bytes-returning client for ``url``; ``timeout`` bounds each reply (None: wait, for pub/sub)."""
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                                     decode_responses=False, max_connections=max_connections)
    # A pooled connection that died while Redis was unreachable (reset once the path is back) is retried once on
    # a new connection instead of opening the breaker again; a timeout is never retried (it is the bound).
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=POOL_WAIT_S,
                                           socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                                           decode_responses=False, health_check_interval=0 if timeout else 5,
                                           retry=retry)
    return Redis.from_pool(pool)  # the client owns the pool and closes it
