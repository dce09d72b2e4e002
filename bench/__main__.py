"""Run every benchmark side by side in one go and write ``docs/benchmarks.md``.

    make bench            # = scripts/ensure-redis.sh, then .venv/bin/python -m bench

1. signing: our V3 signer against the SDK's (pure, in this process);
2. cache-hit path: wrk against a bare aiohttp server, the gateway with its memory cache and the
   gateway with Redis, interleaved rounds, medians and ratios to bare aiohttp;
3. where a hit's time goes: a short wrk run against a gateway under cProfile;
4. miss path: 100 template and 150 WABA misses at once through the gateway in front of the
   simulator, and how close the upstream call rate runs to the caps (5/s, 10/s) without throttling.

Everything listens on 127.0.0.1 on free ports; every process started is stopped at the end, on
errors too. Numbers are ratios measured in one run on one machine; absolute figures are for
orientation only. The whole run takes about two minutes.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final

import aiohttp

from bench.hotspots import Hotspots, analyse
from bench.miss import ActionResult, run_misses
from bench.procs import ROOT, Proc, Procs, cpu_seconds
from bench.signing import SigningResult, run_signing
from bench.signing import section as signing_section
from bench.wrk import WrkResult, ensure_wrk, run_wrk, wrk_version

HIT_PATH: Final = ("/v1/GetChatappTemplateDetail?CustSpaceId=28251486512358&Language=en_US"
                   "&TemplateCode=744c4b5c79c9432497a075bdfca36bf5")
#: Longer than the whole run, so no entry can expire between rounds (the default is 300 s).
HIT_GATEWAY_FLAGS: Final = ("--ttl", "GetChatappTemplateDetail=3600")
MISS_GATEWAY_FLAGS: Final = ("--deadline-s", "60", "--upstream-timeout-s", "8",
                             "--queue-bound", "GetChatappTemplateDetail=1000", "--queue-bound",
                             "QueryChatappBindWaba=1000")
WRK_THREADS: Final = 1
WRK_CONNECTIONS: Final = 64
ROUNDS: Final = 5
ROUND_SECONDS: Final = 6
WARMUP_SECONDS: Final = 2
PROFILE_SECONDS: Final = 5
TEMPLATE_MISSES: Final = 100
WABA_MISSES: Final = 150
TARGET_HIT_RATIO: Final = 0.9
TARGET_UTILISATION: Final = 0.95
TARGETS: Final = ("bare", "memory", "redis")
LABELS: Final = {"bare": "bare aiohttp (same body)", "memory": "gateway, memory cache", "redis": "gateway, Redis cache"}


# ------------------------------------------------------------------------------------ the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        return f"{int(match.group(1)) / 1024 / 1024:.1f} GiB" if match else "unknown"
    except OSError:
        return "unknown"


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not installed"
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else out.strip() or "unknown"


def machine() -> list[tuple[str, str]]:
    import redis

    from proxy import __version__

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("machine (`uname -m`)", platform.machine()),
        ("CPU", _cpu_model()),
        ("cores", f"{os.cpu_count()} ({usable} usable by this process)"),
        ("memory", _memory()),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("aiohttp", aiohttp.__version__),
        ("redis-py", redis.__version__),
        ("redis-server", _redis_version()),
        ("wrk", wrk_version()),
        ("cams-proxy", __version__),
    ]


# ----------------------------------------------------------------------------------- hit path


@dataclass(frozen=True)
class Measured:
    """One wrk run and the CPU the serving process (and, for the Redis target, redis-server) used meanwhile."""

    wrk: WrkResult
    server_cpu_s: float
    redis_cpu_s: float

    @property
    def requests_per_s(self) -> float:
        return self.wrk.requests_per_s

    @property
    def p50_ms(self) -> float:
        return self.wrk.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.wrk.p99_ms

    @property
    def server_us_per_request(self) -> float:
        return self.server_cpu_s / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def redis_us_per_request(self) -> float:
        return self.redis_cpu_s / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def server_cpu_share(self) -> float:
        return self.server_cpu_s / self.wrk.seconds if self.wrk.seconds else 0.0


@dataclass
class HitRun:
    rounds: list[dict[str, Measured]]
    commands: list[str]
    body_bytes: int
    content_type: str
    checks: list[str]

    def median(self, target: str, field: str) -> float:
        return float(statistics.median(float(getattr(r[target], field)) for r in self.rounds))

    def ratio(self, target: str) -> float:
        return self.median(target, "requests_per_s") / self.median("bare", "requests_per_s")

    def round_ratios(self, target: str) -> list[float]:
        return [r[target].requests_per_s / r["bare"].requests_per_s for r in self.rounds]

    @property
    def clean(self) -> bool:
        return all(result.wrk.clean for r in self.rounds for result in r.values())


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _expect_hit(name: str, url: str) -> bytes:
    status, headers, body = _get(url)
    if status != 200 or headers.get("X-Cache") != "HIT":
        raise RuntimeError(f"{name}: expected 200 and X-Cache: HIT from {url}, got {status} "
                           f"X-Cache={headers.get('X-Cache')}: {body[:200]!r}")
    return body


def _warm(gateway: Proc) -> bytes:
    url = gateway.url + HIT_PATH
    status, _headers, body = _get(url)
    if status != 200:
        raise RuntimeError(f"{gateway.name}: warming {url} answered {status}: {body[:300]!r}")
    return _expect_hit(gateway.name, url)


def hit_path(procs: Procs, simulator: Proc, redis: Proc) -> HitRun:
    memory = procs.gateway("gateway-memory", simulator.url, extra=HIT_GATEWAY_FLAGS)
    shared = procs.gateway("gateway-redis", simulator.url, redis_url=redis.url, extra=HIT_GATEWAY_FLAGS)
    checks: list[str] = []
    body = _warm(memory)
    redis_body = _warm(shared)
    checks.append(f"both gateways answered `X-Cache: HIT` for the URL after one warming request "
                  f"({len(body):,} and {len(redis_body):,} body bytes)")
    bare = procs.bare(memory.url + HIT_PATH)
    status, bare_headers, bare_body = _get(bare.url + HIT_PATH)
    _status, gateway_headers, gateway_body = _get(memory.url + HIT_PATH)
    if status != 200 or bare_body != gateway_body or bare_headers["Content-Type"] != gateway_headers["Content-Type"]:
        raise RuntimeError("the bare server does not answer the gateway's body and Content-Type")
    checks.append(f"bare aiohttp answers the same {len(bare_body):,} body bytes and Content-Type "
                  f"`{bare_headers['Content-Type']}` as a memory-cache hit")
    urls = {"bare": bare.url + HIT_PATH, "memory": memory.url + HIT_PATH, "redis": shared.url + HIT_PATH}
    servers = {"bare": bare, "memory": memory, "redis": shared}
    for target in TARGETS:  # warm-up, discarded: connection set-up, first-call paths, CPU frequency
        run_wrk(urls[target], threads=WRK_THREADS, connections=WRK_CONNECTIONS, seconds=WARMUP_SECONDS)
    rounds: list[dict[str, Measured]] = []
    for number in range(1, ROUNDS + 1):
        shift = (number - 1) % len(TARGETS)
        order = TARGETS[shift:] + TARGETS[:shift]  # rotate, so no target always runs first or last
        results: dict[str, Measured] = {}
        for target in order:
            server_before, redis_before = cpu_seconds(servers[target].pid), cpu_seconds(redis.pid)
            res = run_wrk(urls[target], threads=WRK_THREADS, connections=WRK_CONNECTIONS, seconds=ROUND_SECONDS)
            results[target] = Measured(res, cpu_seconds(servers[target].pid) - server_before,
                                       cpu_seconds(redis.pid) - redis_before if target == "redis" else 0.0)
            print(f"  round {number} {target:>6}: {res.requests_per_s:9,.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
                  f"p99 {res.p99_ms:6.2f} ms  server CPU {results[target].server_us_per_request:5.0f} us/req",
                  flush=True)
        rounds.append(results)
    _expect_hit(memory.name, urls["memory"])
    _expect_hit(shared.name, urls["redis"])
    checks.append("after the last round both gateways still answered `X-Cache: HIT` (TTL 3600 s)")
    commands = [redis.command, memory.command, shared.command, bare.command,
                *(rounds[0][t].wrk.command for t in TARGETS)]
    for proc in (bare, shared, memory):
        procs.stop(proc)
    return HitRun(rounds, commands, len(body), gateway_headers["Content-Type"], checks)


@dataclass(frozen=True)
class Profiled:
    spots: Hotspots
    commands: list[str]
    wrk: WrkResult


def hot_spots(procs: Procs, simulator: Proc, workdir: Path, target: str, redis_url: str | None = None) -> Profiled:
    profile = workdir / f"gateway-{target}.prof"
    gateway = procs.gateway(f"gateway-{target}-cprofile", simulator.url, redis_url=redis_url, extra=HIT_GATEWAY_FLAGS,
                            profile_to=profile)
    _warm(gateway)
    result = run_wrk(gateway.url + HIT_PATH, threads=WRK_THREADS, connections=WRK_CONNECTIONS,
                     seconds=PROFILE_SECONDS)
    commands = [gateway.command, result.command]
    procs.stop(gateway)  # SIGTERM: the gateway stops cleanly and cProfile writes the file
    deadline = time.monotonic() + 10
    while not profile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return Profiled(analyse(profile), commands, result)


def miss_path(procs: Procs, simulator: Proc) -> tuple[list[ActionResult], str]:
    gateway = procs.gateway("gateway-miss", simulator.url, extra=MISS_GATEWAY_FLAGS)
    results = run_misses(gateway.url, simulator.url, templates=TEMPLATE_MISSES, wabas=WABA_MISSES)
    procs.stop(gateway)
    return results, gateway.command


# ----------------------------------------------------------------------------------- the report


def _fmt_ms(value: float) -> str:
    return f"{value:.2f} ms"


def hit_section(run: HitRun) -> list[str]:
    lines = [
        "## Cache-hit path",
        "",
        f"wrk, {WRK_THREADS} thread and {WRK_CONNECTIONS} connections (`-t{WRK_THREADS}`: on 2 cores one core "
        "drives the load and the other serves it; a second wrk thread would only take CPU from the "
        "single-threaded server, and the \"server busy\" column shows the server, not wrk, is the limit). "
        f"{ROUNDS} rounds of {ROUND_SECONDS} s per target, interleaved in a rotating order after a "
        f"{WARMUP_SECONDS} s warm-up of each; the table shows the median of the rounds, each column on its own. "
        f"Every request is a cache hit of one {run.body_bytes:,}-byte template answer. Server CPU is the "
        "serving process's user + system time during the run (`/proc/PID/stat`) divided by the requests wrk "
        "completed; for the Redis target redis-server's own CPU is shown after the `+`.",
        "",
        "| target | req/s (median) | p50 | p99 | ratio to bare aiohttp | ratio per round | "
        "server CPU per request | server busy |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for target in TARGETS:
        per_round = ", ".join(f"{r:.2f}" for r in run.round_ratios(target))
        cpu = f"{run.median(target, 'server_us_per_request'):.0f} µs"
        if target == "redis":
            cpu += f" + {run.median(target, 'redis_us_per_request'):.0f} µs"
        lines.append(f"| {LABELS[target]} | {run.median(target, 'requests_per_s'):,.0f} | "
                     f"{_fmt_ms(run.median(target, 'p50_ms'))} | {_fmt_ms(run.median(target, 'p99_ms'))} | "
                     f"{run.ratio(target):.2f}x | {per_round} | {cpu} | "
                     f"{run.median(target, 'server_cpu_share'):.0%} |")
    lines += ["", "Every round:", "",
              "| round | target | req/s | p50 | p99 | requests | non-2xx | socket errors | server CPU per request |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for number, results in enumerate(run.rounds, 1):
        for target, m in results.items():
            res = m.wrk
            lines.append(f"| {number} | {target} | {res.requests_per_s:,.0f} | {_fmt_ms(res.p50_ms)} | "
                         f"{_fmt_ms(res.p99_ms)} | {res.requests:,} | {res.non_2xx} | {res.socket_errors} | "
                         f"{m.server_us_per_request:.0f} µs |")
    lines += ["", "Checks: " + "; ".join(run.checks) + ".", ""]
    return lines


def hotspot_section(memory: Profiled, shared: Profiled) -> list[str]:
    lines = [
        "## Where a cache hit's time goes (gateway under cProfile)",
        "",
        f"Two more gateways, memory and Redis, each under `python -m cProfile` for {PROFILE_SECONDS} s of the same "
        f"wrk load ({memory.wrk.requests_per_s:,.0f} and {shared.wrk.requests_per_s:,.0f} req/s under the profiler; "
        f"{memory.spots.requests:,} and {shared.spots.requests:,} requests profiled). cProfile charges every Python "
        "call, so its microseconds are inflated; read the shares of the event loop's busy time. Rows nest: a "
        "row includes the rows under it with more dots.",
        "",
        "| part | memory: µs per request (profiled) | memory: share | Redis: µs per request (profiled) | "
        "Redis: share |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for mine, theirs in zip(memory.spots.parts, shared.spots.parts, strict=True):
        label = "· " * mine.depth + mine.label
        lines.append(f"| {label} | {memory.spots.per_request_us(mine):,.1f} | {memory.spots.share(mine):.0%} | "
                     f"{shared.spots.per_request_us(theirs):,.1f} | {shared.spots.share(theirs):.0%} |")
    for name, profiled in (("memory", memory), ("Redis", shared)):
        lines += ["", f"Largest own time, {name} gateway (functions called about once per request or more):", "",
                  "| function | share of busy time |", "| --- | ---: |"]
        lines += [f"| `{function}` | {share:.1%} |" for function, share in profiled.spots.top_own]
    lines.append("")
    return lines


def miss_section(results: Sequence[ActionResult]) -> list[str]:
    lines = [
        "## Miss path",
        "",
        f"{TEMPLATE_MISSES} template misses and {WABA_MISSES} WABA misses sent at once (one aiohttp client, "
        "no connection limit) through a fresh memory-cache gateway in front of the simulator (80 ± 20 ms). Each "
        "has its own cache key, so each costs exactly one upstream call: the default fixtures' templates and "
        "spaces first, then names and space ids that do not exist, which the upstream answers with a business "
        "error (passed on, never retried). Counters from the simulator (`/__sim/reset` before, `/__sim/stats` "
        "after). Utilisation = (calls − 1) / span / cap, the span taken from the first answer to the last on "
        "the client (each answer trails its upstream arrival by the simulated latency, so the span matches the "
        "arrivals' within the ±20 ms jitter at each end).",
        "",
        "| action | misses sent | upstream calls | throttled | max in any 1 s / cap | span first→last | "
        "calls/s | utilisation | last answer after | answers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        answers = ", ".join(f"{code or '?'} {n}" for code, n in r.answers.items())
        lines.append(f"| `{r.action}` | {r.sent} | {r.upstream_calls} | {r.throttled} | {r.max_in_any_1s} / {r.cap} | "
                     f"{r.span_s:.2f} s | {r.calls_per_s:.2f} | {r.utilisation:.3f} | {r.wall_s:.2f} s | {answers} |")
    lines.append("")
    return lines


def reading(run: HitRun, profiles: dict[str, Profiled], misses: Sequence[ActionResult]) -> list[str]:
    spots = profiles["memory"].spots
    redis_get = profiles["redis"].spots.find("RedisCache.get")
    memory, shared = run.ratio("memory"), run.ratio("redis")
    bare_rps = run.median("bare", "requests_per_s")
    bare_us, memory_us = run.median("bare", "server_us_per_request"), run.median("memory", "server_us_per_request")
    verdict = (f"meets the target of {TARGET_HIT_RATIO}× bare aiohttp" if memory >= TARGET_HIT_RATIO else
               f"does **not** meet the target of {TARGET_HIT_RATIO}× bare aiohttp")
    busy = min(run.median("bare", "server_cpu_share"), run.median("memory", "server_cpu_share"))
    bound = (f"Both servers are single-threaded and were busy {min(busy, 1.0):.0%} of the time under load, so CPU "
             "per request is what sets the rate" if busy >= 0.85 else
             f"The servers were busy only {busy:.0%} of the run, so the load generator or the machine, not only "
             "the server, limited these numbers")

    def share(fragment: str) -> str | None:
        part = spots.find(fragment)
        return f"{spots.share(part):.0%}" if part and part.calls else None

    def clause(fragment: str, text: str) -> str | None:
        found = share(fragment)
        return f"{text} {found}" if found else None

    inner = [c for c in (
        clause("_repeated_call", "recognising a call seen before (one dict lookup on path, raw query and action "
                                 "headers)"),
        clause("MemoryCache.get", "the memory-cache lookup"),
        clause("new_request_id", "the request id"),
        clause("parse_call", "parsing and validating new calls"),
    ) if c]
    redis_us = run.median("redis", "server_us_per_request")
    redis_server_us = run.median("redis", "redis_us_per_request")
    hit = (
        f"**Hit path.** The gateway's memory-cache hit path serves {memory:.2f}× the requests of a bare aiohttp "
        f"server answering the same bytes ({run.median('memory', 'requests_per_s'):,.0f} against {bare_rps:,.0f} "
        f"req/s), which {verdict}; with Redis it is {shared:.2f}×. {bound}: the gateway process spends about "
        f"{memory_us:.0f} µs of CPU per hit against {bare_us:.0f} µs for bare aiohttp, so the gateway adds about "
        f"{memory_us - bare_us:.0f} µs of Python per request to aiohttp's own work, including three more response "
        f"headers (`X-Cache`, `Age`, `X-Request-Id`). The call handler takes {share('CallHandler.handle') or '?'} "
        f"of the event loop's busy time" + (f"; within it {'; '.join(inner)}" if inner else "") + ". A repeated "
        "call skips parsing, validation and key hashing: the validated call and its cache key are memoised per raw "
        "path, query and action headers (bounded, dropped when the AccessKey changes); the handler has no "
        "middleware; the request id is a per-process prefix and a counter; the access line is skipped, not "
        "filtered, below info. The Redis hit costs the gateway "
        f"{redis_us:.0f} µs of CPU per request against {memory_us:.0f} µs with the memory cache, plus "
        f"{redis_server_us:.0f} µs in redis-server, which shares the same two cores with wrk and the gateway"
        + (f"; the profile puts {profiles['redis'].spots.share(redis_get):.0%} of the Redis gateway's busy time in "
           "`RedisCache.get`, nearly all of it redis-py's asyncio command path (connection pool, retry wrapper, "
           "send, parse), not in Redis itself." if redis_get and redis_get.calls else ".")
    )
    worst = min(misses, key=lambda r: r.utilisation)
    throttled = sum(r.throttled for r in misses)
    over = [r for r in misses if r.max_in_any_1s > r.cap]
    miss = (
        "**Miss path.** Under a backlog the gateway sent upstream at "
        + " and ".join(f"{r.utilisation:.3f} of the {r.cap}/s cap for `{r.action}`" for r in misses)
        + f" ({'at or above' if worst.utilisation >= TARGET_UTILISATION else '**below**'} the "
        f"{TARGET_UTILISATION} target), with {throttled} throttled calls and the referee's `max_in_any_1s` "
        + ("never above the cap" if not over else "**above the cap** for " + ", ".join(r.action for r in over))
        + ". The ceiling by design is 1 / (1 + δ) = 0.980 with the default 20 ms spacing margin δ; the rest "
        "is timer slack in the grant loop."
    )
    return ["## Reading", "", hit, "", miss, ""]


def commands_section(hit: HitRun, profiles: dict[str, Profiled], miss_command: str, simulator: str) -> list[str]:
    return [
        "## Commands",
        "",
        "Run from the project directory by `make bench` (`scripts/ensure-redis.sh`, then `.venv/bin/python -m "
        "bench`), which also installs wrk (Debian, as root) when it is missing. Ports are free ones picked in "
        "this run. In order:",
        "",
        "```sh",
        "# upstream for every gateway",
        simulator,
        "# hit path",
        *hit.commands,
        "# profile",
        *(command for profiled in profiles.values() for command in profiled.commands),
        "# miss path",
        miss_command,
        "```",
        "",
    ]


def report(started: datetime, elapsed: float, load: tuple[float, float], signing: SigningResult, hit: HitRun,
           profiles: dict[str, Profiled], misses: list[ActionResult], miss_command: str, simulator: str) -> str:
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
        *(f"| {name} | {value} |" for name, value in machine()),
        "",
        *reading(hit, profiles, misses),
        *hit_section(hit),
        *miss_section(misses),
        *hotspot_section(profiles["memory"], profiles["redis"]),
        *signing_section(signing),
        *commands_section(hit, profiles, miss_command, simulator),
    ]
    if not hit.clean:
        lines.insert(4, "**Warning: some wrk rounds saw non-2xx answers or socket errors (see the rounds).**\n")
    return "\n".join(lines)


def summary(hit: HitRun, misses: Sequence[ActionResult], signing: SigningResult) -> str:
    rows = [f"{'target':<26}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}"]
    for target in TARGETS:
        rows.append(f"{LABELS[target]:<26}{hit.median(target, 'requests_per_s'):>10,.0f}"
                    f"{hit.median(target, 'p50_ms'):>9.2f}{hit.median(target, 'p99_ms'):>9.2f}"
                    f"{hit.ratio(target):>7.2f}x")
    rows.append("")
    for r in misses:
        rows.append(f"{r.action:<26} {r.upstream_calls} calls, {r.calls_per_s:.2f}/s of cap {r.cap} = "
                    f"{r.utilisation:.3f}, throttled {r.throttled}, max_in_any_1s {r.max_in_any_1s}")
    rows.append(f"signing: ours {signing.ours_per_s:,.0f}/s, SDK {signing.sdk_per_s:,.0f}/s ({signing.ratio:.2f}x)")
    return "\n".join(rows)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGINT (even when started in the background, where SIGINT is ignored) unwind through the
    ``finally`` blocks, so every process the run started is stopped."""
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    ensure_wrk()
    started, clock, load_before = datetime.now(UTC), time.monotonic(), os.getloadavg()[0]
    print("signing ...", flush=True)
    signing = run_signing()
    with tempfile.TemporaryDirectory(prefix="cams-bench-") as tmp, Procs(Path(tmp)) as procs:
        try:
            simulator = procs.simulator()
            redis = procs.redis()
            print("cache-hit path (wrk) ...", flush=True)
            hit = hit_path(procs, simulator, redis)
            print("profile of the hit path (cProfile) ...", flush=True)
            profiles = {"memory": hot_spots(procs, simulator, Path(tmp), "memory"),
                        "redis": hot_spots(procs, simulator, Path(tmp), "redis", redis.url)}
            procs.stop(redis)
            print(f"miss path ({TEMPLATE_MISSES} + {WABA_MISSES} misses at once) ...", flush=True)
            misses, miss_command = miss_path(procs, simulator)
            simulator_command = simulator.command
        except BaseException:
            for proc in procs.started:
                code = proc.popen.poll()
                state = ("running" if code is None else
                         f"exited with {code}: it was stopped from outside (SIGTERM/SIGINT)" if code in {0, -15, -2}
                         else f"exited with {code}")
                print(f"--- {proc.name} (pid {proc.pid}, {state}): {proc.command}\n{proc.log_tail()}", file=sys.stderr)
            raise
    text = report(started, time.monotonic() - clock, (load_before, os.getloadavg()[0]), signing, hit, profiles,
                  misses, miss_command, simulator_command)
    (ROOT / "docs" / "benchmarks.md").write_text(text)
    print()
    print(summary(hit, misses, signing))
    print(f"\nwrote {ROOT / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
