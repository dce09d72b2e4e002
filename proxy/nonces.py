"""Replay protection for signed requests: a signature nonce is accepted once per AccessKey, on every replica.

A signed request carries its date, and one whose date is more than the accepted skew away from now is refused
before this is asked (`proxy.signing`). So a nonce only has to be remembered for twice the skew after
it was seen. Two registries keep that promise:

* `MemoryNonces`, per process, **bounded**: at most ``max_entries`` nonces, each stored as a 64-bit digest of
  (AccessKey, nonce). When full it forgets the oldest, and remembers the moment of the newest it forgot
  (``floor``); from then on it refuses any request whose signed date is not later than ``floor + skew``: such a
  request could have been seen, and forgotten, before. So a nonce is never accepted twice, memory stays bounded,
  and under a flood of signed requests the skew a client may have shrinks instead (the refusal is CAMS's
  ``InvalidTimeStamp.Expired``). A digest collision (1 in 2^64 per pair) refuses a request as a replay; it never
  lets one in.
* `SharedNonces`, with Redis: ``SET cams:nonce:{ak}:<digest> 1 NX PX <2 × skew>``, so a request replayed to another
  replica is refused too. When Redis does not answer, the process's `MemoryNonces` decides (replays across
  replicas are then not detected until Redis is back; each replica still refuses its own).

Non-guarantee: replicas with no Redis share nothing, so a request replayed to another replica is accepted there.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

from proxy.logs import get_logger
from proxy.replica.redis_clients import RedisClient, RedisUnavailable, redis_call

log = get_logger("proxy.nonces")

#: Nonces one process remembers at most (about 100 bytes each: ~50 MB).
MAX_ENTRIES: Final = 500_000

Verdict = Literal["fresh", "replayed", "too_old"]


def nonce_digest(access_key_id: str, nonce: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{access_key_id}\0{nonce}".encode(), digest_size=8).digest(), "big")


@dataclass
class NonceStats:
    replayed: int = 0
    too_old: int = 0
    forgotten: int = 0
    shared_unavailable: int = 0


class MemoryNonces:
    """The per-process registry (pure: times are given by the caller, seconds since the epoch)."""

    def __init__(self, skew_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self.skew_s = skew_s
        self.max_entries = max(1, max_entries)
        self._seen: OrderedDict[int, float] = OrderedDict()
        #: The newest seen-time forgotten for room (not for age): requests signed before floor + skew are refused.
        self.floor = float("-inf")
        self.stats = NonceStats()

    def __len__(self) -> int:
        return len(self._seen)

    def clear(self) -> None:
        self._seen.clear()
        self.floor = float("-inf")

    def use(self, access_key_id: str, nonce: str, signed_at: float, now: float) -> Verdict:
        retention = 2 * self.skew_s
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= retention:
                break
            del self._seen[oldest]
        if signed_at <= self.floor + self.skew_s:
            self.stats.too_old += 1
            return "too_old"
        digest = nonce_digest(access_key_id, nonce)
        if digest in self._seen:
            self.stats.replayed += 1
            return "replayed"
        while len(self._seen) >= self.max_entries:
            _, forgotten_at = self._seen.popitem(last=False)
            self.floor = max(self.floor, forgotten_at)
            self.stats.forgotten += 1
        self._seen[digest] = now
        return "fresh"

    def status(self) -> dict[str, object]:
        return {"entries": len(self._seen), "max_entries": self.max_entries, **self.stats.__dict__}


class SharedNonces:
    """Nonces in Redis (shared by the replicas), the process's `MemoryNonces` when Redis does not answer."""

    def __init__(self, client: RedisClient, local: MemoryNonces) -> None:
        self._client = client
        self.local = local

    async def use(self, access_key_id: str, nonce: str, signed_at: float, now: float) -> Verdict:
        local = self.local.use(access_key_id, nonce, signed_at, now)  # always: it decides when Redis cannot
        if local != "fresh":
            return local
        key = f"cams:nonce:{{{access_key_id}}}:{nonce_digest(access_key_id, nonce):016x}"
        try:
            stored = await redis_call(self._client.set(key, b"1", nx=True, px=int(2 * self.local.skew_s * 1000)),
                                      "nonce set")
        except RedisUnavailable as exc:
            self.local.stats.shared_unavailable += 1
            log.debug("nonce registry in Redis unavailable: this replica's own registry decided", error=str(exc))
            return "fresh"
        if not stored:
            self.local.stats.replayed += 1
            return "replayed"
        return "fresh"

    def status(self) -> dict[str, object]:
        return {"shared": True, **self.local.status()}
