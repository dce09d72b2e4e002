"""The Redis `Cache` backend: one Redis string per key, a compact binary header followed by the raw body.

Value layout (big-endian), version ``c2``::

    offset  size  field
    0       2     magic b"c2"
    2       2     status            (unsigned 16-bit)
    4       8     fetched_at        (IEEE-754 double, seconds since the epoch; exact round trip)
    12      8     fresh_until       (double, idem; may be +inf)
    20      8     stale_until       (double, idem; may be +inf)
    28      2     content-type length n (unsigned 16-bit)
    30      n     content type      (UTF-8)
    30+n    rest  body              (the upstream bytes, untouched)

Redis cost per call: ``set`` is one ``SET key value PX ttl_ms``, ``delete`` one ``DEL``. ``get`` is batched:
every ``get`` started in the same event-loop iteration shares one ``MGET`` (at most `MAX_BATCH` keys; on a
cluster, one ``MGET`` per slot, pipelined), so under load one round trip and one reply parse serve many
hits (redis-py's per-command cost dominated the Redis-only hit path). A lone ``get`` still costs one
round trip and waits for nothing: the batch is sent on the next loop iteration.
The body is taken from the stored value by slicing; it is never re-encoded. A value is unpacked once per
batch, and not again while the key's bytes stay the same (the last value read of each key is kept as its
`Entry` and the header bytes before the body, and a new read is compared with them in place; those copies are
bounded in bytes by ``decoded_bytes``, a share of ``--memory-max-bytes``, oldest out first).

Guarantees:

* Expiry is Redis's own: the TTL is rounded up to whole milliseconds (at least 1 ms), so an entry lives at
  least as long as asked and ``get`` never returns it after Redis expires it.
* Every failure to talk to Redis (``RedisError``, ``RedisClusterException``, ``OSError``, timeouts) is raised
  as `RedisCacheError` (a `CacheError` and a `proxy.replica.redis_clients.RedisUnavailable`) from the original
  exception, at the one seam (`_translated`, over `proxy.replica.redis_clients.translating`). Nothing is swallowed and
  no value is made up.
* No ``get`` waits forever: whatever ends a batch (a reply, a Redis failure, an unexpected error, a
  cancellation), every caller of the batch gets its entry or a `CacheError`. With ``timeout``, each operation
  (a batch included) is also bounded on top of the client's own socket timeouts (a cluster client retries).
  Non-guarantee: that bound works by cancelling the command, and redis-py often swallows a cancellation that
  reaches a command in flight (`proxy.tasks`), so then the command ends only with its reply or the client's socket
  timeout, which is why every client has one.
* A stored value this module cannot read (another magic/version, truncated, bad content type) is a miss, not an
  error: ``get`` returns None, and the next ``set`` overwrites it. This lets a newer format roll out without
  failing requests; such keys are not deleted on read.

Non-guarantees: no retries beyond what the client is configured with; no compression; keys are the prefix plus
the caller's key, unhashed.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from proxy.bounded import BoundedMap
from proxy.cache.base import CacheError, Entry
from proxy.replica.redis_clients import RedisClient, RedisUnavailable, translating

MAX_BATCH: Final = 512
#: Bytes of the last read values kept with their unpacked `Entry` (see `RedisCache._entry`), unless told.
DEFAULT_DECODED_BYTES: Final = 4 * 1024 * 1024
#: What one kept value costs besides its bytes and key (the Entry, the tuple, the dict slot; ~250 measured).
DECODED_OVERHEAD: Final = 300
MAGIC = b"c2"
HEADER = struct.Struct(">2sHdddH")  # magic, status, fetched_at, fresh_until, stale_until, content-type length
_MAX_U16 = 0xFFFF


def pack_entry(entry: Entry) -> bytes:
    """The stored value for ``entry``. Raises ValueError if status or content type do not fit 16 bits."""
    content_type = entry.content_type.encode("utf-8")
    if not 0 <= entry.status <= _MAX_U16:
        raise ValueError(f"status out of range: {entry.status}")
    if len(content_type) > _MAX_U16:
        raise ValueError(f"content type too long: {len(content_type)} bytes")
    return b"".join((HEADER.pack(MAGIC, entry.status, entry.fetched_at, entry.fresh_until, entry.stale_until,
                                 len(content_type)), content_type, entry.body))


def unpack_entry(value: bytes) -> Entry | None:
    """The entry stored in ``value``, or None if it is not a well-formed ``c2`` value."""
    if len(value) < HEADER.size:
        return None
    magic, status, fetched_at, fresh_until, stale_until, type_length = HEADER.unpack_from(value)
    body_start = HEADER.size + type_length
    if magic != MAGIC or len(value) < body_start:
        return None
    try:
        content_type = value[HEADER.size:body_start].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return Entry(status=status, body=value[body_start:], fetched_at=fetched_at, content_type=content_type,
                 fresh_until=fresh_until, stale_until=stale_until)


def ttl_ms(ttl: float) -> int:
    """``ttl`` seconds as whole milliseconds, rounded up, at least 1. Raises ValueError unless finite and > 0."""
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be positive and finite, got {ttl!r}")
    return max(1, math.ceil(round(ttl * 1000, 6)))  # round first: 0.07 * 1000 is 70.00000000000001, not 71 ms


class RedisCacheError(CacheError, RedisUnavailable):
    """The Redis cache could not reach Redis: a `CacheError` to the cache's callers, a `RedisUnavailable`
    to the rest (``__cause__`` is redis-py's exception)."""


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Where Redis client failures become `RedisCacheError`: the shared seam, with the cache's type."""
    with translating(operation, into=RedisCacheError):
        yield


def _fail(batch: dict[str, list[asyncio.Future[Entry | None]]], error: CacheError) -> None:
    """Every caller of ``batch`` still waiting gets its own copy of ``error`` (one exception per caller)."""
    for futures in batch.values():
        for future in futures:
            if not future.done():
                copy = RedisCacheError(str(error))
                copy.__cause__ = error.__cause__
                future.set_exception(copy)


class RedisCache:
    """The `Cache` backend shared by every gateway process, over one Redis or Redis Cluster client.

    The client must return bytes (``decode_responses=False``); the cache owns it and closes it in `close`.
    """

    name = "redis"

    def __init__(self, client: RedisClient, prefix: str = "cams:c:", *, timeout: float | None = None,
                 decoded_bytes: int = DEFAULT_DECODED_BYTES) -> None:
        """``timeout``: seconds any one operation may take in all (None: only the client's own timeouts);
        ``decoded_bytes``: the bound of the unpacked copies kept of the last reads."""
        if client.get_encoder().decode_responses:
            raise ValueError("RedisCache needs a client with decode_responses=False")
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self._pending: dict[str, list[asyncio.Future[Entry | None]]] = {}
        self._decoded: BoundedMap[str, tuple[bytes, Entry]] = BoundedMap(decoded_bytes)
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 0.25, prefix: str = "cams:c:") -> RedisCache:
        """A cache over a new client for ``url``; ``socket_timeout`` bounds both connecting and each reply."""
        client = redis.asyncio.Redis.from_url(url, socket_timeout=socket_timeout,
                                              socket_connect_timeout=socket_timeout, decode_responses=False)
        return cls(client, prefix=prefix)

    @property
    def decoded_bytes(self) -> int:
        """Bytes counted by the unpacked copies of the last reads (at most ``decoded_bytes``)."""
        return self._decoded.bytes_used

    def key(self, key: str) -> str:
        """The Redis key that holds ``key``."""
        return self.prefix + key

    def peek(self, key: str) -> Entry | None:
        """Always None: every entry is in Redis, so `get` must be asked."""
        return None

    async def get(self, key: str) -> Entry | None:
        """The live entry under ``key``, or None (also for an unreadable value). Raises `CacheError`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Entry | None] = loop.create_future()
        self._pending.setdefault(self.key(key), []).append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _entry(self, key: str, value: bytes) -> Entry | None:
        """``value`` (read under ``key``) unpacked, reusing the last `Entry` read for the key when the bytes
        are the same: hot keys are unpacked once per fill, not once per hit, and a hit's rendered headers
        (keyed on the entry) can be reused."""
        decoded = self._decoded.mapping.get(key)
        if decoded is not None:
            head, entry = decoded
            if (len(value) == len(head) + len(entry.body) and value.startswith(head)
                    and value.endswith(entry.body)):  # compared in place: no copy of the value
                return entry
        found = unpack_entry(value)
        if found is not None:
            self._decoded.put(key, (value[:len(value) - len(found.body)], found),
                              DECODED_OVERHEAD + len(key) + len(value))
        return found

    def _flush(self) -> None:
        """Send what this loop iteration asked for, `MAX_BATCH` keys per ``MGET``."""
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        keys = list(pending)
        for start in range(0, len(keys), MAX_BATCH):
            batch = {key: pending[key] for key in keys[start:start + MAX_BATCH]}
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: dict[str, list[asyncio.Future[Entry | None]]]) -> None:
        """One ``MGET`` for ``batch``; resolves every future of the batch, whatever happens (see `_fail`)."""
        keys = list(batch)
        failure: CacheError = RedisCacheError("redis MGET ended without an answer")
        try:
            with _translated("MGET"):
                async with asyncio.timeout(self.timeout):
                    if isinstance(self.client, RedisCluster):
                        values = await self.client.mget_nonatomic(keys)
                    else:
                        values = await self.client.mget(keys)
            for key, value in zip(keys, values, strict=True):
                entry = self._entry(key, value) if isinstance(value, bytes) else None
                for future in batch[key]:
                    if not future.done():
                        future.set_result(entry)
        except CacheError as exc:
            failure = exc
        except asyncio.CancelledError:
            failure = RedisCacheError("redis MGET cancelled before it answered")
            raise
        except Exception as exc:  # not a Redis failure (a bug, an odd reply): the callers still get an answer
            failure = RedisCacheError(f"redis MGET failed unexpectedly: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
        finally:
            _fail(batch, failure)

    async def get_with_ttl(self, key: str) -> tuple[Entry, float] | None:
        """The live entry and the seconds it has left, in one round trip (GET + PTTL). Raises `CacheError`."""
        with _translated("GET+PTTL"):
            async with asyncio.timeout(self.timeout), self.client.pipeline(transaction=False) as pipe:
                pipe.get(self.key(key))
                pipe.pttl(self.key(key))
                value, pttl = await pipe.execute()
        if value is None or not isinstance(value, bytes) or pttl is None or int(pttl) <= 0:
            return None
        entry = unpack_entry(value)
        return None if entry is None else (entry, int(pttl) / 1000.0)

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds (rounded up to whole ms), replacing any value. Raises `CacheError`."""
        value, px = pack_entry(entry), ttl_ms(ttl)
        with _translated("SET"):
            async with asyncio.timeout(self.timeout):
                await self.client.set(self.key(key), value, px=px)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if a live entry was removed. Raises `CacheError`."""
        with _translated("DEL"):
            async with asyncio.timeout(self.timeout):
                removed = await self.client.delete(self.key(key))
        return removed > 0

    async def close(self) -> None:
        """Close the client and its connection pool. Raises `CacheError`."""
        with _translated("close"):
            await self.client.aclose()
