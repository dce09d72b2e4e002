"""Refresh-ahead under a steady Zipf workload: the hit ratio after warm-up, TTL window by TTL window.

The simulator holds T templates in one space; one gateway (memory cache, default refresh-ahead 10 %,
stale-while-revalidate 60 s, deadline 10 s, queue bound 200) sits in front of it with the template TTL under
test. An open-loop client sends GetChatappTemplateDetail at R requests/s on a fixed schedule (request i
leaves at start + i/R whether or not earlier ones were answered), the template drawn from a Zipf law
(s = 1.0, rank r with probability ∝ 1/r, fixed seed). Every answer's ``X-Cache`` is recorded.

Warm-up: the first pass of misses, at the template cap (5/s), until the gateway's cache holds all T
templates (``/admin/status`` ``cache.entries``, polled each second) or a time limit (2 T/5 s + 30 s). Then
K windows of one TTL each. Per window (requests counted by when they were sent): requests, HIT, STALE,
MISS + COALESCED, errors (non-200 or no answer), hit ratio = (HIT + STALE) / all, fresh-hit ratio =
HIT / all; the simulator's calls, throttled and ``max_in_any_1s`` (read, then reset, at each boundary);
the gateway's counters (``refreshes``, ``refreshes_skipped``, ``refresh_failures``, from ``/admin/status``).
Target: hit ratio ≥ 99 % in every window after warm-up, and 0 throttled over the whole run.

    python -m bench.refresh                                  # T=1,000, R=200/s, TTL 300 s (default), K=2: ~14 min
    BENCH_REFRESH_TTL=60 BENCH_REFRESH_TTLS=3 python -m bench.refresh
    BENCH_QUICK=1 python -m bench.refresh                    # T=100, R=40/s, TTL 30 s: ~2 min
"""

from __future__ import annotations

import asyncio
import bisect
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from bench.common import (
    ADMIN_TOKEN,
    QUICK,
    TEMPLATE,
    child_env,
    percentile,
    put_fixtures,
    sim_reset,
    sim_stats,
    templates_document,
    verdict,
)
from bench.procs import Proc, Procs

DEFAULT_TTL_S: Final = 300  # the documented default for templates (README, --ttl)
TTL_S: Final = int(os.environ.get("BENCH_REFRESH_TTL") or (30 if QUICK else DEFAULT_TTL_S))
WINDOWS: Final = int(os.environ.get("BENCH_REFRESH_TTLS") or 2)
TEMPLATES: Final = 100 if QUICK else 1000
RATE: Final = 40 if QUICK else 200
ZIPF_S: Final = 1.0
SEED: Final = 20261123
SPACE: Final = "77000000000001"
CAP: Final = 5
TARGET_HIT_RATIO: Final = 0.99
COUNTERS: Final = ("refreshes", "refreshes_skipped", "refresh_failures", "hits", "stale_served", "misses",
                   "coalesced", "upstream_calls")


def warmup_limit_s() -> float:
    return 2 * TEMPLATES / CAP + 30


def zipf_cumulative(count: int, s: float) -> list[float]:
    total = 0.0
    cumulative = []
    for rank in range(1, count + 1):
        total += 1.0 / rank ** s
        cumulative.append(total)
    return cumulative


@dataclass(frozen=True)
class Sample:
    offset: float  # scheduled send time, seconds after the start
    rank: int
    cache: str  # X-Cache, or "ERROR" for a non-200 answer or no answer
    latency: float


@dataclass
class Window:
    name: str
    start_s: float
    end_s: float
    requests: int = 0
    hit: int = 0
    stale: int = 0
    miss: int = 0
    errors: int = 0
    p99_s: float = 0.0
    calls: int = 0
    throttled: int = 0
    max_in_any_1s: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def hit_ratio(self) -> float:
        return (self.hit + self.stale) / self.requests if self.requests else 0.0

    @property
    def fresh_ratio(self) -> float:
        return self.hit / self.requests if self.requests else 0.0


@dataclass
class RefreshResult:
    ttl_s: int
    templates: int
    rate: int
    warmup_s: float
    warmup_reason: str
    warmup: Window
    windows: list[Window]
    late_sends: int
    max_lateness_s: float
    commands: list[str]

    @property
    def throttled(self) -> int:
        return self.warmup.throttled + sum(w.throttled for w in self.windows)

    @property
    def met(self) -> bool:
        return bool(self.windows) and all(w.hit_ratio >= TARGET_HIT_RATIO for w in self.windows) \
            and self.throttled == 0


