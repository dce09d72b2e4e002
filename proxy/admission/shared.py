"""The budget shared by every replica: GCRA with no burst, decided in Redis by one Lua script.

One key per (AccessKey, action) holds the theoretical arrival time (TAT) of the next free slot, in
microseconds of the **Redis server's** clock (``TIME``), never a replica's. Each decision is one
round trip and three commands (``TIME``, ``GET``, ``SET PX``)::

    slot = max(TAT, now);  wait = slot - now
    if wait > max_wait:  answer "no" with wait          (the caller refuses with an honest Retry-After)
    else:                TAT = slot + T; answer "yes" with wait   (the slot is reserved for the caller)

Consecutive reserved slots are exactly ``T = (1 s + δ) / R`` apart on one clock, whichever replicas
reserve them, so any ``R + 1`` of them span ``1 s + δ``. The replica sleeps ``wait`` (no polling) and
sends; if it wakes later than ``late_guard`` after its slot (a stalled event loop), it does not send on
that slot but asks again, so what reaches the upstream keeps the spacing minus at most the guard.

Keys carry a hash tag on the AccessKey id, so the same code runs on a Redis Cluster. A Redis that
refuses scripts is detected by `probe` at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import RedisError

from proxy.redis_clients import RedisClient

RESERVE_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local slot = math.max(tat, now)
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return {0, wait}
end
redis.call('SET', KEYS[1], string.format('%.0f', slot + interval), 'PX', math.ceil((wait + interval) / 1000) + 1000)
return {1, wait}
"""

#: Commands one admission costs in Redis (documented in docs/architecture.md).
COMMANDS_PER_ADMISSION: Final = 3


class BudgetUnavailable(Exception):
    """Redis did not answer (or refuses scripts): the caller falls back to its local share."""


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool
    wait_s: float


def budget_key(access_key_id: str, action: str) -> str:
    return f"cams:budget:{{{access_key_id}}}:{action}"


class RedisBudget:
    def __init__(self, client: RedisClient, access_key_id: str) -> None:
        self._client = client
        self._access_key_id = access_key_id
        self._script: Any = client.register_script(RESERVE_SCRIPT)

    async def probe(self) -> None:
        """Raise `BudgetUnavailable` if the server cannot run the script (down, or scripts disabled)."""
        try:
            await self._client.script_load(RESERVE_SCRIPT)
        except (RedisError, OSError) as exc:
            raise BudgetUnavailable(f"Redis cannot run the budget script: {exc}") from exc

    async def reserve(self, action: str, interval_s: float, max_wait_s: float) -> Reservation:
        """Reserve the next shared slot for ``action`` if it comes within ``max_wait_s``."""
        interval_us = max(1, math.ceil(interval_s * 1_000_000))
        max_wait_us = max(0, math.floor(max_wait_s * 1_000_000))
        try:
            granted, wait_us = await self._script(keys=[budget_key(self._access_key_id, action)],
                                                  args=[interval_us, max_wait_us])
        except (RedisError, OSError) as exc:
            raise BudgetUnavailable(f"Redis budget unavailable: {type(exc).__name__}: {exc}") from exc
        return Reservation(bool(int(granted)), int(wait_us) / 1_000_000)
