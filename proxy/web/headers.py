"""The gateway's response headers for an answer (pure: the answer, the clock and the queue's numbers).

* ``X-Cache``: HIT, STALE, MISS or COALESCED.
* ``Age``: seconds since the upstream produced the bytes (RFC 9111).
* ``Cache-Status`` (RFC 9211), e.g. ``cams-proxy; hit; ttl=287``,
  ``cams-proxy; hit; ttl=-12; detail=stale-while-revalidate``,
  ``cams-proxy; fwd=miss; fwd-status=200; stored; ttl=300``, ``cams-proxy; fwd=miss; collapsed``,
  ``cams-proxy; fwd=stale; fwd-status=503; ttl=-700; detail=stale-if-error``.
  ``ttl`` is the freshness left (negative once stale).
* ``RateLimit-Policy`` / ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers): the upstream budget of the
  action, ``"upstream";q=<cap>;w=1`` and ``"upstream";r=<slots left in this replica's current second>;
  t=<seconds until a new miss would be sent>``. With replicas, r counts this replica's grants only.
* ``X-Cache-Key``: the entry's key, for the admin purge API (not on fresh hits: every header costs there).
"""

from __future__ import annotations

import math
import weakref
from email.utils import formatdate
from typing import Final

from aiohttp import hdrs
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, istr

from proxy.answer import Answer, CacheStatus
from proxy.bounded import BoundedMap
from proxy.cache.base import Entry

CACHE_NAME: Final = "cams-proxy"
#: How long a rendered ``RateLimit`` value may be reused: it is sent on every hit, and building it asks the
#: queue for its numbers.
RATE_LIMIT_REUSE_S: Final = 0.05
BOUNDARY_MARGIN_S: Final = 1e-6
REQUEST_ID: Final = istr("X-Request-Id")
#: What one rendered set costs besides its header strings (measured with tracemalloc: the multidict, the tuple,
#: the weak reference and the dict slot come to ~900 bytes with nine headers).
RENDERED_OVERHEAD: Final = 1000


def rate_limit_policy(cap: int) -> str:
    return f'"upstream";q={cap};w=1'


def rate_limit(remaining: int, wait_s: float) -> str:
    return f'"upstream";r={remaining};t={math.ceil(wait_s)}'


def _ttl(fresh_until: float, now: float) -> str:
    return f"; ttl={math.floor(fresh_until - now)}" if math.isfinite(fresh_until) else ""


def hit_status(fresh_until: float, now: float) -> str:
    return f"{CACHE_NAME}; hit{_ttl(fresh_until, now)}"


def cache_status(answer: Answer, now: float) -> str:
    entry = answer.entry
    if answer.cache is CacheStatus.HIT:
        return hit_status(entry.fresh_until, now)
    if answer.cache is CacheStatus.STALE:
        if answer.stale_reason == "stale-while-revalidate":
            return f"{CACHE_NAME}; hit{_ttl(entry.fresh_until, now)}; detail=stale-while-revalidate"
        status = f"; fwd-status={answer.failed_status}" if answer.failed_status else ""
        return f"{CACHE_NAME}; fwd=stale{status}{_ttl(entry.fresh_until, now)}; detail=stale-if-error"
    fwd = "stale" if answer.had_stale else "miss"
    if answer.cache is CacheStatus.COALESCED:
        return f"{CACHE_NAME}; fwd={fwd}; fwd-status={entry.status}; collapsed"
    stored = "; stored" if answer.fill is not None and answer.fill.stored else ""
    ttl = _ttl(entry.fresh_until, now) if stored else ""
    return f"{CACHE_NAME}; fwd={fwd}; fwd-status={entry.status}{stored}{ttl}"


def age(fetched_at: float, now: float) -> str:
    seconds = int(now - fetched_at)
    return str(seconds if seconds > 0 else 0)


