"""The cache contract: one small protocol, several backends, one contract test suite over all of them.

An `Entry` is what the gateway sends on a hit: the upstream's status and body bytes, untouched, plus
when it was fetched (wall-clock seconds since the epoch, for the ``Age`` header), its content type, and
until when it is fresh and may be served stale (`proxy.freshness`; backends store but never read them).
Backends store entries with a time to live and must never return one past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Entry:
    status: int
    body: bytes
    fetched_at: float
    content_type: str = "application/json;charset=utf-8"
    fresh_until: float = math.inf
    stale_until: float = math.inf

    @property
    def size(self) -> int:
        return len(self.body)


class CacheError(Exception):
    """The backend could not answer (Redis down, timeout). Callers treat it as a miss or degrade."""


class Cache(Protocol):
    """What the read-through path needs from a cache backend."""

    name: str

    async def get(self, key: str) -> Entry | None:
        """The live entry under ``key``, or None. Raises `CacheError` if the backend is unreachable."""

    def peek(self, key: str) -> Entry | None:
        """The live entry under ``key`` if this process holds it, with no I/O and no await; None means "ask
        `get`" (the hit path tries this first: a coroutine per hit is a measurable cost)."""

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds (> 0), replacing any previous one."""

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if something was removed."""

    async def close(self) -> None:
        """Release connections."""
