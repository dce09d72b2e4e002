"""Where a cache hit's time goes: a short wrk run against a memory-cache and a Redis-only gateway under cProfile,
and its section of the report (`bench.hotspots` reads the profiles).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.common import QUICK
from bench.hit import HIT_PATH, TARGET_FLAGS, WRK_CONNECTIONS, WRK_THREADS, warm
from bench.hotspots import Hotspots, analyse
from bench.procs import Proc, Procs
from bench.wrk import WrkResult, run_wrk

PROFILE_SECONDS: Final = 2 if QUICK else 5
#: How long a profiled gateway may take to stop after SIGTERM before it is killed (and its profile lost).
PROFILE_STOP_S: Final = 30.0


@dataclass(frozen=True)
class Profiled:
    spots: Hotspots
    commands: list[str]
    wrk: WrkResult
    #: What went wrong on the way, said in the report (a gateway that had to be killed, its profile lost).
    notes: tuple[str, ...] = ()


def hot_spots(procs: Procs, simulator: Proc, workdir: Path, target: str, redis_url: str | None = None,
              attempts: int = 2) -> Profiled:
    """A gateway under cProfile for `PROFILE_SECONDS` of wrk. cProfile writes its file only when the gateway exits
    on SIGTERM; one that has not exited after `PROFILE_STOP_S` (longer than its default 20 s shutdown grace) gets
    SIGABRT (``PYTHONFAULTHANDLER=1``: its log ends with every thread's Python stack, copied to stderr) and is
    killed, the report says so, and a fresh gateway is profiled, up to ``attempts`` times."""
    notes: list[str] = []
    for attempt in range(1, attempts + 1):
        profile = workdir / f"gateway-{target}-{attempt}.prof"
        gateway = procs.gateway(f"gateway-{target}-cprofile-{attempt}", simulator.url, redis_url=redis_url,
                                extra=TARGET_FLAGS[target], profile_to=profile, env={"PYTHONFAULTHANDLER": "1"})
        warm(gateway)
        result = run_wrk(gateway.url + HIT_PATH, threads=WRK_THREADS, connections=WRK_CONNECTIONS,
                         seconds=PROFILE_SECONDS)
        commands = [gateway.command, result.command]
        if not procs.stop(gateway, timeout=PROFILE_STOP_S):
            notes.append(f"the {target} gateway under cProfile (attempt {attempt}) had not exited "
                         f"{PROFILE_STOP_S:.0f} s after SIGTERM, with no request in flight, and was killed, so its "
                         "profile was lost")
            print(f"--- {gateway.name} did not exit on SIGTERM within {PROFILE_STOP_S:.0f} s; its log (with the "
                  f"Python stacks at SIGABRT):\n{gateway.log_tail(120)}", file=sys.stderr, flush=True)
            continue
        deadline = time.monotonic() + 5
        while not profile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if profile.exists():
            return Profiled(analyse(profile), commands, result, tuple(notes))
        notes.append(f"the {target} gateway under cProfile (attempt {attempt}) exited with "
                     f"{gateway.popen.returncode} and wrote no profile")
    raise RuntimeError(f"no profile of the {target} gateway in {attempts} attempts: " + "; ".join(notes))


def hotspot_section(memory: Profiled, shared: Profiled) -> list[str]:
    lines = [
        "## Where a cache hit's time goes (gateway under cProfile)",
        "",
        f"Two more gateways, memory and Redis-only (`--l1-max-ttl-s 0`), each under `python -m cProfile` for "
        f"{PROFILE_SECONDS} s of the same wrk load ({memory.wrk.requests_per_s:,.0f} and "
        f"{shared.wrk.requests_per_s:,.0f} req/s under the profiler; {memory.spots.requests:,} and "
        f"{shared.spots.requests:,} requests profiled). cProfile charges every Python call, so its microseconds "
        "are inflated; read the shares of the event loop's busy time. Rows nest: a row includes the rows under it "
        "with more dots. The tiered gateway is not profiled: between L1 expiries its hit is the memory cache's.",
        "",
        "| part | memory: µs per request (profiled) | memory: share | Redis-only: µs per request (profiled) | "
        "Redis-only: share |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for mine, theirs in zip(memory.spots.parts, shared.spots.parts, strict=True):
        label = "· " * mine.depth + mine.label
        lines.append(f"| {label} | {memory.spots.per_request_us(mine):,.1f} | {memory.spots.share(mine):.0%} | "
                     f"{shared.spots.per_request_us(theirs):,.1f} | {shared.spots.share(theirs):.0%} |")
    notes = [*memory.notes, *shared.notes]
    if notes:
        lines += ["", "**Profiling did not go cleanly:** " + "; ".join(notes) + ". The figures above come from the "
                  "attempt that exited normally. A gateway that ignores SIGTERM this long is worth a look."]
    for name, profiled in (("memory", memory), ("Redis-only", shared)):
        lines += ["", f"Largest own time, {name} gateway (functions called about once per request or more):", "",
                  "| function | share of busy time |", "| --- | ---: |"]
        lines += [f"| `{function}` | {share:.1%} |" for function, share in profiled.spots.top_own]
    lines.append("")
    return lines

