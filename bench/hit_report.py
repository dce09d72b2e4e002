"""The "Cache-hit path" section of the report: the targets' table with their ratios and targets, the comparisons
under it (the access log's cost, uvloop's gain, workers against bare processes), every round, and the checks.
"""

from __future__ import annotations

import statistics
from typing import Final

from bench.hit import (
    LABELS,
    MULTI_PROCESS,
    REDIS_TARGETS,
    ROUND_SECONDS,
    ROUNDS,
    STRETCH_RATIOS,
    TARGET_RATIOS,
    TARGETS,
    WARMUP_SECONDS,
    WORKERS,
    WRK_CONNECTIONS,
    WRK_THREADS,
    HitRun,
)

#: A round where everything else on the machine took this share of a core or more is flagged in the report.
BUSY_MACHINE: Final = 0.25
#: Bare aiohttp's CPU per request varying by this factor across rounds is flagged: the machine's speed changed.
SLOWER_MACHINE: Final = 1.3


def _fmt_ms(value: float) -> str:
    return f"{value:.2f} ms"


def _met(met: bool | None) -> str:
    return "—" if met is None else "yes" if met else "**no**"


def _target(target: str) -> str:
    wanted = TARGET_RATIOS.get(target)
    stretch = STRETCH_RATIOS.get(target)
    return "—" if wanted is None else f"≥ {wanted}x" + (f" (stretch {stretch}x)" if stretch else "")


def _others(run: HitRun) -> str:
    """One sentence on how much else the machine was doing during the rounds, with a plain warning when much."""
    others = [m.other_cpu_share for m in run.all_measured()]
    steal = [m.steal_share for m in run.all_measured()]
    text = (f"Everything else used a median of {statistics.median(others):.0%} of a core during the rounds "
            f"(most {max(others):.0%}), steal a median of {statistics.median(steal):.0%} (most {max(steal):.0%})")
    if max(others) >= BUSY_MACHINE or max(steal) >= BUSY_MACHINE:
        text += (f"; **other work shared the machine in some rounds** (≥ {BUSY_MACHINE:.0%} of a core), so read "
                 "those rounds' figures with care")
    # Work this VM cannot see (other guests on the host) shows neither here nor always as steal, but it slows the
    # same work down: bare aiohttp does the same work every round, so its CPU per request gauges the machine.
    gauge = [m.server_us_per_request for m in run.samples("bare")]
    text += (f". Bare aiohttp's CPU per request, the same work in every round, ranged {min(gauge):.0f}–"
             f"{max(gauge):.0f} µs")
    if max(gauge) >= SLOWER_MACHINE * min(gauge):
        text += (f": **the machine itself ran up to {max(gauge) / min(gauge):.1f}× slower in some rounds** than in "
                 "others (work outside this VM, or CPU frequency); ratios compare targets within a round, but "
                 "absolute figures and the rounds' spread suffer; this is why each gateway run is paired with the "
                 "bare runs just before and after it")
    return text + "."


def comparisons(run: HitRun) -> list[str]:
    """What the side-by-side targets say: the access log's cost, uvloop's gain, workers against bare processes."""
    r = run.ratio
    stretch = STRETCH_RATIOS["memory"]
    return [
        f"- **Shipped defaults**: the memory cache at `--log-level info` with its access log on uvloop is "
        f"{r('memory'):.3f}× bare aiohttp (target ≥ {TARGET_RATIOS['memory']}×: "
        f"{'met' if run.met('memory') else '**not met**'}; stretch {stretch}×: "
        f"{'met' if r('memory') >= stretch else '**not met**'}); tiered {r('tiered'):.3f}×.",
        f"- **The access log** (info against warning, both on uvloop): {r('memory') / r('memory-warning'):.3f}× the "
        f"rate without it; on asyncio {r('memory-asyncio') / r('memory-warning-asyncio'):.3f}×.",
        f"- **uvloop** against asyncio: {r('memory') / r('memory-asyncio'):.3f}× at info, "
        f"{r('memory-warning') / r('memory-warning-asyncio'):.3f}× at warning; tiered at the shipped defaults "
        f"{r('tiered') / r('tiered-warning-asyncio'):.3f}× tiered at warning on asyncio (the benchmark's former "
        "configuration).",
        f"- **`--workers {WORKERS}` against {WORKERS} bare processes** on one port: "
        f"{r('workers2') / r('bare2'):.3f}× ({r('workers2'):.3f}× and {r('bare2'):.3f}× one bare process).",
    ]


