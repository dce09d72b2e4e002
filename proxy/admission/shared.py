"""The budget shared by every replica: GCRA with no burst, decided in Redis by one Lua script.

One key per (AccessKey, action) holds the theoretical arrival time (TAT) of the next free slot, in
microseconds of the **Redis server's** clock (``TIME``), never a replica's. Each decision is one
round trip and six commands (``TIME``, ``GET`` ×2, ``SET PX`` ×2, ``ZRANGEBYSCORE``; two ``HGET`` more per
replica that is cut from Redis)::

    T = max(T asked, widest T asked in the last 10 s)
    slot = max(TAT, now + lead);  wait = slot - now
    if wait > max_wait:  answer "no" with wait          (the caller refuses with an honest Retry-After)
    else:                TAT = slot + T; answer "yes" with wait   (the slot is reserved for the caller)
    every answer also carries ``now`` (Redis TIME): the slot is the moment ``now + wait`` on Redis's clock

Safe capacity (`proxy.admission.safe_capacity`): the shares of lease holders whose renewals stopped (the last
older than `STALE_S`) and whose hold has not ended are held back: the slot spacing is ``T × cap / (cap − held)``,
and no shared slot is given while they hold the whole cap (the caller's own share is not held back from
itself: after local sends it takes no shared slot for a window). Those keys share the budget key's hash tag.

Replicas measure their own margin δ (`proxy.admission.margin`), so they may ask with different ``T``: the
script spaces every slot by the widest ``T`` any replica asked with in the last `WIDEST_MEMORY_S` (a second
key, refreshed by every request that asks with it), so one replica that sees a jittery path or a throttle
widens the spacing for all, and it narrows again 10 s after the last replica asked that wide. A replica still
learning its path (`AdaptiveMargin.learned` false) asks with the ceiling's ``T`` but does not refresh that key:
its own slots are spaced that wide after them, and a guess does not slow every replica for 10 s. (Replicas
share the upstream path, so what the others measured covers a newcomer's arrivals too; when all are learning,
every slot is spaced by the ceiling.)

Consecutive reserved slots are then at least ``T = (1 s + δ) / R`` apart on one clock, whichever replicas
reserve them, so any ``R + 1`` of them span ``1 s + δ``. The replica turns the slot into a local moment
with its estimate of Redis's clock (`proxy.replica.clock`), so the jitter of each reply does not
move it; ``lead`` (the slowest recent round trip) makes the reply arrive before the slot. A reply that
arrives after its slot, or a replica that wakes later than ``late_guard`` after it, does not send on that
slot but asks again, so what reaches the upstream keeps the spacing minus at most the guard.

Keys carry a hash tag on the AccessKey id, so the same code runs on a Redis Cluster. A Redis that
refuses scripts is detected by `probe` at start-up. Every Redis failure (down, slow, no cluster node
reachable, scripts refused) is raised as `BudgetUnavailable`, a `RedisUnavailable`, through the one seam
(`proxy.replica.redis_clients.redis_call`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from proxy.admission.safe_capacity import STALE_S
from proxy.replica.heartbeat import leases_key, shares_key
from proxy.replica.redis_clients import RedisClient, RedisUnavailable, redis_call

RESERVE_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local widest = tonumber(redis.call('GET', KEYS[2]) or '0')
if interval >= widest then
  if ARGV[9] ~= '1' then
    redis.call('SET', KEYS[2], string.format('%.0f', interval), 'PX', tonumber(ARGV[4]))
  end
else
  interval = widest
end
local cap, now_ms, held = tonumber(ARGV[5]), math.floor(now / 1000), 0
for _, r in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now_ms - tonumber(ARGV[7])))) do
  if r ~= ARGV[8] and tonumber(redis.call('HGET', KEYS[4], r .. '|until') or '0') > now_ms then
    held = held + tonumber(redis.call('HGET', KEYS[4], r .. '|' .. ARGV[6]) or '0')
  end
end
if held >= cap then
  return {0, 1000000, t[1], t[2], held}
end
interval = interval * cap / (cap - held)
local slot = math.max(tat, now + tonumber(ARGV[3] or '0'))
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return {0, wait, t[1], t[2], held}
end
redis.call('SET', KEYS[1], string.format('%.0f', slot + interval), 'PX', math.ceil((wait + interval) / 1000) + 1000)
return {1, wait, t[1], t[2], held}
"""

