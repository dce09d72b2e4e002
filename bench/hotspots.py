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

#: (label, file suffix, function name): the parts of one request, outermost first.
PARTS: Final = (
    ("event loop busy (every callback run)", "asyncio/events.py", "_run"),
    ("aiohttp: request handling (`RequestHandler._handle_request`)", "aiohttp/web_protocol.py", "_handle_request"),
    ("aiohttp: parsing bytes into requests (`data_received`)", "aiohttp/web_protocol.py", "data_received"),
    ("aiohttp: writing the answer (`finish_response`)", "aiohttp/web_protocol.py", "finish_response"),
    ("gateway middleware + handler (`request_scope`)", "proxy/web/app.py", "request_scope"),
    ("gateway handler (`handle_call`)", "proxy/web/app.py", "handle_call"),
    ("parse + validate the call (`parse_call`)", "proxy/web/calls.py", "parse_call"),
    ("of which `validate`", "proxy/validation.py", "validate"),
    ("of which control-character check (`_has_control`)", "proxy/validation.py", "_has_control"),
    ("of which `parse_qsl`", "urllib/parse.py", "parse_qsl"),
    ("tenant label (`TenantResolver.identify`)", "proxy/tenants.py", "identify"),
    ("cache lookup (`ReadThrough.fetch`)", "proxy/readthrough.py", "fetch"),
    ("of which cache key (`ReadThrough.key_for`, SHA-256)", "proxy/readthrough.py", "key_for"),
    ("of which `MemoryCache.get`", "proxy/cache/memory.py", "get"),
    ("build the response (`render`)", "proxy/web/app.py", "render"),
    ("request id (`request_id_for`, uuid4)", "proxy/web/rendering.py", "request_id_for"),
    ("structlog call for a filtered-out info line", "structlog/_config.py", "__getattr__"),
    ("of which building a logger (`PrintLoggerFactory`)", "structlog/_output.py", "__call__"),
)


@dataclass(frozen=True)
class Part:
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
    requests = 0
    for label, suffix, name in PARTS:
        cumulative, calls = 0.0, 0
        for (filename, _line, function), (_cc, nc, _tt, ct, _callers) in table.items():
            if function == name and filename.endswith(suffix):
                cumulative += ct
                calls += nc
        parts.append(Part(label, cumulative, calls))
        if name == "request_scope":
            requests = calls
    busy = parts[0].cumulative_s
    # Own time of functions called about once per request or more (start-up and imports drop out).
    own = sorted(((fn if f == "~" else f"{Path(f).parent.name}/{Path(f).name}:{fn}", tt)
                  for (f, _l, fn), (_cc, nc, tt, _ct, _c) in table.items()
                  if nc >= requests // 2 and "epoll" not in fn),
                 key=lambda item: -item[1])[:top]
    return Hotspots(requests, busy, parts, [(name, tt / busy if busy else 0.0) for name, tt in own])
