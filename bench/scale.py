"""Issue 16 at scale: the hit path over many keys, memory per cached entry, hit rates from 1k to 1M entries.

    make bench                                       # runs this last, into docs/benchmarks.md (bench.__main__)
    .venv/bin/python -m bench.scale                  # only these rows, about five minutes; writes
                                                     # $TMPDIR/cams-bench-scale.md
    BENCH_QUICK=1 .venv/bin/python -m bench.scale    # a short check of the harness (smaller sizes, 2 rounds of 2 s),
                                                     # about three minutes

Everything runs at the gateway's shipped defaults (``--log-level info`` with its access log, the default loop)
unless a row says otherwise; every entry is fresh for an hour (``--ttl GetChatappTemplateDetail=3600``), so none
expires during the run. A simulator and a redis-server of its own serve these rows (`run_scale`); the template body
comes from one upstream call (`bench.scale_gateways.fetch_template`). The row groups, each a module with its
section of the report:

1. `bench.scale_redis`: **Redis-only hit path over 10,000 keys, Zipf (s = 1)** against bare aiohttp answering the
   same body to the same script (target ≥ 0.7×). The entries are written into Redis by this process through the
   project's own `RedisCache.set` under the keys the gateway computes, checked by GETs that answer ``X-Cache: HIT``
   with no upstream call.
2. `bench.scale_memory`: **RSS per cached entry**, 10k and 100k entries, memory cache and tiered L1:
   `bench.scale_server` fills the real cache object of a real gateway before it serves and reads VmRSS before and
   after. No numeric target: the figure, beside what ``--memory-max-bytes`` counts.
3. `bench.scale_throughput`: **hit throughput at 1k, 100k and 1M entries** (memory cache; Zipf and uniform mixes)
   **and at 1 and 1,000 tenants** (``X-Tenant`` over 1,000 names, unknown to the gateway or named in a tenants
   file), in interleaved rounds, ratios to the 1k-entry, one-tenant Zipf run next to them; flat when every case is
   within 10 % of it. When 1M entries would not fit in the memory available, the largest size that fits is measured.

Measuring (wrk with `bench/zipf.lua`, CPU, paired ratios, the side caches' replay) is `bench.scale_measure`'s.
Everything listens on 127.0.0.1 on free ports; every process started is stopped at the end and on errors.
"""

from __future__ import annotations

import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench.common import QUICK
from bench.procs import Procs
from bench.scale_gateways import Template, fetch_template, mem_available, mib
from bench.scale_measure import ROUND_SECONDS, ROUNDS
from bench.scale_memory import MemoryRun, memory_section, run_memory
from bench.scale_redis import REDIS_KEYS, RedisZipfRun, redis_section, run_redis_zipf
from bench.scale_throughput import FLAT, TENANTS, THROUGHPUT_SIZES, ThroughputRun, run_throughput, throughput_section
from bench.wrk import ensure_wrk


@dataclass(frozen=True)
class ScaleRun:
    started: datetime
    elapsed_s: float
    template: Template
    redis_zipf: RedisZipfRun
    memory: MemoryRun
    throughput: ThroughputRun
    #: MemAvailable (bytes) when the scale rows started.
    mem_available: int

    @property
    def clean(self) -> bool:
        """No wrk run saw a non-2xx answer or a socket error."""
        return self.redis_zipf.clean and self.throughput.clean


def run_scale(procs: Procs, workdir: Path) -> ScaleRun:
    """The three row groups, on a simulator and a redis-server of their own (named apart from `make bench`'s, whose
    logs share ``workdir``), all stopped before it returns."""
    started, clock, available = datetime.now(UTC), time.monotonic(), mem_available()
    simulator = procs.simulator("simulator-scale")
    redis = procs.redis("redis-scale")
    print("template body (one upstream call) ...", flush=True)
    template = fetch_template(procs, simulator, workdir)
    print(f"1. Redis-only hit path, {REDIS_KEYS:,} keys, Zipf ({ROUNDS} rounds x {ROUND_SECONDS} s) ...", flush=True)
    redis_zipf = run_redis_zipf(procs, simulator, redis, template)
    print("2. RSS per cached entry ...", flush=True)
    memory = run_memory(procs, simulator, redis, template)
    procs.stop(redis)
    per_entry = max(r.total_per_entry for r in memory.rows if r.cache == "memory")
    print(f"3. hit throughput at {', '.join(f'{n:,}' for n in THROUGHPUT_SIZES)} entries and {TENANTS:,} tenants "
          "...", flush=True)
    throughput = run_throughput(procs, simulator, template, per_entry)
    procs.stop(simulator)
    return ScaleRun(started, time.monotonic() - clock, template, redis_zipf, memory, throughput, available)


def _met(met: bool | None) -> str:
    return "—" if met is None else "yes" if met else "**no**"


def targets_table(run: ScaleRun) -> list[str]:
    """One row per row group: its target, what was measured, met or not."""
    r, t = run.redis_zipf, run.throughput
    memory = ", ".join(f"{row.cache} {row.total_per_entry:,.0f} B at {row.entries:,}" for row in run.memory.rows)
    lowest, ratio = t.lowest
    return [
        "| row group | target | measured | met |",
        "| --- | --- | --- | :---: |",
        f"| Redis-only hit path, {r.keys:,} keys, Zipf (s = 1) | ≥ {r.target}× bare aiohttp | {r.ratio:.3f}× | "
        f"{_met(r.met)} |",
        f"| RSS per cached entry | none (the figure is the result) | {memory} | — |",
        f"| hit throughput against entries held and tenants | flat: every case ≥ {FLAT}× the reference "
        f"({t.reference}) | lowest {ratio:.3f}× ({lowest}) | {_met(t.flat)} |",
    ]


