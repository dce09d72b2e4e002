"""Replay protection for signed requests: a nonce may be used once per AccessKey.

Entries older than ``ttl`` seconds are forgotten: a request that old fails the date check anyway, so
memory stays bounded by the request rate times the accepted clock skew.
"""

from __future__ import annotations

from collections import OrderedDict


class NonceRegistry:
    """Nonces seen per AccessKey within the accepted clock skew; a reuse is a replay.

    Entries older than ``ttl`` seconds are dropped: a request that old fails the date check anyway.
    """

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def use(self, access_key_id: str, nonce: str, now: float) -> bool:
        """Record a nonce; False if it was already used."""
        while self._seen:
            oldest_key, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self._ttl:
                break
            del self._seen[oldest_key]
        key = (access_key_id, nonce)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True

    def clear(self) -> None:
        self._seen.clear()
