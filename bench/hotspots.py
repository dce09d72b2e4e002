"""Where a gateway cache hit spends its time: a short wrk run against a gateway under ``cProfile``.

cProfile is deterministic and adds a cost to every Python call, so absolute microseconds are inflated
(code made of many small calls more than C-heavy code); the *shares* are what to read. The profile is
taken on its own gateway process, after the hit-path rounds, and never mixed with their numbers.
"""

from __future__ import annotations

import pstats
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: (depth, label, file suffix, function name): the parts of one request; a row includes the deeper rows
#: under it.
PARTS: Final = (
    (0, "event loop busy (every callback run)", "asyncio/events.py", "_run"),
    (1, "aiohttp: parsing bytes into requests (`data_received`)", "aiohttp/web_protocol.py", "data_received"),
    (1, "aiohttp: handling a request (`RequestHandler._handle_request`)", "aiohttp/web_protocol.py",
     "_handle_request"),
    (2, "aiohttp: routing (`UrlDispatcher.resolve`)", "aiohttp/web_urldispatcher.py", "resolve"),
    (2, "gateway call handler (`CallHandler.handle`)", "proxy/web/handler.py", "handle"),
    (3, "request id (`new_request_id`)", "proxy/web/rendering.py", "new_request_id"),
    (3, "tenant label (`header_label`)", "proxy/tenants.py", "header_label"),
    (3, "`MemoryCache.peek`", "proxy/cache/memory.py", "peek"),
    (3, "counting the hit (`ReadThrough.record_hit`)", "proxy/readthrough.py", "record_hit"),
    (3, "reused hit headers (`HitHeaders.lookup`)", "proxy/web/headers.py", "lookup"),
    (3, "rendering hit headers (`HitHeaders.render`, every 50 ms at most)", "proxy/web/headers.py", "render"),
    (3, "`RedisCache.get` (redis-py)", "proxy/cache/redis.py", "get"),
    (3, "full path for new calls (`CallHandler._answer`)", "proxy/web/handler.py", "_answer"),
    (4, "parse + validate (`parse_call`)", "proxy/web/calls.py", "parse_call"),
    (2, "aiohttp: writing the answer (`finish_response`)", "aiohttp/web_protocol.py", "finish_response"),
    (1, "redis-py: running commands (`execute_command`, in the handler or in a task of its own)",
     "redis/asyncio/client.py", "execute_command"),
)


#: A plain function called once per request. Coroutine functions will not do: cProfile counts every
#: resumption of a coroutine as a call, so a handler that awaits Redis shows about two "calls" a request.
COUNTER: Final = ("proxy/web/rendering.py", "new_request_id")


@dataclass(frozen=True)
class Part:
    depth: int
    label: str
    cumulative_s: float
    calls: int


@dataclass(frozen=True)
class Hotspots:
    requests: int
    busy_s: float
    parts: list[Part]
    top_own: list[tuple[str, float]]

    def per_request_us(self, part: Part) -> float:
        return part.cumulative_s / self.requests * 1e6 if self.requests else 0.0

    def share(self, part: Part) -> float:
        return part.cumulative_s / self.busy_s if self.busy_s else 0.0

    def find(self, function: str) -> Part | None:
        return next((p for p in self.parts if function in p.label), None)


def analyse(profile: Path, top: int = 12) -> Hotspots:
    stats = pstats.Stats(str(profile))
    table = stats.stats  # type: ignore[attr-defined]
    parts: list[Part] = []
    for depth, label, suffix, name in PARTS:
        cumulative, calls = 0.0, 0
        for (filename, _line, function), (_cc, nc, _tt, ct, _callers) in table.items():
            if function == name and filename.endswith(suffix):
                cumulative += ct
                calls += nc
        parts.append(Part(depth, label, cumulative, calls))
    counted = [nc for (f, _l, fn), (_cc, nc, _tt, _ct, _c) in table.items() if f.endswith(COUNTER[0])
               and fn == COUNTER[1]]
    requests = sum(counted) or 1
    busy = parts[0].cumulative_s
    # Own time of functions called about once per request or more (start-up and imports drop out).
    own = sorted(((fn if f == "~" else f"{Path(f).parent.name}/{Path(f).name}:{fn}", tt)
                  for (f, _l, fn), (_cc, nc, tt, _ct, _c) in table.items()
                  if nc >= requests // 2 and "epoll" not in fn),
                 key=lambda item: -item[1])[:top]
    return Hotspots(requests, busy, parts, [(name, tt / busy if busy else 0.0) for name, tt in own])
