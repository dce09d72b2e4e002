"""Who shares the budget, and the safe capacity each replica holds: heartbeats that renew leases in Redis.

Each replica runs `Heartbeat.beat` every second while Redis is healthy. One script (Redis ``TIME``) drops the
records whose hold ended, counts the live replicas (renewed within `STALE_S`), records this replica's renewal and
grants it its shares of each cap (the rules, and the guarantee they make together, are in
`proxy.admission.safe_capacity`). Two keys per AccessKey, one hash tag (cluster-safe):

    cams:leases:{ak}   sorted set   replica -> last renewal (Redis ms)
    cams:shares:{ak}   hash         "replica|action" -> share held;  "replica|until" -> hold end (Redis ms)

A renewal carries an accept-by time on Redis's clock (from the replica's estimate of it, `RedisClock`): Redis
ignores one that arrives later, so a renewal delayed in a dead connection's buffers cannot land long after the
replica has started spending locally. Redis failures come out of the one seam as `RedisUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from proxy.admission.safe_capacity import STALE_S, WINDOW_S, LocalLease
from proxy.replica.clock import RedisClock
from proxy.replica.redis_clients import RedisClient, best_effort, redis_call

RENEW_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
if now > tonumber(ARGV[2]) then
  return {-1, t[1], t[2]}
end
local stale_ms, hold_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local fresh, holders = {me}, {}
for i = 1, #members, 2 do
  local r, seen = members[i], tonumber(members[i + 1])
  if r ~= me then
    if tonumber(redis.call('HGET', KEYS[2], r .. '|until') or '0') <= now then
      redis.call('ZREM', KEYS[1], r)
      redis.call('HDEL', KEYS[2], r .. '|until')
      for j = 5, #ARGV, 3 do redis.call('HDEL', KEYS[2], r .. '|' .. ARGV[j]) end
    else
      holders[#holders + 1] = r
      if seen > now - stale_ms then fresh[#fresh + 1] = r end
    end
  end
end
table.sort(fresh)
local rank, n = 0, #fresh
for i, r in ipairs(fresh) do
  if r == me then rank = i - 1 end
end
redis.call('ZADD', KEYS[1], now, me)
redis.call('HSET', KEYS[2], me .. '|until', now + hold_ms)
local out = {n, t[1], t[2]}
for j = 5, #ARGV, 3 do
  local action, cap, belief = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  local others = 0
  for _, r in ipairs(holders) do
    others = others + tonumber(redis.call('HGET', KEYS[2], r .. '|' .. action) or '0')
  end
  local target = math.floor(cap / n)
  if rank < cap % n then target = target + 1 end
  local grant = math.max(0, math.min(target, cap - others))
  redis.call('HSET', KEYS[2], me .. '|' .. action, math.max(grant, belief))
  out[#out + 1] = grant
end
redis.call('PEXPIRE', KEYS[1], hold_ms * 2)
redis.call('PEXPIRE', KEYS[2], hold_ms * 2)
return out
"""

#: Leave: drop this replica's record at once, or (ARGV[2] > 0 ms: it spent locally within the window) keep its
#: shares held back that much longer and mark it stale, so the others do not fill that window at the full cap.
LEAVE_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, keep_ms = ARGV[1], tonumber(ARGV[2])
if keep_ms > 0 then
  redis.call('ZADD', KEYS[1], 0, me)
  redis.call('HSET', KEYS[2], me .. '|until', now + keep_ms)
  return 1
end
redis.call('ZREM', KEYS[1], me)
redis.call('HDEL', KEYS[2], me .. '|until')
for j = 3, #ARGV do redis.call('HDEL', KEYS[2], me .. '|' .. ARGV[j]) end
return 0
"""


def leases_key(access_key_id: str) -> str:
    return f"cams:leases:{{{access_key_id}}}"


def shares_key(access_key_id: str) -> str:
    return f"cams:shares:{{{access_key_id}}}"


class RenewalLate(Exception):
    """Redis read the renewal after its accept-by time and ignored it (nothing was renewed)."""


class Heartbeat:
    def __init__(self, client: RedisClient, access_key_id: str, replica_id: str, caps: Mapping[str, int], *,
                 lease: LocalLease, clock: RedisClock, accept_s: float, now: Callable[[], float]) -> None:
        self._client = client
        self._keys = [leases_key(access_key_id), shares_key(access_key_id)]
        self._replica_id = replica_id
        self._caps = dict(caps)
        self._renew: Any = client.register_script(RENEW_SCRIPT)
        self._leave: Any = client.register_script(LEAVE_SCRIPT)
        self.lease = lease
        self.clock = clock
        #: How late after its send Redis may still accept a renewal (the reply timeout: later, the reply is lost).
        self.accept_s = accept_s
        self._now = now
        self.live = 1
        self.late = 0

    @property
    def replica_id(self) -> str:
        return self._replica_id

    def due(self, now: float) -> bool:
        """A renewal may be sent now (not within a window of a local send; the clock estimate is known)."""
        return self.clock.known and now >= self.lease.renew_after()

    async def beat(self) -> int:
        """Renew this replica's lease; return (and remember) the live count. Raises `RedisUnavailable`, or
        `RenewalLate` (not renewed: Redis read it after its accept-by time)."""
        asked = self._now()
        accept_by_redis = asked + self.clock.offset + self.accept_s
        # On this clock the renewal may land until accept-by plus the estimate's error.
        self.lease.attempt(asked + self.accept_s + self.clock.uncertainty)
        beliefs = self.lease.beliefs(asked)
        args: list[Any] = [self._replica_id, int(accept_by_redis * 1000), int(STALE_S * 1000),
                           int((self.lease.lease_s + WINDOW_S) * 1000)]
        for action, cap in self._caps.items():
            args += [action, cap, beliefs.get(action, 0)]
        reply = await redis_call(self._renew(keys=self._keys, args=args), "heartbeat")
        replied = self._now()
        self.clock.observe(asked, replied, int(reply[1]) + int(reply[2]) / 1_000_000)
        if int(reply[0]) < 0:
            self.late += 1
            raise RenewalLate(f"Redis read the lease renewal {replied - asked:.3f}s after it was sent, past its "
                              f"accept-by time ({self.accept_s:.2f}s): not renewed")
        self.live = max(1, int(reply[0]))
        self.lease.renewed(asked, {action: int(grant) for action, grant in zip(self._caps, reply[3:], strict=True)})
        return self.live

    async def leave(self) -> None:
        """Best effort (if Redis fails, the record's hold ends on its own): drop this replica's record, or keep its
        shares held back for the rest of the window after its last local send."""
        keep_s = max(0.0, self.lease.renew_after() - self._now())
        await best_effort(self._leave(keys=self._keys, args=[self._replica_id, int(keep_s * 1000), *self._caps]),
                          "heartbeat leave")
