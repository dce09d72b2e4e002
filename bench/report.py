"""The report `make bench` writes (``docs/benchmarks.md``) and the summary it prints: the machine table, the
"Reading" section (what the figures say), each part's section in order, the commands, and warnings at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bench import adaptive, scale, wan
from bench.common import QUICK
from bench.hit import LABELS, TARGET_RATIOS, TARGETS, WORKERS, HitRun
from bench.hit_profile import Profiled, hotspot_section
from bench.hit_report import hit_section
from bench.machine import Source, machine, source_row
from bench.miss import MissRun
from bench.miss_path import miss_section
from bench.signing import SigningResult
from bench.signing import section as signing_section


def reading(run: HitRun, profiles: dict[str, Profiled], single: MissRun, replicas: MissRun,
            wan_runs: Sequence[MissRun], jittery: MissRun) -> list[str]:
    spots = profiles["memory"].spots
    redis_py = profiles["redis-only"].spots.find("execute_command")
    redis_only_commands = run.median("redis-only", "redis_commands_per_request")
    bare_rps = run.median("bare", "requests_per_s")

    def us(target: str) -> float:
        return run.median(target, "server_us_per_request")

    def busy(target: str) -> float:
        return run.median(target, "server_cpu_share")

    def verdict(target: str) -> str:
        wanted = TARGET_RATIOS.get(target)
        if wanted is None:
            return "no target"
        return f"target ≥ {wanted}×: " + ("met" if run.met(target) else "**not met**")

    single_busy = min(busy("bare"), busy("memory"))
    bound = (f"Bare aiohttp and the memory-cache gateway are single-threaded and were busy {min(single_busy, 1.0):.0%} "
             "of the time under load, so CPU per request is what sets their rate" if single_busy >= 0.85 else
             f"Bare aiohttp and the memory-cache gateway were busy only {single_busy:.0%} of the run, so the load "
             "generator or the machine, not only the server, limited these numbers")

    def share(fragment: str) -> str | None:
        part = spots.find(fragment)
        return f"{spots.share(part):.0%}" if part and part.calls else None

    def clause(fragment: str, text: str) -> str | None:
        found = share(fragment)
        return f"{text} {found}" if found else None

    inner = [c for c in (
        clause("header_label", "the tenant label"),
        clause("MemoryCache.peek", "the memory-cache lookup"),
        clause("record_hit", "counting the hit"),
        clause("HitHeaders.lookup", "finding the entry's rendered headers"),
        clause("HitHeaders.render", "rendering them (at most every 50 ms)"),
        clause("new_request_id", "the request id"),
        clause("parse_call", "parsing and validating new calls"),
    ) if c]
    listing = "; ".join(f"{LABELS[t]} **{run.ratio(t):.3f}×** ({run.median(t, 'requests_per_s'):,.0f} req/s, "
                        f"{verdict(t)})" for t in TARGETS[1:])
    memory_us, bare_us = us("memory"), us("bare")
    hit = (
        f"**Hit path.** Against one bare aiohttp process answering the same bytes ({bare_rps:,.0f} req/s, median) "
        f"in the same rounds: {listing}.",
        "",
        f"*Memory cache.* {bound}: the gateway process spends about {memory_us:.0f} µs of CPU per hit against "
        f"{bare_us:.0f} µs for bare aiohttp, so the gateway adds about {memory_us - bare_us:.0f} µs of Python per "
        f"request to aiohttp's own work, including {len(run.extra_headers)} more response headers "
        f"({', '.join(f'`{name}`' for name in run.extra_headers)}). "
        f"The call handler takes {share('CallHandler.handle') or '?'} of the event loop's busy time"
        + (f"; within it {'; '.join(inner)}" if inner else "") + ". A repeated call skips parsing, validation and "
        "key hashing: the validated call and its cache key are memoised per raw path, query and action headers "
        "(bounded, dropped when the AccessKey changes); a fresh hit's headers are rendered once per entry and "
        "reused until Age, the ttl, Date or RateLimit would change (`HitHeaders`); the handler has no "
        "middleware; the request id is a per-process prefix and a counter; the access line is skipped, not "
        "filtered, below info.",
        "",
        f"*Tiered (Redis + L1).* Hits are answered from the in-process L1: "
        f"{run.median('tiered', 'redis_commands_per_request'):.3f} Redis commands per request (heartbeats "
        f"included), {us('tiered'):.0f} µs of gateway CPU per hit against {memory_us:.0f} µs for the memory "
        f"cache, {run.ratio('tiered') / run.ratio('memory'):.2f}× the memory-cache gateway's rate; the tiered "
        f"gateway was busy {busy('tiered'):.0%} of a core (memory cache: {busy('memory'):.0%}).",
        "",
        f"*Redis only.* No hit is answered from the process: every one waits for a Redis reply. Redis saw "
        f"{redis_only_commands:.3f} commands per request, "
        + ("so concurrent hits shared their reads (all 64 connections ask for the same key here, the easiest "
           "case for sharing; the code measured batches the reads of one event-loop turn into one `MGET`)"
           if redis_only_commands < 0.5 else "about one round trip per hit") +
        f". The gateway spends {us('redis-only'):.0f} µs of CPU per hit against {memory_us:.0f} µs with the memory "
        f"cache, plus {run.median('redis-only', 'redis_us_per_request'):.1f} µs in redis-server, and was busy "
        f"{busy('redis-only'):.0%} of a core while redis-server took {run.median('redis-only', 'redis_cpu_share'):.0%} "
        f"and wrk {run.median('redis-only', 'wrk_cpu_share'):.0%} of the same two cores"
        + (f"; under the profiler, redis-py's command path (`execute_command`) took "
           f"{profiles['redis-only'].spots.share(redis_py):.0%} of this gateway's busy time"
           if redis_py and redis_py.calls else "") + ".",
        "",
        f"*`--workers {WORKERS}`.* {run.ratio('workers2'):.2f}× one bare aiohttp process and "
        f"{run.ratio('workers2') / run.ratio('memory'):.2f}× one memory-cache gateway process. The supervisor and "
        f"its workers were busy {busy('workers2'):.0%} of a core together ({WORKERS} cores would be "
        f"{WORKERS:.0%}) at {us('workers2'):.0f} µs of CPU per request, while wrk took "
        f"{run.median('workers2', 'wrk_cpu_share'):.0%} of a core: with 2 cores, the load generator and the kernel's "
        "loopback work leave the workers well under two cores, so this is the most two workers get next to wrk on "
        "this machine, not a measure of how workers scale.",
    )

    def one_run(r: MissRun) -> str:
        return " and ".join(f"{a.utilisation:.3f} of the {a.cap}/s cap for `{a.action}` ({a.calls_per_s:.2f} calls/s, "
                            f"{a.throttled} throttled, `max_in_any_1s` {a.max_in_any_1s})" for a in r.results)

    def met(r: MissRun) -> str:
        if r.all_met:
            return "meets the target"
        failed = [a.action for a in r.results if not r.met(a)]
        return "does **not** meet the target for " + ", ".join(f"`{a}`" for a in failed)

    miss = (
        f"**Miss path.** Under a backlog one gateway sent upstream at {one_run(single)}, which {met(single)} "
        f"(≥ {single.target} of the cap, 0 throttled, never above the cap in any second); "
        f"{replicas.replicas} replicas sharing one Redis sent at {one_run(replicas)}, which {met(replicas)}. "
        "The ceiling by design is 1 / (1 + δ) for the per-process queue and the shared Redis budget alike: 0.990 at "
        "the shipped 10 ms floor of the adaptive margin δ, lower as δ adapts to the spread of answer times (each "
        "row's notes give δ after the run). Against the usual simulator's ±20 ms processing jitter, which δ cannot "
        f"tell from the network's, one gateway sent at {one_run(jittery)}, which {met(jittery)} (≥ "
        f"{jittery.target}). A figure can sit a little above the ceiling because the span is measured on the "
        "client's answers, and below it by timer slack in the grant loop and, with replicas, a Redis round trip per "
        "grant. " + wan.reading_text(wan_runs)
    )
    return ["## Reading", "", *hit, "", miss, ""]


def commands_section(hit: HitRun, profiles: dict[str, Profiled], single: MissRun, replicas: MissRun,
                     wan_runs: Sequence[MissRun], jittery: MissRun, simulator: str) -> list[str]:
    return [
        "## Commands",
        "",
        "Run from the project directory by `make bench` (`scripts/ensure-redis.sh`, then `.venv/bin/python -m "
        "bench`), which also installs wrk (Debian, as root) when it is missing. Ports are free ones picked in "
        "this run; the misses are sent by `bench/miss.py` in the benchmark's own process. In order:",
        "",
        "```sh",
        "# upstream for every gateway",
        simulator,
        "# hit path: redis-server, the memory, tiered, Redis-only and --workers gateways, bare aiohttp, then wrk "
        "per target",
        *hit.commands,
        "# profile",
        *(command for profiled in profiles.values() for command in profiled.commands),
        "# miss path, one gateway",
        *single.commands,
        f"# miss path, {replicas.replicas} replicas sharing a redis-server",
        *replicas.commands,
        f"# miss path, {jittery.label}",
        *jittery.commands,
        *(line for run in wan_runs for line in (f"# miss path, {run.label} (bench/wan.py)", *run.commands)),
        "```",
        "",
    ]


def report(started: datetime, elapsed: float, load: tuple[float, float], signing: SigningResult, hit: HitRun,
           profiles: dict[str, Profiled], single: MissRun, replicas: MissRun, wan_runs: Sequence[MissRun],
           jittery: MissRun, simulator: str, source: tuple[Source, Source], extra: Sequence[str] = (),
           adaptive_runs: tuple[adaptive.JitterRun, adaptive.SecondClient] | None = None,
           scale_run: scale.ScaleRun | None = None) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {started:%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s. Every number below comes "
        "from that one run: the targets were measured side by side on one machine, so read the ratios; absolute "
        "numbers vary with the machine and its load (1-minute load average "
        f"{load[0]:.2f} before the run, {load[1]:.2f} after it: anything else running shares the two cores).",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in machine(source_row(*source))),
        "",
        *reading(hit, profiles, single, replicas, wan_runs, jittery),
        *hit_section(hit),
        *miss_section(single, replicas, wan_runs, [jittery, *([adaptive_runs[0].run] if adaptive_runs else [])]),
        *(adaptive.section(*adaptive_runs, "img/adaptive-rate.png") if adaptive_runs else []),
        *extra,
        *(scale.section(scale_run) if scale_run else []),
        *hotspot_section(profiles["memory"], profiles["redis-only"]),
        *signing_section(signing),
        *commands_section(hit, profiles, single, replicas, wan_runs, jittery, simulator),
    ]
    warnings = []
    if QUICK:
        warnings.append("**BENCH_QUICK=1: a shortened run to check the harness; its numbers are not for reading.**")
    if any(profiled.notes for profiled in profiles.values()):
        warnings.append("**Warning: a profiled gateway did not stop on SIGTERM (see the profile section).**")
    if source[0].digest != source[1].digest:
        warnings.append("**Warning: the code on disk changed during this run (see `source`).**")
    if not hit.clean:
        warnings.append("**Warning: some wrk rounds saw non-2xx answers or socket errors (see the rounds).**")
    if scale_run and not scale_run.clean:
        warnings.append("**Warning: some wrk runs of the scale rows saw non-2xx answers or socket errors (see "
                        "\"Scale\").**")
    for warning in reversed(warnings):
        lines.insert(4, warning + "\n")
    return "\n".join(lines)


def summary(hit: HitRun, single: MissRun, replicas: MissRun, wan_runs: Sequence[MissRun], jittery: MissRun,
            signing: SigningResult, scale_run: scale.ScaleRun | None = None) -> str:
    rows = [f"{'target':<38}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}  target"]
    for target in TARGETS:
        wanted = TARGET_RATIOS.get(target)
        verdict = "" if wanted is None else f"  >= {wanted}: {'met' if hit.met(target) else 'NOT MET'}"
        rows.append(f"{LABELS[target]:<38}{hit.median(target, 'requests_per_s'):>10,.0f}"
                    f"{hit.median(target, 'p50_ms'):>9.2f}{hit.median(target, 'p99_ms'):>9.2f}"
                    f"{hit.ratio(target):>7.3f}x{verdict}")
    rows += ["", wan.summary([single, replicas, jittery, *wan_runs])]
    rows.append(f"signing: ours {signing.ours_per_s:,.0f}/s, SDK {signing.sdk_per_s:,.0f}/s ({signing.ratio:.2f}x)")
    if scale_run:
        rows.append(scale.summary_line(scale_run))
    return "\n".join(rows)

