"""Run every benchmark side by side in one go and write ``docs/benchmarks.md``.

    make bench                           # = scripts/ensure-redis.sh, then .venv/bin/python -m bench
    BENCH_QUICK=1 .venv/bin/python -m bench   # a short check of the harness itself (see below)

1. signing: our V3 signer against the SDK's (pure, in this process);
2. cache-hit path: wrk against a bare aiohttp server and four gateways answering the same cached
   template — memory cache; tiered (Redis + in-process L1, default flags); Redis only
   (``--l1-max-ttl-s 0``, every hit reads Redis); ``--workers 2`` with the memory cache — in
   interleaved rounds, medians and ratios to the one bare aiohttp process measured in the same rounds;
3. where a hit's time goes: a short wrk run against a memory-cache and a Redis-only gateway under cProfile;
4. miss path: 100 template and 150 WABA misses at once through one gateway in front of the
   simulator, then the same through three gateway replicas sharing one redis-server (round-robin),
   and how close the upstream call rate runs to the caps (5/s, 10/s) without throttling; then both
   again under a WAN profile (`bench.wan`: HTTPS upstream and Redis through network stand-ins, δ 40 ms;
   ``BENCH_QUICK=1 .venv/bin/python -m bench.wan`` runs only those rows).

Everything listens on 127.0.0.1 on free ports; every process started is stopped at the end, on
errors too. Numbers are ratios measured in one run on one machine; absolute figures are for
orientation only. The whole run takes about four minutes (the WAN miss-path rows add about one).

``BENCH_QUICK=1`` shortens everything (3 rounds of 2 s, 1 s warm-ups, 2 s profiles, 20 + 30
misses) to check the harness in well under two minutes (the WAN rows alone: half a minute); it writes its report to
``$TMPDIR/cams-bench-quick.md``, never to ``docs/benchmarks.md``, and its numbers are not for reading.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from types import FrameType
from typing import Final

import aiohttp

from bench import adaptive, wan
from bench.hotspots import Hotspots, analyse
from bench.miss import LOOPBACK_TARGET, MISS_GATEWAY_FLAGS, TARGET_UTILISATION, MissRun, run_misses
from bench.procs import ROOT, Proc, Procs, cpu_seconds, machine_cpu_seconds, redis_commands, tree_cpu_seconds
from bench.signing import SigningResult, run_signing
from bench.signing import section as signing_section
from bench.wrk import WrkResult, ensure_wrk, run_wrk, wrk_version

QUICK: Final = os.environ.get("BENCH_QUICK", "") not in {"", "0"}
HIT_PATH: Final = ("/v1/GetChatappTemplateDetail?CustSpaceId=28251486512358&Language=en_US"
                   "&TemplateCode=744c4b5c79c9432497a075bdfca36bf5")
#: Longer than the whole run, so no entry can expire between rounds (the default is 300 s).
HIT_GATEWAY_FLAGS: Final = ("--ttl", "GetChatappTemplateDetail=3600")
WRK_THREADS: Final = 1
WRK_CONNECTIONS: Final = 64
ROUNDS: Final = 3 if QUICK else 5
ROUND_SECONDS: Final = 2 if QUICK else 4
WARMUP_SECONDS: Final = 1 if QUICK else 2
PROFILE_SECONDS: Final = 2 if QUICK else 5
#: How long a profiled gateway may take to stop after SIGTERM before it is killed (and its profile lost).
PROFILE_STOP_S: Final = 30.0
TEMPLATE_MISSES: Final = 20 if QUICK else 100
WABA_MISSES: Final = 30 if QUICK else 150
WORKERS: Final = 2
REPLICAS: Final = 3
#: Consecutive `X-Cache: HIT` answers (each on a new connection) before a ``--workers`` gateway counts as warm.
WARM_HITS: Final = 20
#: A round where everything else on the machine took this share of a core or more is flagged in the report.
BUSY_MACHINE: Final = 0.25
#: Bare aiohttp's CPU per request varying by this factor across rounds is flagged: the machine's speed changed.
SLOWER_MACHINE: Final = 1.3
TARGETS: Final = ("bare", "memory", "memory-asyncio", "memory-warning", "memory-warning-asyncio", "tiered",
                  "tiered-warning-asyncio", "redis-only", "workers2", "bare2")
#: The shipped defaults: `--log-level info` (one access line per request) on the default loop (uvloop here).
SHIPPED: Final = ("--log-level", "info")
WARNING: Final = ("--log-level", "warning")
ASYNCIO: Final = ("--loop", "asyncio")
LABELS: Final = {
    "bare": "bare aiohttp (same body, asyncio, no access log)",
    "memory": "gateway, memory cache, **shipped defaults** (info + access log, uvloop)",
    "memory-asyncio": "gateway, memory cache, info + access log, asyncio",
    "memory-warning": "gateway, memory cache, warning (no access log), uvloop",
    "memory-warning-asyncio": "gateway, memory cache, warning, asyncio",
    "tiered": "gateway, tiered (Redis + L1), **shipped defaults**",
    "tiered-warning-asyncio": "gateway, tiered, warning, asyncio",
    "redis-only": "gateway, Redis only (no L1), shipped defaults, one hot key",
    "workers2": f"gateway, memory, `--workers {WORKERS}`, shipped defaults",
    "bare2": f"{WORKERS} bare aiohttp processes on one port (`SO_REUSEPORT`)",
}
#: The gateway's flags beyond ``--upstream`` (and ``--redis-url`` for the Redis targets).
TARGET_FLAGS: Final = {
    "memory": (*HIT_GATEWAY_FLAGS, *SHIPPED),
    "memory-asyncio": (*HIT_GATEWAY_FLAGS, *SHIPPED, *ASYNCIO),
    "memory-warning": (*HIT_GATEWAY_FLAGS, *WARNING),
    "memory-warning-asyncio": (*HIT_GATEWAY_FLAGS, *WARNING, *ASYNCIO),
    "tiered": (*HIT_GATEWAY_FLAGS, *SHIPPED),  # the default --l1-max-ttl-s 10
    "tiered-warning-asyncio": (*HIT_GATEWAY_FLAGS, *WARNING, *ASYNCIO),
    "redis-only": (*HIT_GATEWAY_FLAGS, *SHIPPED, "--l1-max-ttl-s", "0"),
    "workers2": (*HIT_GATEWAY_FLAGS, *SHIPPED, "--workers", str(WORKERS)),
}
REDIS_TARGETS: Final = frozenset({"tiered", "tiered-warning-asyncio", "redis-only"})
#: Several processes serve the target (the single-process CPU budget does not apply).
MULTI_PROCESS: Final = frozenset({"workers2", "bare2"})
#: Issue 16: the least share of bare aiohttp's req/s each target must reach (stretch for the shipped memory
#: cache on uvloop: 1.3); `--workers 2` is compared with two bare processes instead.
TARGET_RATIOS: Final = {"memory": 1.0, "tiered": 1.0, "redis-only": 0.6}
STRETCH_RATIOS: Final = {"memory": 1.3}


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


@dataclass(frozen=True)
class Source:
    """The code a run measured: the commit, how many paths under ``proxy/`` and ``bench/`` differed from it, and a
    digest of the files as on disk (every process runs what is on disk when it starts)."""

    head: str
    changed: int
    digest: str
    files: tuple[Path, ...] = field(default=(), compare=False, repr=False)

    def describe(self) -> str:
        if not self.head:
            return "not a git checkout"
        if not self.changed:
            return f"git {self.head}, `proxy/` and `bench/` as committed"
        return f"git {self.head} **plus uncommitted changes** in {self.changed} paths under `proxy/` and `bench/`"


def source_state(files: tuple[Path, ...] | None = None) -> Source:
    """The code on disk now: ``files`` (by default every file under ``proxy/`` and every ``bench/*.py`` there is
    now; pass the start's `Source.files` at the end, so that modules imported on the way or files added meanwhile
    do not count as a change)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=ROOT).stdout
        except OSError:
            return ""

    if files is None:
        files = tuple(sorted((*ROOT.glob("proxy/**/*.py"), *ROOT.glob("proxy/**/*.json"), *ROOT.glob("bench/*.py"))))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    changed = [line for line in git("status", "--porcelain", "--", "proxy", "bench").splitlines() if line.strip()]
    return Source(git("rev-parse", "--short", "HEAD").strip(), len(changed), digest.hexdigest(), files)


def source_row(before: Source, after: Source) -> str:
    """The ``source`` row: the code at the start, and a plain warning when it changed before the end."""
    if before.digest == after.digest:
        moved = "" if before.head == after.head else f"; commits meanwhile, up to {after.head}, changed other files"
        return before.describe() + f" (measured as on disk; unchanged from start to end of the run{moved})"
    return (f"at the start {before.describe()}; **the code on disk changed during the run** (at the end "
            f"{after.describe()}), so processes started later (profiles, miss path) may have run newer code than "
            "the hit path")


def machine(source: str) -> list[tuple[str, str]]:
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
        ("source", source),
    ]


# ----------------------------------------------------------------------------------- hit path


@dataclass(frozen=True)
class Measured:
    """One wrk run and the CPU used meanwhile: by the serving process (with ``--workers``, the supervisor and
    its workers together), by wrk, and for the Redis targets by redis-server, with its command count."""

    wrk: WrkResult
    server_cpu_s: float
    redis_cpu_s: float
    redis_commands: int
    #: CPU of everything else on the machine meanwhile (all cores' user + system time less the server's, wrk's
    #: and redis-server's): other users of a shared machine, idle gateways, this script.
    other_cpu_s: float = 0.0
    #: CPU time the hypervisor gave to other guests meanwhile.
    steal_s: float = 0.0

    @property
    def requests_per_s(self) -> float:
        return self.wrk.requests_per_s

    @property
    def p50_ms(self) -> float:
        return self.wrk.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.wrk.p99_ms

    def _per_request(self, value: float) -> float:
        return value / self.wrk.requests if self.wrk.requests else 0.0

    @property
    def server_us_per_request(self) -> float:
        return self._per_request(self.server_cpu_s) * 1e6

    @property
    def redis_us_per_request(self) -> float:
        return self._per_request(self.redis_cpu_s) * 1e6

    @property
    def redis_commands_per_request(self) -> float:
        return self._per_request(self.redis_commands)

    @property
    def server_cpu_share(self) -> float:
        return self.server_cpu_s / self.wrk.seconds if self.wrk.seconds else 0.0

    @property
    def wrk_cpu_share(self) -> float:
        return self.wrk.cpu_share

    @property
    def redis_cpu_share(self) -> float:
        return self.redis_cpu_s / self.wrk.seconds if self.wrk.seconds else 0.0

    @property
    def other_cpu_share(self) -> float:
        return max(0.0, self.other_cpu_s) / self.wrk.seconds if self.wrk.seconds else 0.0

    @property
    def steal_share(self) -> float:
        return self.steal_s / self.wrk.seconds if self.wrk.seconds else 0.0


@dataclass
class HitRun:
    """The hit-path runs in the order they ran: ``opening`` (bare aiohttp), then each round's runs, where every
    gateway run is followed by a bare aiohttp run. A gateway run's ratio is to the mean of the bare runs just
    before and just after it, so a machine that speeds up or slows down over the minutes of the benchmark
    (this shared VM does, by up to 1.5×) moves both sides of each ratio alike."""

    opening: Measured
    rounds: list[list[tuple[str, Measured]]]
    commands: list[str]
    body_bytes: int
    content_type: str
    checks: list[str]
    #: Response headers a memory-cache hit carries that bare aiohttp's answer does not.
    extra_headers: list[str]

    def in_order(self) -> list[tuple[str, Measured]]:
        return [("bare", self.opening), *(run for r in self.rounds for run in r)]

    def samples(self, target: str) -> list[Measured]:
        return [m for t, m in self.in_order() if t == target]

    def all_measured(self) -> list[Measured]:
        return [m for _t, m in self.in_order()]

    def median(self, target: str, field: str) -> float:
        return float(statistics.median(float(getattr(m, field)) for m in self.samples(target)))

    def paired_ratios(self) -> list[float | None]:
        """For each run in order: a gateway run's req/s over the mean of its neighbouring bare runs; None for
        bare runs."""
        runs = self.in_order()
        ratios: list[float | None] = []
        for index, (target, m) in enumerate(runs):
            if target == "bare":
                ratios.append(None)
                continue
            before = next(r for t, r in reversed(runs[:index]) if t == "bare")
            after = next((r for t, r in runs[index + 1:] if t == "bare"), before)
            ratios.append(m.requests_per_s / ((before.requests_per_s + after.requests_per_s) / 2))
        return ratios

    def round_ratios(self, target: str) -> list[float]:
        return [ratio for (t, _m), ratio in zip(self.in_order(), self.paired_ratios(), strict=True)
                if t == target and ratio is not None]

    def ratio(self, target: str) -> float:
        """The median of the target's paired ratios (1 for bare aiohttp itself)."""
        return 1.0 if target == "bare" else float(statistics.median(self.round_ratios(target)))

    def met(self, target: str) -> bool | None:
        """Whether the median ratio reaches the target; None when the target has none."""
        wanted = TARGET_RATIOS.get(target)
        return None if wanted is None else self.ratio(target) >= wanted

    @property
    def clean(self) -> bool:
        return all(m.wrk.clean for m in self.all_measured())


def _get(url: str) -> tuple[int, Message, bytes]:
    """One GET on a new connection (so ``SO_REUSEPORT`` picks a worker afresh); headers case-insensitive."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


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


def _upstream_id(body: bytes) -> bytes:
    """The body with the upstream's ``RequestId`` masked: it differs between two fills of the same call."""
    return re.sub(rb'"RequestId":"[^"]*"', b'"RequestId":""', body, count=1)


@dataclass(frozen=True)
class Warmed:
    body: bytes
    requests: int
    misses: int
    processes: int


def _warm_workers(gateway: Proc, workers: int, timeout: float = 30.0) -> Warmed:
    """Each ``--workers`` process has its own memory cache, and ``SO_REUSEPORT`` spreads new connections
    over them: ask on new connections until `WARM_HITS` answers in a row are hits and hits came from
    ``workers`` processes (told apart by the per-process prefix of ``X-Request-Id``, all but its 10-digit
    counter)."""
    url = gateway.url + HIT_PATH
    in_a_row = requests = misses = 0
    processes: set[str] = set()
    body = b""
    deadline = time.monotonic() + timeout
    while in_a_row < WARM_HITS or len(processes) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{gateway.name}: not warm after {requests} requests in {timeout:.0f} s "
                               f"({in_a_row} hits in a row, hits from {len(processes)} of {workers} processes)")
        status, headers, body = _get(url)
        requests += 1
        if status != 200:
            raise RuntimeError(f"{gateway.name}: warming {url} answered {status}: {body[:300]!r}")
        if headers.get("X-Cache") == "HIT":
            in_a_row += 1
            processes.add(str(headers.get("X-Request-Id", ""))[:-10])
        else:
            in_a_row = 0
            misses += 1
    return Warmed(body, requests, misses, len(processes))


def hit_path(procs: Procs, simulator: Proc, redis: Proc) -> HitRun:
    gateways = {target: procs.gateway(f"gateway-{target}", simulator.url, extra=flags,
                                      redis_url=redis.url if target in REDIS_TARGETS else None)
                for target, flags in TARGET_FLAGS.items()}
    checks: list[str] = []
    single = [target for target in TARGET_FLAGS if target != "workers2"]
    bodies = {target: _warm(gateways[target]) for target in single}
    warmed = _warm_workers(gateways["workers2"], WORKERS)
    body = bodies["memory"]
    if any(_upstream_id(b) != _upstream_id(body) for b in (*bodies.values(), warmed.body)):
        raise RuntimeError("the gateways do not answer the same body for the URL")
    checks.append(f"the {len(single)} single-process gateways answered `X-Cache: HIT` for the URL after one "
                  f"warming request, each with the same {len(body):,} body bytes but for the upstream's "
                  "`RequestId` (one per upstream call)")
    checks.append(f"the `--workers {WORKERS}` gateway (a memory cache per worker) was warmed on new connections "
                  f"until {WARM_HITS} answers in a row were hits and hits had come from {warmed.processes} "
                  f"processes ({warmed.requests} requests, {warmed.misses} of them misses)")
    bare = procs.bare(gateways["memory"].url + HIT_PATH)
    status, bare_headers, bare_body = _get(bare.url + HIT_PATH)
    _status, gateway_headers, gateway_body = _get(gateways["memory"].url + HIT_PATH)
    if status != 200 or bare_body != gateway_body or bare_headers["Content-Type"] != gateway_headers["Content-Type"]:
        raise RuntimeError("the bare server does not answer the gateway's body and Content-Type")
    checks.append(f"bare aiohttp answers the same {len(bare_body):,} body bytes and Content-Type "
                  f"`{bare_headers['Content-Type']}` as a memory-cache hit")
    bare_names = {name.lower() for name in bare_headers}
    extra_headers = [name for name in gateway_headers if name.lower() not in bare_names]
    bare2 = procs.bare(gateways["memory"].url + HIT_PATH, name="bare-aiohttp-x2", processes=WORKERS)
    servers = {"bare": bare, **gateways, "bare2": bare2}
    urls = {target: server.url + HIT_PATH for target, server in servers.items()}
    for target in TARGETS:  # warm-up, discarded: connection set-up, first-call paths, CPU frequency
        run_wrk(urls[target], threads=WRK_THREADS, connections=WRK_CONNECTIONS, seconds=WARMUP_SECONDS)
    gateway_targets = TARGETS[1:]

    def measure(target: str, number: int) -> Measured:
        pid = servers[target].pid
        server_before, redis_before = tree_cpu_seconds(pid), cpu_seconds(redis.pid)
        commands_before = redis_commands(redis.port)
        busy_before, steal_before = machine_cpu_seconds()
        res = run_wrk(urls[target], threads=WRK_THREADS, connections=WRK_CONNECTIONS, seconds=ROUND_SECONDS)
        busy, steal = machine_cpu_seconds()
        server_cpu, redis_cpu = tree_cpu_seconds(pid) - server_before, cpu_seconds(redis.pid) - redis_before
        shared = target in REDIS_TARGETS
        m = Measured(res, server_cpu, redis_cpu if shared else 0.0,
                     redis_commands(redis.port) - commands_before - 1 if shared else 0,
                     busy - busy_before - server_cpu - redis_cpu - res.cpu_s, steal - steal_before)
        print(f"  round {number} {target:>10}: {res.requests_per_s:9,.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
              f"p99 {res.p99_ms:6.2f} ms  server CPU {m.server_us_per_request:5.0f} us/req "
              f"({m.server_cpu_share:4.0%})  wrk {m.wrk_cpu_share:4.0%}"
              + (f"  redis {m.redis_cpu_share:4.0%}, {m.redis_commands_per_request:.2f} cmd/req" if shared else "")
              + f"  others {m.other_cpu_share:4.0%}", flush=True)
        return m

    opening = measure("bare", 0)
    rounds: list[list[tuple[str, Measured]]] = []
    for number in range(1, ROUNDS + 1):
        shift = (number - 1) % len(gateway_targets)
        order = gateway_targets[shift:] + gateway_targets[:shift]  # rotate: no target always runs first or last
        runs: list[tuple[str, Measured]] = []
        for target in order:
            runs.append((target, measure(target, number)))
            runs.append(("bare", measure("bare", number)))
        rounds.append(runs)
    for target in single:
        _expect_hit(gateways[target].name, urls[target])
    after = _warm_workers(gateways["workers2"], WORKERS)
    if after.misses:
        raise RuntimeError(f"{gateways['workers2'].name}: {after.misses} misses after the rounds")
    checks.append(f"after the last round every gateway still answered `X-Cache: HIT` (TTL 3600 s), the "
                  f"`--workers {WORKERS}` one from {after.processes} processes without a miss")
    commands = [redis.command, *(gateways[t].command for t in TARGET_FLAGS), bare.command, bare2.command,
                opening.wrk.command, *(dict(rounds[0])[t].wrk.command for t in gateway_targets)]
    for proc in (bare2, bare, *reversed(gateways.values())):
        procs.stop(proc)
    return HitRun(opening, rounds, commands, len(body), gateway_headers["Content-Type"], checks, extra_headers)


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
        _warm(gateway)
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


# ---------------------------------------------------------------------------------- miss path


def miss_path(procs: Procs, simulator: Proc, label: str = "loopback, 1 gateway",
              target: float = LOOPBACK_TARGET) -> MissRun:
    """One fresh memory-cache gateway at the shipped defaults (δ adaptive) in front of ``simulator``."""
    gateway = procs.gateway(f"gateway-miss-{simulator.name}", simulator.url, extra=MISS_GATEWAY_FLAGS)
    results = run_misses(gateway.url, simulator.url, templates=TEMPLATE_MISSES, wabas=WABA_MISSES)
    margin = wan.margin_ms(gateway.url)
    procs.stop(gateway)
    note = f"δ after the run {margin:.1f} ms (ceiling by design 1 / (1 + δ) = {1 / (1 + margin / 1000):.3f})"
    return MissRun(1, results, [simulator.command, gateway.command], label, (note,), target=target)


def miss_path_replicas(procs: Procs, simulator: Proc) -> MissRun:
    """`REPLICAS` gateways sharing a fresh redis-server (budget, leases, cache), the misses spread round-robin."""
    redis = procs.redis("redis-replicas")
    gateways = [procs.gateway(f"gateway-miss-replica-{n}", simulator.url, redis_url=redis.url,
                              extra=MISS_GATEWAY_FLAGS) for n in range(1, REPLICAS + 1)]
    results = run_misses([g.url for g in gateways], simulator.url, templates=TEMPLATE_MISSES, wabas=WABA_MISSES)
    margins = [wan.margin_ms(g.url) for g in gateways]
    for proc in (*reversed(gateways), redis):
        procs.stop(proc)
    note = (f"δ after the run {' / '.join(f'{m:.1f}' for m in margins)} ms (ceiling by design 1 / (1 + δ) = "
            f"{1 / (1 + max(margins) / 1000):.3f})")
    return MissRun(REPLICAS, results, [simulator.command, redis.command, *(g.command for g in gateways)],
                   f"loopback, {REPLICAS} replicas sharing Redis", (note,), target=LOOPBACK_TARGET)


# ----------------------------------------------------------------------------------- the report


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


def miss_section(single: MissRun, replicas: MissRun, wan_runs: Sequence[MissRun],
                 more: Sequence[MissRun] = ()) -> list[str]:
    return [
        "## Miss path",
        "",
        f"{TEMPLATE_MISSES} template misses and {WABA_MISSES} WABA misses sent at once (one aiohttp client, "
        "no connection limit) in front of a simulator that answers in a fixed 80 ms (no processing jitter, so δ "
        "measures the path alone; one row repeats the one-gateway run against the usual 80 ± 20 ms simulator to "
        "show what the upstream's own processing jitter costs). Each has its own cache key, so each costs "
        "exactly one upstream call: the default fixtures' templates and spaces first (12 templates, 4 spaces), then "
        "names and space ids that do not exist, which the upstream answers with a business error (passed on, never "
        "retried), so no fixture has to be added. Counters from the simulator (`/__sim/reset` before, "
        "`/__sim/stats` after): `calls`, `throttled` and `max_in_any_1s`, the most calls it received in any "
        "1-second window. Calls/s = (calls − 1) / span, the span taken from the first answer to the last on the "
        "client (each answer trails its upstream arrival by the simulated latency, so on loopback with a fixed "
        "latency the span is the arrivals'); utilisation = calls/s / cap. Every gateway runs at the shipped "
        f"defaults (δ adaptive from the 10 ms floor). Targets: utilisation ≥ {LOOPBACK_TARGET} on loopback (issue "
        f"13), ≥ {TARGET_UTILISATION} with the simulator's processing jitter and on the WAN rows, ≥ "
        f"{adaptive.JITTER_TARGET} under ±25 ms of jitter; always 0 throttled and `max_in_any_1s` ≤ cap.",
        "",
        "*One gateway*: a fresh memory-cache gateway; its per-process queue spaces the calls. "
        f"*{replicas.replicas} replicas*: a fresh redis-server and {replicas.replicas} fresh gateways with "
        f"`--redis-url` and the same flags; the client sends each action's misses round-robin over the "
        f"{replicas.replicas} (the i-th to replica i mod {replicas.replicas}), all at once. The replicas share the "
        "budget in Redis (one GCRA slot per call, decided on the Redis server's clock), so together they must keep "
        "to the one cap.",
        "",
        wan.profile_text(replicas.replicas),
        "",
        *wan.miss_table([single, replicas, *wan_runs, *more]),
        "",
        wan.notes_text([single, replicas, *wan_runs, *more]),
        "",
        "The jitter row is described under \"The adaptive budget\" below.",
        "",
    ]


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
           adaptive_runs: tuple[adaptive.JitterRun, adaptive.SecondClient] | None = None) -> str:
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
    for warning in reversed(warnings):
        lines.insert(4, warning + "\n")
    return "\n".join(lines)


def summary(hit: HitRun, single: MissRun, replicas: MissRun, wan_runs: Sequence[MissRun], jittery: MissRun,
            signing: SigningResult) -> str:
    rows = [f"{'target':<38}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}  target"]
    for target in TARGETS:
        wanted = TARGET_RATIOS.get(target)
        verdict = "" if wanted is None else f"  >= {wanted}: {'met' if hit.met(target) else 'NOT MET'}"
        rows.append(f"{LABELS[target]:<38}{hit.median(target, 'requests_per_s'):>10,.0f}"
                    f"{hit.median(target, 'p50_ms'):>9.2f}{hit.median(target, 'p99_ms'):>9.2f}"
                    f"{hit.ratio(target):>7.3f}x{verdict}")
    rows += ["", wan.summary([single, replicas, jittery, *wan_runs])]
    rows.append(f"signing: ours {signing.ours_per_s:,.0f}/s, SDK {signing.sdk_per_s:,.0f}/s ({signing.ratio:.2f}x)")
    return "\n".join(rows)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGINT (even when started in the background, where SIGINT is ignored) unwind through the
    ``finally`` blocks, so every process the run started is stopped."""
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def later_benchmarks(procs: Procs, workdir: Path, hit: HitRun, single: MissRun) -> list[str]:
    """The benchmarks of the freshness, fairness and operations issues, and the plots: Markdown sections.
    ``BENCH_SKIP_REFRESH=1`` leaves out the refresh-ahead run (the longest: warm-up plus two 300 s TTLs)."""
    from bench import coalescing, fairness, nginx, plots, refresh

    lines: list[str] = ["## Plots", ""]
    images = ROOT / "docs" / "img"
    rows = [(LABELS[target], hit.median(target, "requests_per_s")) for target in TARGETS]
    plots.plot_hit_path(rows, images / "hit-path.png", targets={"target 0.9x": 0.9, "target 0.6x": 0.6},
                        ratios=[hit.ratio(target) for target in TARGETS])
    lines += ["![hit path](img/hit-path.png)", ""]
    for result in single.results:
        if result.call_times:
            name = f"upstream-rate-{result.action}.png"
            plots.plot_upstream_rate(result.call_times, result.cap, images / name,
                                     title=f"{result.action}: upstream calls per second (one gateway, backlog)")
            lines += [f"![upstream rate {result.action}](img/{name})", ""]
    print("fairness: 20 tenants, skewed demand ...", flush=True)
    lines += fairness.section(fairness.run_fairness(procs, workdir))
    print("coalescing: 10 to 10,000 identical misses ...", flush=True)
    lines += coalescing.section(coalescing.run_coalescing(procs, workdir))
    print("hit path against nginx proxy_cache ...", flush=True)
    lines += nginx.section(nginx.run_nginx(procs, workdir))
    if os.environ.get("BENCH_SKIP_REFRESH") != "1":
        print("refresh-ahead: Zipf over 1,000 templates at 200 req/s (warm-up + 2 TTLs) ...", flush=True)
        lines += refresh.section(refresh.run_refresh(procs, workdir))
    else:
        lines += ["## Refresh-ahead", "", "Skipped in this run (`BENCH_SKIP_REFRESH=1`).", ""]
    return lines


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    ensure_wrk()
    started, clock, load_before = datetime.now(UTC), time.monotonic(), os.getloadavg()[0]
    source_before = source_state()
    print("signing ...", flush=True)
    signing = run_signing()
    with tempfile.TemporaryDirectory(prefix="cams-bench-") as tmp, Procs(Path(tmp)) as procs:
        try:
            simulator = procs.simulator()
            redis = procs.redis()
            print(f"cache-hit path (wrk, {ROUNDS} rounds x {len(TARGETS)} targets x {ROUND_SECONDS} s) ...", flush=True)
            hit = hit_path(procs, simulator, redis)
            print("profile of the hit path (cProfile) ...", flush=True)
            profiles = {"memory": hot_spots(procs, simulator, Path(tmp), "memory"),
                        "redis-only": hot_spots(procs, simulator, Path(tmp), "redis-only", redis.url)}
            procs.stop(redis)
            fixed = wan.fixed_simulator(procs)
            print(f"miss path, one gateway ({TEMPLATE_MISSES} + {WABA_MISSES} misses at once) ...", flush=True)
            single = miss_path(procs, fixed)
            print(f"miss path, {REPLICAS} replicas sharing Redis ({TEMPLATE_MISSES} + {WABA_MISSES} misses at "
                  "once) ...", flush=True)
            replicas = miss_path_replicas(procs, fixed)
            print("miss path, one gateway, simulator with processing jitter ...", flush=True)
            jittery = miss_path(procs, simulator, "loopback, 1 gateway, simulator 80 ± 20 ms", TARGET_UTILISATION)
            wan_runs = wan.run_wan(procs, fixed, templates=TEMPLATE_MISSES, wabas=WABA_MISSES)
            adaptive_runs = adaptive.run_all(procs, simulator, fixed)
            procs.stop(fixed)
            images = Path(tmp) if QUICK else ROOT / "docs" / "img"
            adaptive.plot(adaptive_runs[1], images / "adaptive-rate.png")
            simulator_command = simulator.command
            extra = later_benchmarks(procs, Path(tmp), hit, single)
        except BaseException:
            for proc in procs.started:
                code = proc.popen.poll()
                state = ("running" if code is None else
                         f"exited with {code}: it was stopped from outside (SIGTERM/SIGINT)" if code in {0, -15, -2}
                         else f"exited with {code}")
                print(f"--- {proc.name} (pid {proc.pid}, {state}): {proc.command}\n{proc.log_tail()}", file=sys.stderr)
            raise
    source_after = source_state(source_before.files)
    text = report(started, time.monotonic() - clock, (load_before, os.getloadavg()[0]), signing, hit, profiles,
                  single, replicas, wan_runs, jittery, simulator_command, (source_before, source_after), extra,
                  adaptive_runs)
    if source_after.digest != source_before.digest:
        print("WARNING: the code on disk changed during the run; docs say so", file=sys.stderr)
    out = Path(tempfile.gettempdir()) / "cams-bench-quick.md" if QUICK else ROOT / "docs" / "benchmarks.md"
    out.write_text(text)
    print()
    print(summary(hit, single, replicas, wan_runs, jittery, signing))
    print(adaptive.summary(*adaptive_runs))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
