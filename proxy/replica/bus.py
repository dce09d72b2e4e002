"""Replica-to-replica notices over Redis pub/sub: fills, failures and invalidations of cache keys.

One channel, one subscriber connection per replica, JSON messages::

    {"kind": "fill" | "fail" | "invalidate" | "throttle", "key": "...", "origin": "<replica id>",
     "status": 200, "body": "<base64>", "content_type": "...",          (status/body for fill and fail)
     "fresh_until": 1.7e9, "stale_until": 1.7e9}                         (null: never)

A ``throttle`` notice's key is an action: the upstream throttled one of its calls there (the adaptive rate,
`proxy.admission.aimd`, of every replica hears it).

Waiters register a future for a key *before* they look at the lease, so no notice can slip between
the look and the wait. If the subscription drops, the reader reconnects with backoff and calls
``on_reconnect`` (the tiered cache clears its L1: it may have missed invalidations meanwhile) once Redis
*confirms* the new subscription, never merely because a ``SUBSCRIBE`` was written to a socket (with every
node of a cluster gone, that would empty L1 just when it is all there is).
Nothing here is durable: a notice lost with a dead Redis is covered by lease expiry and L1 TTLs.
Redis failures go through the one seam (`proxy.replica.redis_clients.translating`): a publish that fails is
logged and dropped; the reader logs a `RedisUnavailable` and reconnects, and any other error (a bug)
is logged with its traceback and reconnected from too, so L1 coherence never stops for good.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.asyncio.cluster import RedisCluster

from proxy.logs import get_logger
from proxy.replica.redis_clients import RedisClient, RedisUnavailable, redis_call, translating
from proxy.tasks import raise_if_cancelled

CHANNEL: Final = "cams:events"
log = get_logger("proxy.replica.bus")


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str
    key: str
    origin: str
    status: int = 0
    body: bytes = b""
    content_type: str = ""
    fresh_until: float = math.inf
    stale_until: float = math.inf

    def encode(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "key": self.key, "origin": self.origin, "status": self.status,
                             "body": base64.b64encode(self.body).decode(), "content_type": self.content_type,
                             "fresh_until": _finite(self.fresh_until), "stale_until": _finite(self.stale_until)})

    @classmethod
    def decode(cls, raw: bytes) -> Notice | None:
        try:
            data = orjson.loads(raw)
            return cls(str(data["kind"]), str(data["key"]), str(data["origin"]), int(data.get("status", 0)),
                       base64.b64decode(data.get("body", "")), str(data.get("content_type", "")),
                       _until(data.get("fresh_until")), _until(data.get("stale_until")))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _until(value: object) -> float:
    return math.inf if value is None else float(value)  # type: ignore[arg-type]


class Bus:
    def __init__(self, client: RedisClient, replica_id: str) -> None:
        self._client = client
        self.replica_id = replica_id
        self._waiters: dict[str, set[asyncio.Future[Notice]]] = {}
        self.on_invalidate: Callable[[str], None] = lambda key: None
        self.on_reconnect: Callable[[], None] = lambda: None
        self.on_throttle: Callable[[str], None] = lambda action: None
        self.connected = asyncio.Event()
        self.received = 0

    def expect(self, key: str) -> asyncio.Future[Notice]:
        future: asyncio.Future[Notice] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(future)
        return future

    def forget(self, key: str, future: asyncio.Future[Notice]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[key]

    async def publish(self, notice: Notice) -> None:
        """Best effort: a failed publish is logged; waiters fall back on lease expiry."""
        try:
            await redis_call(self._client.publish(CHANNEL, notice.encode()), "publish")
        except RedisUnavailable as exc:
            log.warning("could not publish a notice", kind=notice.kind, error=str(exc))

    def _dispatch(self, notice: Notice) -> None:
        self.received += 1
        if notice.kind in {"fill", "invalidate"} and notice.origin != self.replica_id:
            self.on_invalidate(notice.key)
        if notice.kind == "throttle" and notice.origin != self.replica_id:
            self.on_throttle(notice.key)
        if notice.kind not in {"fill", "fail"}:
            return
        for future in self._waiters.pop(notice.key, set()):
            if not future.done():
                future.set_result(notice)

    async def run(self) -> None:
        """Read the channel until cancelled, reconnecting with backoff."""
        delay = 0.1
        first = True
        while True:
            raise_if_cancelled()  # redis-py may swallow a cancellation that reaches a call in flight
            pubsub: Any = None
            try:
                with translating("pub/sub"):
                    if isinstance(self._client, RedisCluster):
                        await self._client.initialize()  # the cluster pub/sub picks its node from the slot map
                    pubsub = self._client.pubsub()
                    await pubsub.subscribe(CHANNEL)  # sent; subscribed only once Redis confirms it (below)
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        raise_if_cancelled()
                        kind = message.get("type") if message else None
                        if kind == "subscribe":  # the first confirmation, or a resubscription by redis-py
                            if not first:
                                self.on_reconnect()
                            first = False
                            self.connected.set()
                            delay = 0.1
                        elif kind == "message" and message is not None:
                            notice = Notice.decode(message["data"])
                            if notice is not None:
                                self._dispatch(notice)
            except Exception as exc:  # a Redis failure, or a bug: either way keep L1 coherence alive
                self.connected.clear()
                if isinstance(exc, RedisUnavailable):
                    log.warning("pub/sub connection lost; reconnecting", error=str(exc), retry_in_s=delay)
                else:
                    log.exception("pub/sub reader failed; reconnecting", error=f"{type(exc).__name__}: {exc}",
                                  retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
