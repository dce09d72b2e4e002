"""The process's memory budget (``--memory-max-bytes``) and the bounded maps its side caches live in (pure).

Besides the answer cache (`proxy.cache.memory.MemoryCache`, the L1 with Redis) a process keeps four side caches,
each there to make the hit path or a purge cheap: the rendered headers of fresh hits (`proxy.web.headers`), the
validated calls of request targets seen before (the call memo in `proxy.web.handler`), the unpacked entries of the
last Redis reads (`proxy.cache.redis`) and, without Redis, the purge-tag index (`proxy.cache.tagindex`). Each
gets its share of the one budget (`memory_shares`: fixed fractions; the call memo, one call for each entry the
answer cache may hold) and is a `BoundedMap` (or counts its bytes the same way),
so the sum of what the caches account for never exceeds ``--memory-max-bytes``.

Guarantee: after every `BoundedMap.put`, ``bytes_used <= max_bytes`` and ``len <= max_entries``; the oldest
insertions go first (a re-put counts as new). A value larger than the whole bound is not kept.

Non-guarantee: sizes are estimates of what a value holds (its strings and bytes plus a fixed overhead per item,
measured with ``tracemalloc`` on CPython 3.11), not the allocator's exact figure; memory the caches share (an
entry in both the L1 and the decoded cache) is counted in each, so the estimate errs high. Structures that are
not caches are outside the budget and bounded on their own: the nonce registry (`proxy.nonces`, only with
authenticated tenants), connection buffers (`proxy.web.server`, `--max-connections`), the queues (their depth bound).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A dict bounded by entry count and by the bytes its values are said to hold (oldest insertion out first).

    Reads are meant to be as cheap as a dict's: `mapping` is the dict itself (do not write to it), so a hot path
    can do ``memo.mapping.get(key)`` with no method call in between.
    """

    __slots__ = ("_sizes", "bytes_used", "mapping", "max_bytes", "max_entries")

    def __init__(self, max_bytes: int, max_entries: int = 1 << 20) -> None:
        if max_bytes < 0 or max_entries < 0:
            raise ValueError(f"bounds must not be negative: {max_bytes} bytes, {max_entries} entries")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.mapping: dict[K, V] = {}
        self._sizes: dict[K, int] = {}
        self.bytes_used = 0

    def __len__(self) -> int:
        return len(self.mapping)

    def __contains__(self, key: object) -> bool:
        return key in self.mapping

    def __iter__(self) -> Iterator[K]:
        return iter(self.mapping)

    def get(self, key: K) -> V | None:
        return self.mapping.get(key)

    def put(self, key: K, value: V, size: int) -> bool:
        """Keep ``value`` under ``key`` as the newest item, said to hold ``size`` bytes; evict the oldest until
        both bounds hold. False (and any previous value under ``key`` dropped) if it cannot fit at all."""
        self.pop(key)
        if size > self.max_bytes or self.max_entries == 0:
            return False
        mapping, sizes = self.mapping, self._sizes
        while mapping and (self.bytes_used + size > self.max_bytes or len(mapping) >= self.max_entries):
            oldest = next(iter(mapping))
            del mapping[oldest]
            self.bytes_used -= sizes.pop(oldest)
        mapping[key] = value
        sizes[key] = size
        self.bytes_used += size
        return True

    def pop(self, key: K) -> V | None:
        value = self.mapping.pop(key, None)
        if value is not None:
            self.bytes_used -= self._sizes.pop(key)
        return value

    def clear(self) -> None:
        self.mapping.clear()
        self._sizes.clear()
        self.bytes_used = 0


@dataclass(frozen=True, slots=True)
class MemoryShares:
    """How ``--memory-max-bytes`` is split; the fields add up to at most the total."""

    cache: int
    hit_headers: int
    call_memo: int
    decoded: int
    tag_index: int

    @property
    def total(self) -> int:
        return self.cache + self.hit_headers + self.call_memo + self.decoded + self.tag_index


#: Fractions of the budget (denominators) of the side caches. At the default 64 MiB and 10,000 entries: 4 MiB of
#: hit headers (~3,800 entries' headers), 11.4 MiB of calls (one for each of the 10,000 entries the cache may
#: hold), with Redis 4 MiB of unpacked entries (and 44.6 MiB of L1), without it 8 MiB of purge tags (~14,000
#: entries with a template code of their own each) and 40.6 MiB of answers (~23,000 template answers: the
#: 10,000-entry bound binds first).
HIT_HEADERS_SHARE: Final = 16
DECODED_SHARE: Final = 16
TAG_INDEX_SHARE: Final = 8
#: The call memo is sized to the answer cache's entry bound: `CALL_MEMO_BYTES_PER_ENTRY` for each entry the
#: cache may hold (a typical template call is counted as ~1,100 bytes, `proxy.web.handler.MemoCall.size`), at
#: most 1/`CALL_MEMO_MAX_SHARE` of the budget. A memo smaller than the cache makes a hit of a call it has
#: forgotten parse, validate and hash the call again (about three times the work of a remembered hit, measured
#: in `bench.scale`), so a full cache would answer most of its hits the slow way.
CALL_MEMO_BYTES_PER_ENTRY: Final = 1_200
CALL_MEMO_MAX_SHARE: Final = 4


def memory_shares(max_bytes: int, *, redis: bool, max_entries: int = 10_000) -> MemoryShares:
    """Split ``max_bytes`` between the answer cache and the side caches of a process with or without Redis
    (with it the tag index is in Redis and the decoded-entry cache exists; without it, the reverse), for an
    answer cache of at most ``max_entries`` entries (``--memory-max-entries``: the call memo follows it)."""
    if max_bytes < 0 or max_entries < 0:
        raise ValueError(f"max_bytes and max_entries must not be negative, got {max_bytes}, {max_entries}")
    hit_headers = max_bytes // HIT_HEADERS_SHARE
    call_memo = min(max_bytes // CALL_MEMO_MAX_SHARE, max_entries * CALL_MEMO_BYTES_PER_ENTRY)
    decoded = max_bytes // DECODED_SHARE if redis else 0
    tag_index = 0 if redis else max_bytes // TAG_INDEX_SHARE
    cache = max_bytes - hit_headers - call_memo - decoded - tag_index
    return MemoryShares(cache, hit_headers, call_memo, decoded, tag_index)