def hit_section(run: HitRun) -> list[str]:
    wrk_share = statistics.median(m.wrk_cpu_share for m in run.all_measured())
    single = max(run.median(t, "server_cpu_share") + run.median(t, "wrk_cpu_share") + run.median(t, "redis_cpu_share")
                 for t in TARGETS if t not in MULTI_PROCESS)
    workers = run.median("workers2", "server_cpu_share") + run.median("workers2", "wrk_cpu_share")
    lines = [
        "## Cache-hit path",
        "",
        f"wrk, {WRK_THREADS} thread and {WRK_CONNECTIONS} connections for every target, runs of {ROUND_SECONDS} s "
        f"after a {WARMUP_SECONDS} s warm-up of each target. Bare aiohttp runs first, then {ROUNDS} rounds in which "
        "each gateway target runs once (in a rotating order) and every gateway run is followed by a bare aiohttp "
        "run. A gateway run's ratio is its req/s over the mean of the bare runs just before and just after it "
        "(seconds apart), so the machine's drift over the minutes of the benchmark cancels out; the ratio column "
        "is the median of those paired ratios, the per-round column lists them. The other columns are medians "
        "over the runs, each column on its own (bare aiohttp: all its runs). Every request is a cache hit of one "
        f"{run.body_bytes:,}-byte "
        "template answer. Median ratios have three decimals, so one just under its target does not read as met. "
        "The tiered gateway runs on default flags (`--l1-max-ttl-s 10`: an L1 entry lives at most "
        "10 s, then one hit reads Redis again); the Redis-only one has `--l1-max-ttl-s 0`, so every hit reads "
        f"Redis; the `--workers {WORKERS}` one is a supervisor and {WORKERS} worker processes on one port "
        "(`SO_REUSEPORT`), each with its own memory cache, warmed until both answered hits.",
        "",
        "Server CPU is the serving processes' user + system time during the run (`/proc/PID/stat`; for "
        f"`--workers {WORKERS}` the supervisor and its workers, found by parent pid) divided by the requests wrk "
        "completed; for the Redis targets redis-server's own CPU is shown after the `+`. Redis commands per request "
        "are the growth of redis-server's `total_commands_processed` over the run (the idle traffic of the other "
        "Redis gateway, heartbeats and pub/sub included) divided by the requests. CPU busy is CPU time over the "
        "run's length as a share of one core: the server (all its processes), wrk (`getrusage` of the reaped wrk) "
        "and redis-server. \"Everything else\" in the rounds table is the machine's user + system time "
        "(`/proc/stat`, all cores) less those three: other work on this shared machine, the idle gateways and this "
        "script; \"steal\" is time the hypervisor gave to other guests. " + _others(run),
        "",
        f"**wrk competes with the servers for the machine's 2 cores.** Its one thread was busy {wrk_share:.0%} of a "
        "core (median over all runs; the loopback traffic's kernel work is charged to whichever process is running, "
        "wrk or server). With a single-process server the server, wrk and redis-server used at most "
        f"{single:.0%} of the 200% two cores offer, so there a single-threaded server is the limit, as its busy "
        f"column shows. With `--workers {WORKERS}` the workers and wrk together used {workers:.0%}: the two cores "
        f"are full, and wrk's share is CPU the workers cannot have, so `--workers {WORKERS}` cannot reach "
        f"{WORKERS}× here. Its row says what {WORKERS} workers get out of this machine next to the load generator, "
        "not how workers scale on a machine with cores to spare. A second wrk thread would only take more CPU from "
        "the servers, so the settings stay the same for every target.",
        "",
        "| target | req/s (median) | p50 | p99 | ratio to bare aiohttp | target | met | ratio per round | "
        "server CPU per request | Redis commands per request | CPU busy: server / wrk / redis-server |",
        "| --- | ---: | ---: | ---: | ---: | ---: | :---: | --- | ---: | ---: | ---: |",
    ]
    for target in TARGETS:
        per_round = ", ".join(f"{r:.2f}" for r in run.round_ratios(target)) or "—"
        cpu = f"{run.median(target, 'server_us_per_request'):.0f} µs"
        busy = f"{run.median(target, 'server_cpu_share'):.0%} / {run.median(target, 'wrk_cpu_share'):.0%}"
        commands = "—"
        if target in REDIS_TARGETS:
            cpu += f" + {run.median(target, 'redis_us_per_request'):.0f} µs"
            busy += f" / {run.median(target, 'redis_cpu_share'):.0%}"
            commands = f"{run.median(target, 'redis_commands_per_request'):.3f}"
        lines.append(f"| {LABELS[target]} | {run.median(target, 'requests_per_s'):,.0f} | "
                     f"{_fmt_ms(run.median(target, 'p50_ms'))} | {_fmt_ms(run.median(target, 'p99_ms'))} | "
                     f"{run.ratio(target):.3f}x | {_target(target)} | {_met(run.met(target))} | {per_round} | "
                     f"{cpu} | {commands} | {busy} |")
    lines += ["", *comparisons(run), "", "Every round:", "",
              "| round | target | req/s | ratio to the bare runs before and after | p50 | p99 | requests | non-2xx | "
              "socket errors | server CPU per request | CPU busy: server / wrk | everything else / steal |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    numbered = [(0, "bare", run.opening), *((n, t, m) for n, r in enumerate(run.rounds, 1) for t, m in r)]
    for (number, target, m), ratio in zip(numbered, run.paired_ratios(), strict=True):
        res = m.wrk
        lines.append(f"| {number} | {target} | {res.requests_per_s:,.0f} | "
                     f"{'—' if ratio is None else f'{ratio:.2f}'} | {_fmt_ms(res.p50_ms)} | "
                     f"{_fmt_ms(res.p99_ms)} | {res.requests:,} | {res.non_2xx} | {res.socket_errors} | "
                     f"{m.server_us_per_request:.0f} µs | {m.server_cpu_share:.0%} / {m.wrk_cpu_share:.0%} | "
                     f"{m.other_cpu_share:.0%} / {m.steal_share:.0%} |")
    lines += ["", "Checks: " + "; ".join(run.checks) + ".", ""]
    return lines