def section(run: ScaleRun, machine: Sequence[tuple[str, str]] | None = None) -> list[str]:
    """The report's "Scale" section. With ``machine`` (the standalone `main`), a table of the machine and a note of
    the shortened run; without (`make bench`, whose report has both at its top), neither."""
    standalone = machine is not None
    lines = [
        "## Scale: many keys, memory per entry, 1k to 1M entries, 1,000 tenants (issue 16)",
        "",
        *(["**BENCH_QUICK=1: a shortened run with smaller sizes, to check the harness; its numbers are not for "
           "reading.**", ""] if QUICK and standalone else []),
        (f"Measured by `.venv/bin/python -m bench.scale` on {run.started:%Y-%m-%d %H:%M} UTC in "
         f"{run.elapsed_s:.0f} s, one run on one machine shared with other work (read the ratios)."
         if standalone else
         f"Measured by `make bench` after the parts above, from {run.started:%H:%M} UTC for {run.elapsed_s:.0f} s "
         f"(MemAvailable {mib(run.mem_available)} at the start), on a simulator and a redis-server of its own.")
        + " Every gateway runs at the shipped defaults (`--log-level info` with its access log, the default event "
        "loop) unless its row says otherwise, with `--ttl GetChatappTemplateDetail=3600`; the body of every entry "
        f"is the simulator's answer for the hit path's template ({len(run.template.body):,} bytes) with its "
        "template code and RequestId replaced.",
        "",
    ]
    if machine is not None:
        lines += ["| | |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in machine),
                  f"| MemAvailable at start | {mib(run.mem_available)} |", ""]
    if not run.clean:
        lines += ["**Some wrk runs of these rows saw non-2xx answers or socket errors (see the rows).**", ""]
    lines += [
        *targets_table(run),
        "",
        *redis_section(run.redis_zipf),
        *memory_section(run.memory),
        *throughput_section(run.throughput),
        "### Commands (scale)",
        "",
        "From the project directory; ports are the free ones of this run, `/tmp/...` files its own (the template "
        "body, the tenants file). wrk's script is `bench/zipf.lua` (arguments: path prefix, entries, law, "
        "tenants, seed; the seed changes per run).",
        "",
        "```sh",
        "# the template body: one upstream call through a memory-cache gateway",
        *run.template.commands,
        "# 1. Redis only, 10k keys, Zipf",
        *run.redis_zipf.commands,
        "# 2. memory per entry",
        *(row.command for row in run.memory.rows),
        "# 3. throughput against entries and tenants",
        *run.throughput.commands,
        "```",
        "",
    ]
    return lines


def summary_line(run: ScaleRun) -> str:
    """One line for `make bench`'s summary: each row group's result and verdict."""
    r, t = run.redis_zipf, run.throughput
    memory = max((row for row in run.memory.rows if row.cache == "memory"), key=lambda row: row.entries)
    lowest, ratio = t.lowest
    return (f"scale: redis-only {r.keys:,} keys Zipf {r.ratio:.3f}x bare (>= {r.target}: "
            f"{'met' if r.met else 'NOT MET'}); {memory.total_per_entry:,.0f} B/entry at {memory.entries:,} "
            f"(memory cache); throughput lowest {ratio:.3f}x of {t.reference} ({lowest}; flat >= {FLAT}: "
            f"{'met' if t.flat else 'NOT MET'})")


def summary(run: ScaleRun) -> str:
    r = run.redis_zipf
    rows = [f"redis-only, {r.keys:,} keys, Zipf: {r.ratio:.3f}x bare (target >= {r.target}: "
            f"{'met' if r.met else 'NOT MET'}; memo hit share {r.memo_hit:.1%})", "memory per entry:"]
    rows += [f"  {row.cache:<7}{row.entries:>9,}: {row.total_per_entry:7,.0f} B/entry (cache "
             f"{row.cache_per_entry:,.0f}, tags {row.tags_per_entry:,.0f}; body {row.figures['body_bytes']:,})"
             for row in run.memory.rows]
    t = run.throughput
    rows.append("throughput (ratio to " + t.reference + "):")
    for case in t.cases:
        rps = statistics.median(x.rps for x in t.runs if x.label == case.label)
        rows.append(f"  {case.label:<40}{rps:9,.0f} req/s  {t.ratio(case.label):.3f}x  memo "
                    f"{t.memo.get(case.label, float('nan')):.0%}")
    return "\n".join(rows)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def main() -> None:
    """Only the scale rows, written to ``$TMPDIR/cams-bench-scale.md`` (never to ``docs/``)."""
    from bench.machine import machine, source_row, source_state

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    ensure_wrk()
    source_before = source_state()
    with tempfile.TemporaryDirectory(prefix="cams-bench-scale-") as tmp, Procs(Path(tmp)) as procs:
        try:
            run = run_scale(procs, Path(tmp))
        except BaseException:
            for proc in procs.started:
                code = proc.popen.poll()
                state = "running" if code is None else f"exited with {code}"
                print(f"--- {proc.name} (pid {proc.pid}, {state}): {proc.command}\n{proc.log_tail()}",
                      file=sys.stderr)
            raise
    text = "\n".join(section(run, machine(source_row(source_before, source_state(source_before.files)))))
    out = Path(tempfile.gettempdir()) / "cams-bench-scale.md"
    out.write_text(text)
    print()
    print(summary(run))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
