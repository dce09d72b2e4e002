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
from typing import Final

from proxy.readthrough import Answer, CacheStatus

CACHE_NAME: Final = "cams-proxy"


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
