"""Run every benchmark side by side in one go and write ``docs/benchmarks.md``.

    make bench                                # = scripts/ensure-redis.sh, then .venv/bin/python -m bench
    BENCH_QUICK=1 .venv/bin/python -m bench   # a short check of the harness itself (see below)
    BENCH_SKIP_REFRESH=1 make bench           # without the refresh-ahead run (the longest part)

In this order, in one process that starts every server it measures (`bench.procs.Procs`):

1. signing: our V3 signer against the SDK's (pure, in this process; `bench.signing`);
2. cache-hit path (`bench.hit`, its section `bench.hit_report`): wrk against one bare aiohttp process and gateways
   answering the same cached template (memory cache, tiered, Redis only, ``--workers 2``, at the shipped defaults
   and at warning and/or on asyncio) and two bare processes on one port, in interleaved rounds, each gateway
   run's ratio to the bare runs just before and after it;
3. where a hit's time goes (`bench.hit_profile`): a short wrk run against a memory-cache and a Redis-only
   gateway under cProfile;
4. miss path (`bench.miss_path`): 100 template and 150 WABA misses at once through one gateway, then through
   three replicas sharing one redis-server, against the caps (5/s, 10/s), against a simulator with processing
   jitter, and under WAN profiles (`bench.wan`); then the adaptive budget (`bench.adaptive`);
5. the plots, fairness, coalescing, the hit path against nginx ``proxy_cache`` and refresh-ahead (`later_benchmarks`);
6. scale (issue 16, `bench.scale`): the Redis-only hit path over 10,000 keys with a Zipf mix, RSS per cached
   entry at 10k and 100k entries, hit throughput at 1k, 100k and 1M entries and at 1 and 1,000 tenants.

`bench.report` writes the report (machine table, reading, each part's section, commands) and the summary printed
at the end. Everything listens on 127.0.0.1 on free ports; every process started is stopped at the end, on
errors too. Numbers are ratios measured in one run on one machine; absolute figures are for orientation only.
The whole run takes about half an hour on the 2-core machine it was written on: refresh-ahead alone about
17 minutes (warm-up plus two 300 s TTLs; ``BENCH_SKIP_REFRESH=1`` leaves it out), the scale rows about five.

``BENCH_QUICK=1`` shortens everything (3 rounds of 2 s, 1 s warm-ups, 2 s profiles, 20 + 30 misses, shorter
windows and smaller sizes in the later parts and the scale rows) to check the harness in about ten minutes; it
writes its report to ``$TMPDIR/cams-bench-quick.md`` and its plots to the run's temporary directory, never to
``docs/``, and its numbers are not for reading. Each part also runs alone (``python -m bench.wan``,
``python -m bench.scale``, ...).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import adaptive, scale, wan
from bench.common import QUICK
from bench.hit import LABELS, ROUND_SECONDS, ROUNDS, TARGETS, HitRun, hit_path
from bench.hit_profile import hot_spots
from bench.machine import source_state
from bench.miss import TARGET_UTILISATION, MissRun
from bench.miss_path import REPLICAS, TEMPLATE_MISSES, WABA_MISSES, miss_path, miss_path_replicas
from bench.procs import ROOT, Procs
from bench.report import report, summary
from bench.signing import run_signing
from bench.wrk import ensure_wrk


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGINT (even when started in the background, where SIGINT is ignored) unwind through the
    ``finally`` blocks, so every process the run started is stopped."""
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def later_benchmarks(procs: Procs, workdir: Path, hit: HitRun, single: MissRun) -> list[str]:
    """The benchmarks of the freshness, fairness and operations issues, and the plots: Markdown sections.
    ``BENCH_SKIP_REFRESH=1`` leaves out the refresh-ahead run (the longest: warm-up plus two 300 s TTLs)."""
    from bench import coalescing, fairness, nginx, plots, refresh

    lines: list[str] = ["## Plots", ""]
    images = workdir if QUICK else ROOT / "docs" / "img"
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
            print("scale (issue 16): many keys, memory per entry, 1k to 1M entries, 1,000 tenants ...", flush=True)
            scale_run = scale.run_scale(procs, Path(tmp))
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
                  adaptive_runs, scale_run)
    if source_after.digest != source_before.digest:
        print("WARNING: the code on disk changed during the run; docs say so", file=sys.stderr)
    out = Path(tempfile.gettempdir()) / "cams-bench-quick.md" if QUICK else ROOT / "docs" / "benchmarks.md"
    out.write_text(text)
    print()
    print(summary(hit, single, replicas, wan_runs, jittery, signing, scale_run))
    print(adaptive.summary(*adaptive_runs))
    print(scale.summary(scale_run))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
