"""An in-process LRU cache bounded by entry count and by total body bytes.

Guarantees:

* ``get`` never returns an entry past its time to live. Expiry is read from the injected monotonic ``clock``
  (``time.monotonic`` by default), so wall-clock jumps do not affect it and tests can pass a fake clock.
* After every ``set`` both bounds hold: ``len(cache) <= max_entries`` and ``bytes_used <= max_bytes``. Least
  recently used entries are evicted first; ``get`` and ``set`` both count as a use.
* An entry whose body alone is larger than ``max_bytes`` is not stored, and any previous entry under its key is
  removed, so a later ``get`` never returns the value that ``set`` was asked to replace.

Non-guarantees: expired entries are not swept in the background; they keep their room until a ``get`` of their
key drops them or LRU eviction reaches them. ``bytes_used`` counts body bytes only, not keys or object overhead.
The methods are ``async`` to fit `Cache` but never await: each runs to completion without yielding, so no lock is
needed within one event loop. Not safe to share across threads.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from proxy.cache.base import Entry


class _Slot(NamedTuple):
    entry: Entry
    expires_at: float  # on the cache's monotonic clock


class MemoryCache:
    """The `Cache` backend for a single process: a bounded LRU with per-entry expiry."""

    name = "memory"

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._bytes = 0
        self.evictions = 0  # entries removed to keep the bounds; expiry, deletes and overwrites do not count

    def __len__(self) -> int:
        """Stored entries, including expired ones not yet dropped."""
        return len(self._slots)

    @property
    def bytes_used(self) -> int:
        """Total body bytes of the stored entries."""
        return self._bytes

    async def get(self, key: str) -> Entry | None:
        """The live entry under ``key`` (now the most recently used), or None; an expired entry is dropped."""
        return self.peek(key)

    def peek(self, key: str) -> Entry | None:
        """`get` without the coroutine: everything here is in the process."""
        slot = self._slots.get(key)
        if slot is None:
            return None
        if self._clock() >= slot.expires_at:
            self._remove(key)
            return None
        self._slots.move_to_end(key)
        return slot.entry

    async def set(self, key: str, entry: Entry, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds as the most recently used, then evict until both bounds hold."""
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self._remove(key)
        if entry.size > self.max_bytes:
            return
        self._slots[key] = _Slot(entry, self._clock() + ttl)
        self._bytes += entry.size
        while len(self._slots) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._slots))
            self._remove(oldest)
            self.evictions += 1

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if a live entry was removed (an expired one is dropped and counts as absent)."""
        slot = self._slots.get(key)
        live = slot is not None and self._clock() < slot.expires_at
        self._remove(key)
        return live

    async def close(self) -> None:
        """Drop every entry; the cache stays usable."""
        self.clear()

    def discard(self, key: str) -> None:
        """Drop ``key`` now (synchronous: called from pub/sub notices and by the tag index when it evicts a tag)."""
        self._remove(key)

    def clear(self) -> None:
        self._slots.clear()
        self._bytes = 0

    def _remove(self, key: str) -> bool:
        slot = self._slots.pop(key, None)
        if slot is None:
            return False
        self._bytes -= slot.entry.size
        return True