class HitHeaders:
    """The headers of fresh hits, rendered once per cache entry and reused until one of them would change.

    A fresh hit's headers are the same for every hit on one entry within a window: ``Age``, the
    ``Cache-Status`` ttl and ``Date`` change at whole seconds, ``RateLimit`` is refreshed every
    `RATE_LIMIT_REUSE_S`, the rest is fixed. So a hit costs a lookup and aiohttp's copy of a prepared
    multidict rather than formatting six headers (measured: the largest share of the gateway's own work per
    hit). ``Content-Length``, ``Date`` and ``Server`` are included, with aiohttp's own values, so aiohttp
    finds them set rather than adding them to each response. The request id differs per answer and is not
    part of it (add it with `REQUEST_ID`). Pure: the clock and the queue's header come in as arguments.

    Bounded by ``max_bytes`` (its share of ``--memory-max-bytes``, `proxy.bounded`): the oldest renderings go
    first. The entry is held by a weak reference, so a rendering never keeps an evicted entry's body alive.
    """

    __slots__ = ("_rendered",)

    def __init__(self, max_bytes: int = 4 * 1024 * 1024) -> None:
        #: key -> (weak ref to the entry, rendered at, valid until, headers)
        self._rendered: BoundedMap[str, tuple[weakref.ref[Entry], float, float, CIMultiDict[str]]] = (
            BoundedMap(max_bytes))

    def __len__(self) -> int:
        return len(self._rendered)

    @property
    def bytes_used(self) -> int:
        return self._rendered.bytes_used

    @property
    def max_bytes(self) -> int:
        return self._rendered.max_bytes

    def lookup(self, key: str, entry: Entry, now: float) -> CIMultiDict[str] | None:
        """The headers rendered for ``entry`` under ``key`` if still right at wall-clock ``now``, else None
        (also when the clock has stepped back past the rendering). The caller must not change the mapping
        (aiohttp copies it into each response)."""
        rendered = self._rendered.mapping.get(key)
        if rendered is not None and rendered[0]() is entry and rendered[1] <= now < rendered[2]:
            return rendered[3]
        return None

    def render(self, key: str, entry: Entry, now: float, policy: str, rate_limit: str) -> CIMultiDict[str]:
        """Render and keep the hit headers for ``entry`` under ``key`` at ``now``."""
        headers = CIMultiDict({
            hdrs.CONTENT_TYPE: entry.content_type, "X-Cache": "HIT", hdrs.AGE: age(entry.fetched_at, now),
            "Cache-Status": hit_status(entry.fresh_until, now), "RateLimit-Policy": policy, "RateLimit": rate_limit,
            hdrs.CONTENT_LENGTH: str(len(entry.body)), hdrs.DATE: formatdate(now, usegmt=True),
            hdrs.SERVER: SERVER_SOFTWARE})
        size = RENDERED_OVERHEAD + len(key) + sum(len(name) + len(value) for name, value in headers.items())
        self._rendered.put(key, (weakref.ref(entry), now, hit_headers_valid_until(entry, now), headers), size)
        return headers


def hit_headers_valid_until(entry: Entry, now: float) -> float:
    """Until when the hit headers rendered at ``now`` stay right: the next whole second of ``Age``, of the
    ttl or of ``Date``, or the end of the ``RateLimit`` reuse window, whichever comes first, less
    `BOUNDARY_MARGIN_S` so float rounding (an ulp is 2.4e-7 s at today's epoch) never carries a stale value
    past its boundary (at worst a render is repeated a microsecond early)."""
    until = min(now + RATE_LIMIT_REUSE_S, math.floor(now) + 1)
    elapsed = now - entry.fetched_at
    next_age = entry.fetched_at + (math.floor(elapsed) + 1 if elapsed >= 0 else 1)
    until = min(until, next_age)
    if math.isfinite(entry.fresh_until):
        left = entry.fresh_until - now
        next_ttl = entry.fresh_until - math.floor(left)  # floor(fresh_until - t) drops just after this
        until = min(until, next_ttl)
    return until - BOUNDARY_MARGIN_S