class _Run:
    """The open-loop client and the boundary bookkeeping of one run."""

    def __init__(self, gateway: Proc, simulator: Proc) -> None:
        self.gateway = gateway
        self.simulator = simulator
        self.samples: list[Sample] = []
        self.cumulative = zipf_cumulative(TEMPLATES, ZIPF_S)
        self.rng = random.Random(SEED)
        self.stop = asyncio.Event()
        self.late_sends = 0
        self.max_lateness = 0.0

    async def _one(self, session: aiohttp.ClientSession, offset: float, rank: int) -> None:
        params = {"CustSpaceId": SPACE, "Language": "en_US", "TemplateCode": f"{rank - 1:032x}"}
        sent = time.monotonic()
        try:
            async with session.get(f"{self.gateway.url}/v1/{TEMPLATE}", params=params) as response:
                await response.read()
                cache = response.headers.get("X-Cache", "-") if response.status == 200 else "ERROR"
        except (aiohttp.ClientError, TimeoutError):
            cache = "ERROR"
        self.samples.append(Sample(offset, rank, cache, time.monotonic() - sent))

    async def load(self, session: aiohttp.ClientSession, began: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        index = 0
        while not self.stop.is_set():
            due = began + index / RATE
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > 0.010:
                self.late_sends += 1
                self.max_lateness = max(self.max_lateness, -delay)
            rank = bisect.bisect_left(self.cumulative, self.rng.random() * self.cumulative[-1]) + 1
            task = asyncio.create_task(self._one(session, due - began, min(rank, TEMPLATES)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
        if tasks:
            await asyncio.wait(tasks)  # every request gets its answer (or its deadline's error)

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.gateway.url}/admin/status",
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            response.raise_for_status()
            document: dict[str, Any] = await response.json()
            return document

    async def boundary(self, session: aiohttp.ClientSession) -> tuple[dict[str, Any], dict[str, int]]:
        """The simulator's counters since the last boundary (then reset) and the gateway's counters now."""
        stats = await asyncio.to_thread(sim_stats, self.simulator, TEMPLATE)
        await asyncio.to_thread(sim_reset, self.simulator)
        counters = (await self.status(session))["counters"]
        return stats, {name: int(counters.get(name, 0)) for name in COUNTERS}


def _fill(window: Window, samples: list[Sample], stats: dict[str, Any], before: dict[str, int],
          after: dict[str, int]) -> Window:
    mine = [s for s in samples if window.start_s <= s.offset < window.end_s]
    window.requests = len(mine)
    window.hit = sum(1 for s in mine if s.cache == "HIT")
    window.stale = sum(1 for s in mine if s.cache == "STALE")
    window.miss = sum(1 for s in mine if s.cache in {"MISS", "COALESCED"})
    window.errors = window.requests - window.hit - window.stale - window.miss
    window.p99_s = percentile([s.latency for s in mine], 99)
    window.calls, window.throttled = int(stats["calls"]), int(stats["throttled"])
    window.max_in_any_1s = int(stats["max_in_any_1s"])
    window.counters = {name: after[name] - before[name] for name in COUNTERS}
    return window


async def _measure(gateway: Proc, simulator: Proc) -> RefreshResult:
    run = _Run(gateway, simulator)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        _, start_counters = await run.boundary(session)
        began = time.monotonic()
        load = asyncio.create_task(run.load(session, began))
        reason = f"time limit ({warmup_limit_s():.0f} s) reached"
        while time.monotonic() - began < warmup_limit_s():
            await asyncio.sleep(1.0)
            entries = int((await run.status(session))["cache"].get("entries", 0))
            if entries >= TEMPLATES:
                reason = f"all {TEMPLATES:,} templates cached"
                break
        warmup_s = time.monotonic() - began
        warm_stats, counters = await run.boundary(session)
        boundaries = [(warm_stats, start_counters, counters)]
        print(f"  warm-up over after {warmup_s:.0f} s: {reason}", file=sys.stderr, flush=True)
        for number in range(1, WINDOWS + 1):
            await asyncio.sleep(max(0.0, began + warmup_s + number * TTL_S - time.monotonic()))
            if number == WINDOWS:
                run.stop.set()
            stats, now = await run.boundary(session)
            boundaries.append((stats, counters, now))
            counters = now
            print(f"  TTL window {number}/{WINDOWS} over", file=sys.stderr, flush=True)
        await load
    samples = run.samples
    warmup = _fill(Window("warm-up", 0.0, warmup_s), samples, *boundaries[0])
    windows = [_fill(Window(f"TTL {n}", warmup_s + (n - 1) * TTL_S, warmup_s + n * TTL_S), samples, *boundaries[n])
               for n in range(1, WINDOWS + 1)]
    return RefreshResult(TTL_S, TEMPLATES, RATE, warmup_s, reason, warmup, windows, run.late_sends,
                         run.max_lateness, [])


def run_refresh(procs: Procs, workdir: Path) -> RefreshResult:
    simulator = procs.simulator("simulator-refresh")
    put_fixtures(simulator, templates_document(TEMPLATES, SPACE))
    extra = () if TTL_S == DEFAULT_TTL_S else ("--ttl", f"{TEMPLATE}={TTL_S}")
    with child_env(PROXY_ADMIN_TOKEN=ADMIN_TOKEN):
        gateway = procs.gateway("gateway-refresh", simulator.url, extra=extra)
    gateway.env["PROXY_ADMIN_TOKEN"] = ADMIN_TOKEN  # so its command line shows it
    sim_reset(simulator)
    result = asyncio.run(_measure(gateway, simulator))
    result.commands = [simulator.command, gateway.command]
    procs.stop(gateway)
    procs.stop(simulator)
    return result


def _row(w: Window) -> str:
    c = w.counters
    return (f"| {w.name} | {w.end_s - w.start_s:,.0f} s | {w.requests:,} | {w.hit:,} | {w.stale:,} | {w.miss:,} | "
            f"{w.errors:,} | {w.hit_ratio:.2%} | {w.fresh_ratio:.2%} | {w.p99_s * 1000:,.0f} ms | {w.calls} | "
            f"{w.throttled} | {w.max_in_any_1s} | {c['refreshes']} | {c['refreshes_skipped']} | "
            f"{c['refresh_failures']} |")


def section(result: RefreshResult) -> list[str]:
    windows = result.windows
    worst = min(windows, key=lambda w: w.hit_ratio) if windows else None
    lines = [
        "## Refresh-ahead: hit ratio under a steady Zipf load",
        "",
        f"The simulator (80 ± 20 ms) holds {result.templates:,} templates in one space; one memory-cache gateway "
        f"runs on default flags (refresh-ahead 10 % of the TTL, at least 1 s and at most 30 s before expiry; "
        f"stale-while-revalidate 60 s; deadline 10 s) with a template TTL of {result.ttl_s} s"
        + (" (the documented default)" if result.ttl_s == DEFAULT_TTL_S else f" (`--ttl {TEMPLATE}={result.ttl_s}`)")
        + f". An open-loop client sends `{TEMPLATE}` at {result.rate} requests/s on a fixed schedule, the template "
        f"drawn from a Zipf law (s = {ZIPF_S}, fixed seed {SEED}): the most requested template gets "
        f"{1 / zipf_cumulative(result.templates, ZIPF_S)[-1]:.1%} of the requests, the least "
        f"{1 / result.templates / zipf_cumulative(result.templates, ZIPF_S)[-1]:.3%} "
        f"({result.rate * result.ttl_s / result.templates / zipf_cumulative(result.templates, ZIPF_S)[-1]:.1f} "
        "requests per TTL).",
        "",
        f"Warm-up is the first pass of misses at the template cap ({CAP}/s; when the TTL is shorter than the "
        f"warm-up, refreshes of the first keys share those slots): it ended after "
        f"{result.warmup_s:,.0f} s ({result.warmup_reason}). Then {len(windows)} windows of one TTL each; requests "
        "belong to the window they were sent in. Hit ratio = (HIT + STALE) / requests; fresh = HIT / requests. "
        "Simulator counters are read and reset at each boundary (a call landing between the read and the reset, "
        "a few ms, would be missed); refresh counters are the growth of the gateway's `/admin/status` counters. "
        f"Target: hit ratio ≥ {TARGET_HIT_RATIO:.0%} in every window after warm-up, 0 throttled over the run.",
        "",
    ]
    if worst is not None:
        lines += [
            f"**Lowest hit ratio after warm-up: {worst.hit_ratio:.2%}** ({worst.name}; fresh hits "
            f"{worst.fresh_ratio:.2%}); throttled over the whole run: {result.throttled}. Target "
            f"(≥ {TARGET_HIT_RATIO:.0%}, 0 throttled): {verdict(result.met)}.",
            "",
        ]
    lines += [
        "| window | length | requests | HIT | STALE | MISS + COALESCED | errors | hit ratio | fresh-hit ratio | "
        "p99 latency | upstream calls | throttled | max in any 1 s | refreshes | refreshes skipped | "
        "refresh failures |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: |",
        _row(result.warmup),
        *(_row(w) for w in windows),
        "",
        "The warm-up row is shown for context; the target applies to the TTL windows. "
        + (f"The client sent {result.late_sends:,} requests more than 10 ms behind schedule (at most "
           f"{result.max_lateness_s * 1000:,.0f} ms)." if result.late_sends else
           "The client kept its schedule (no request left more than 10 ms late)."),
        "",
        "```sh",
        *result.commands,
        f"# then PUT /__sim/fixtures ({result.templates:,} templates) on the simulator; the load comes from "
        "bench/refresh.py's own aiohttp client (python -m bench.refresh)",
        "```",
        "",
    ]
    return lines


def main() -> None:
    total = warmup_limit_s() / 2 + WINDOWS * TTL_S
    print(f"refresh-ahead: {TEMPLATES:,} templates, {RATE}/s, TTL {TTL_S} s, warm-up + {WINDOWS} TTLs "
          f"(about {total / 60:.0f} min) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="cams-bench-refresh-") as tmp, Procs(Path(tmp)) as procs:
        result = run_refresh(procs, Path(tmp))
    print("\n".join(section(result)))


if __name__ == "__main__":
    main()