#: A clock sample: Redis's TIME (seconds, microseconds).
TIME_SCRIPT: Final = "return redis.call('TIME')"

#: Commands one admission costs in Redis (documented in docs/architecture.md).
COMMANDS_PER_ADMISSION: Final = 6
#: How long the widest spacing asked for stays in force after its last request, seconds.
WIDEST_MEMORY_S: Final = 10.0


class BudgetUnavailable(RedisUnavailable):
    """Redis did not answer (or refuses scripts): the caller falls back to its local share."""


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool
    #: From Redis's now to the slot (or, refused, to the next free slot), seconds.
    wait_s: float
    #: Redis's TIME when it decided, seconds since the epoch: the slot is at ``redis_now + wait_s`` on Redis's clock.
    redis_now: float = 0.0
    #: Calls per second held back for replicas that may be spending their safe capacity without Redis.
    held_back: int = 0

    @property
    def slot(self) -> float:
        return self.redis_now + self.wait_s


def budget_key(access_key_id: str, action: str) -> str:
    return f"cams:budget:{{{access_key_id}}}:{action}"


def widest_key(access_key_id: str, action: str) -> str:
    """The widest spacing asked for recently (same hash tag as the budget key: one cluster slot)."""
    return f"cams:budget:{{{access_key_id}}}:{action}:widest"


class RedisBudget:
    def __init__(self, client: RedisClient, access_key_id: str) -> None:
        self._client = client
        self._access_key_id = access_key_id
        self._script: Any = client.register_script(RESERVE_SCRIPT)
        self._time: Any = client.register_script(TIME_SCRIPT)

    async def probe(self) -> None:
        """Raise `BudgetUnavailable` if the server cannot run the script (down, or scripts disabled)."""
        await redis_call(self._client.script_load(RESERVE_SCRIPT), "budget script load (scripts disabled?)",
                         into=BudgetUnavailable)

    async def reserve(self, action: str, interval_s: float, max_wait_s: float, lead_s: float = 0.0, *,
                      cap: int, replica: str = "", learning: bool = False) -> Reservation:
        """Reserve the next shared slot for ``action`` if it comes within ``max_wait_s``, and no sooner than
        ``lead_s`` after Redis's now (so the reply can arrive before the slot); spaced for what of ``cap`` is not
        held back for replicas cut from Redis (other than ``replica``, the caller: it keeps its own local sends
        and shared slots apart in time). A ``learning`` caller's interval is not remembered as the widest."""
        interval_us = max(1, math.ceil(interval_s * 1_000_000))
        max_wait_us = max(0, math.floor(max_wait_s * 1_000_000))
        lead_us = max(0, math.ceil(lead_s * 1_000_000))
        ak = self._access_key_id
        granted, wait_us, seconds, micros, held = await redis_call(
            self._script(keys=[budget_key(ak, action), widest_key(ak, action), leases_key(ak), shares_key(ak)],
                         args=[interval_us, max_wait_us, lead_us, int(WIDEST_MEMORY_S * 1000), cap, action,
                               int(STALE_S * 1000), replica, "1" if learning else "0"]),
            "budget reserve", into=BudgetUnavailable)
        return Reservation(bool(int(granted)), int(wait_us) / 1_000_000, int(seconds) + int(micros) / 1_000_000,
                           int(held))

    async def redis_time(self) -> float:
        """Redis's TIME in seconds (a clock sample, routed like the budget key so a cluster asks its node)."""
        seconds, micros = await redis_call(self._time(keys=[budget_key(self._access_key_id, "clock")]),
                                           "budget clock", into=BudgetUnavailable)
        return int(seconds) + int(micros) / 1_000_000
