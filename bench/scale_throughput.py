"""Scale rows, part 3: hit throughput at 1k, 100k and 1M entries (memory cache; Zipf and uniform mixes) and at
1 and 1,000 tenants, and its section of the report.

Each case is a `bench.scale_server` gateway, measured in interleaved rounds, its ratio to the 1k-entry, one-tenant
Zipf run next to it. When 1M entries would not fit in the memory available, the largest size that fits is measured
instead (`largest_fitting`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Final

from bench.common import QUICK, admin_status, sim_reset
from bench.procs import Proc, Procs
from bench.scale_gateways import (
    SHIPPED,
    Scaled,
    Template,
    budget_flags,
    expect_hits,
    flags_text,
    gateway_settings_of,
    mem_available,
    mib,
    spawn_scaled,
    upstream_calls,
    wait_scaled,
)
from bench.scale_measure import (
    ROUND_SECONDS,
    ROUNDS,
    WARMUP_SECONDS,
    Measurer,
    Run,
    memo_call_bytes,
    paired_ratios,
    replay,
)
from bench.zipf import Mix, tenant_name

THROUGHPUT_SIZES: Final = (1_000, 10_000, 100_000) if QUICK else (1_000, 100_000, 1_000_000)
#: Sizes tried, largest first, when the last of `THROUGHPUT_SIZES` does not fit in the memory available.
FALLBACK_SIZES: Final = (500_000, 300_000, 200_000)
TENANTS: Final = 1_000
#: The share of MemAvailable the largest gateway may take (the machine is shared).
MEMORY_SHARE: Final = 0.6
#: Throughput ratios to the reference under this count as "not flat": the criterion of these rows, every case at
#: least this share of the reference's req/s.
FLAT: Final = 0.9


@dataclass(frozen=True)
class Case:
    label: str
    server: str
    mix: Mix


@dataclass(frozen=True)
class ThroughputRun:
    cases: list[Case]
    runs: list[Run]
    ratios: dict[str, list[float]]
    servers: dict[str, Scaled]
    memo: dict[str, float]
    memo_capacity: dict[str, int]
    checks: list[str]
    commands: list[str]
    sizes: tuple[int, ...]
    fit_note: str
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: str = "1k, Zipf, 1 tenant"

    def ratio(self, label: str) -> float:
        return 1.0 if label == self.reference else float(statistics.median(self.ratios[label]))

    @property
    def clean(self) -> bool:
        return all(r.wrk.clean for r in self.runs)

    @property
    def lowest(self) -> tuple[str, float]:
        """The case furthest below the reference, and its ratio."""
        others = [c.label for c in self.cases if c.label != self.reference]
        label = min(others, key=self.ratio)
        return label, self.ratio(label)

    @property
    def flat(self) -> bool:
        """Every case at `FLAT` or more of the reference."""
        return self.lowest[1] >= FLAT


def _size_name(entries: int) -> str:
    return f"{entries // 1_000_000}M" if entries % 1_000_000 == 0 else f"{entries // 1000}k"


def largest_fitting(wanted: int, per_entry: float) -> tuple[int, str]:
    """``wanted`` entries, or the largest of `FALLBACK_SIZES` whose gateway would take at most `MEMORY_SHARE` of
    MemAvailable (at ``per_entry`` bytes, measured in part 2, plus 25 % and 200 MiB)."""
    available = mem_available()

    def need(n: int) -> float:
        return n * per_entry * 1.25 + 200 * 1024 * 1024

    note = (f"MemAvailable {mib(available)} before the fills; {wanted:,} entries need about "
            f"{mib(need(wanted))} at {per_entry:,.0f} B/entry (part 2, with purge tags) + 25 % + 200 MiB")
    if need(wanted) <= MEMORY_SHARE * available:
        return wanted, note + f": fits within {MEMORY_SHARE:.0%} of it"
    for size in FALLBACK_SIZES:
        if size < wanted and need(size) <= MEMORY_SHARE * available:
            return size, note + f": **does not fit** in {MEMORY_SHARE:.0%} of it, so {size:,} entries were measured"
    raise RuntimeError(note + ": not even the smallest fallback fits")


def run_throughput(procs: Procs, simulator: Proc, template: Template, per_entry: float) -> ThroughputRun:
    from proxy.bounded import memory_shares

    small, middle, wanted = THROUGHPUT_SIZES
    large, fit_note = largest_fitting(wanted, per_entry)
    sizes = (small, middle, large)
    tenants_file = procs.workdir / "tenants-1000.json"
    tenants_file.write_text(json.dumps({"tenants": {tenant_name(i): {} for i in range(TENANTS)}}))
    body = len(template.body)
    specs = {  # server name -> entries, flags
        _size_name(small): (small, (*SHIPPED, *budget_flags(small, body, redis=False))),
        _size_name(middle): (middle, (*SHIPPED, *budget_flags(middle, body, redis=False))),
        _size_name(large): (large, (*SHIPPED, *budget_flags(large, body, redis=False))),
        f"{_size_name(small)}+tenants": (small, (*SHIPPED, *budget_flags(small, body, redis=False), "--tenants",
                                                 str(tenants_file))),
    }
    print(f"  filling {', '.join(f'{name} ({n:,})' for name, (n, _f) in specs.items())} at once ...", flush=True)
    spawned = {name: spawn_scaled(procs, f"scale-throughput-{name}", simulator, template, n, flags)
               for name, (n, flags) in specs.items()}
    servers = {name: wait_scaled(proc, n, specs[name][1]) for name, (proc, n) in spawned.items()}
    checks: list[str] = []
    sim_reset(simulator)
    for scaled in servers.values():
        expect_hits(scaled.proc, scaled.entries, template.body)
    s, m, lg = (_size_name(n) for n in sizes)
    t = f"{s}+tenants"
    cases = [
        Case(f"{s}, Zipf, 1 tenant", s, Mix(small, "zipf", 1)),
        Case(f"{m}, Zipf, 1 tenant", m, Mix(middle, "zipf", 1)),
        Case(f"{lg}, Zipf, 1 tenant", lg, Mix(large, "zipf", 1)),
        Case(f"{s}, uniform, 1 tenant", s, Mix(small, "uniform", 1)),
        Case(f"{m}, uniform, 1 tenant", m, Mix(middle, "uniform", 1)),
        Case(f"{lg}, uniform, 1 tenant", lg, Mix(large, "uniform", 1)),
        Case(f"{s}, Zipf, {TENANTS:,} tenants (unnamed)", s, Mix(small, "zipf", TENANTS)),
        Case(f"{s}, Zipf, {TENANTS:,} tenants (tenants file)", t, Mix(small, "zipf", TENANTS)),
    ]
    reference, others = cases[0], cases[1:]
    measurer = Measurer()
    for case in cases:
        measurer.run(f"{case.label} (warm-up)", servers[case.server].proc, case.mix, WARMUP_SECONDS, quiet=True)
    runs: list[Run] = []
    for number in range(ROUNDS):
        shift = number % len(others)
        runs.append(measurer.run(reference.label, servers[reference.server].proc, reference.mix, ROUND_SECONDS))
        for case in others[shift:] + others[:shift]:
            runs.append(measurer.run(case.label, servers[case.server].proc, case.mix, ROUND_SECONDS))
    runs.append(measurer.run(reference.label, servers[reference.server].proc, reference.mix, ROUND_SECONDS))
    calls = upstream_calls(simulator)
    if calls:
        raise RuntimeError(f"{calls} upstream calls during the throughput rounds: some request missed")
    statuses = {}
    for name, scaled in servers.items():
        expect_hits(scaled.proc, scaled.entries, template.body)
        statuses[name] = admin_status(scaled.proc)
    misses = sum(int(doc["counters"]["misses"]) for doc in statuses.values())
    if misses:
        raise RuntimeError(f"{misses} misses counted by the throughput gateways")
    checks.append(f"every gateway answered `X-Cache: HIT` with the entry's exact body on the hottest, middle and "
                  f"last paths before and after the rounds; the simulator saw 0 upstream calls and the gateways "
                  f"counted 0 misses over {sum(int(d['counters']['hits']) for d in statuses.values()):,} hits")
    checks.append(f"the tenants file names {TENANTS:,} tenants `t0000` … `t0999` (no authentication): each gets a "
                  "`tenant` label of its own in `cams_proxy_requests_total`; without it every `X-Tenant` but "
                  "`anonymous` is labelled `other` (`Metrics.tenant`)")
    memo: dict[str, float] = {}
    capacity: dict[str, int] = {}
    for name, scaled in servers.items():
        settings = gateway_settings_of(scaled.proc)
        shares = memory_shares(settings.memory_max_bytes, redis=False, max_entries=settings.memory_max_entries)
        call_bytes = memo_call_bytes(settings)
        capacity[name] = min(shares.call_memo // call_bytes, 1 << 20)
        memo.update(replay(measurer, {c.label for c in cases if c.server == name}, shares.call_memo, call_bytes))
    commands = [*(scaled.proc.command for scaled in servers.values()),
                *(measurer.commands[case.label] for case in cases)]
    for scaled in reversed(servers.values()):
        procs.stop(scaled.proc)
    return ThroughputRun(cases, runs, paired_ratios(runs, reference.label), servers, memo, capacity, checks, commands,
                         sizes, fit_note, statuses, reference.label)


def throughput_section(run: ThroughputRun) -> list[str]:
    lowest, lowest_ratio = run.lowest
    lines = [
        "### Hit throughput against entries held and tenants",
        "",
        f"**Flat (every case ≥ {FLAT}× the reference's req/s):** {'met' if run.flat else '**not met**'} (lowest: "
        f"{lowest}, {lowest_ratio:.3f}×)."
        + ("" if run.clean else " **Some runs saw non-2xx answers or socket errors.**"),
        "",
        f"Memory-cache gateways (`bench.scale_server`) holding {', '.join(f'{n:,}' for n in run.sizes)} entries "
        f"(same shape as above, purge tags indexed), wrk drawing paths by Zipf (s = 1) or uniformly over all the "
        f"entries, with `X-Tenant: t0000`, or `X-Tenant` uniform over {TENANTS:,} names, unknown to the gateway "
        f"or named in a tenants file. {ROUNDS} rounds of {ROUND_SECONDS} s after a {WARMUP_SECONDS} s warm-up of "
        f"each case; each round starts with the reference ({run.reference}), the other cases follow in a rotated "
        "order, one more reference run closes; a case's ratio is the median of its req/s over the mean of the "
        f"reference runs before and after it. {run.fit_note}.",
        "",
        "| case | gateway | req/s | p99 ms | server CPU µs/req | call memo holds | memo hit share (replayed) | "
        "ratio to reference |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in run.cases:
        scaled = run.servers[case.server]
        runs = [r for r in run.runs if r.label == case.label]
        ratio = ("1 (reference)" if case.label == run.reference else
                 f"**{run.ratio(case.label):.3f}×** ({', '.join(f'{r:.2f}' for r in run.ratios[case.label])})")
        lines.append(f"| {case.mix.describe()} | {scaled.entries:,} entries, {flags_text(scaled.flags)} | "
                     f"{statistics.median(r.rps for r in runs):,.0f} | "
                     f"{statistics.median(r.wrk.p99_ms for r in runs):.2f} | "
                     f"{statistics.median(r.server_us for r in runs):.0f} | "
                     f"{run.memo_capacity[case.server]:,} calls | {run.memo.get(case.label, float('nan')):.1%} | "
                     f"{ratio} |")
    lines += ["", *reading_throughput(run), "", "Checked:", "", *(f"- {check}" for check in run.checks), ""]
    return lines


def reading_throughput(run: ThroughputRun) -> list[str]:
    below = [c for c in run.cases if c.label != run.reference and run.ratio(c.label) < FLAT]
    flat = [c for c in run.cases if c.label != run.reference and run.ratio(c.label) >= FLAT]
    text = []
    if flat:
        text.append(f"Within {1 - FLAT:.0%} of the reference: " + "; ".join(
            f"{c.label} ({run.ratio(c.label):.2f}×)" for c in flat) + ".")
    if below:
        text.append("**Not flat**: " + "; ".join(
            f"{c.label} ({run.ratio(c.label):.2f}×, memo hit share {run.memo.get(c.label, float('nan')):.0%})"
            for c in below) + ".")
    text.append(
        "Why a mix over many entries can cost more: the memory cache is a dict lookup whatever its size (an "
        "`OrderedDict` `move_to_end` per hit), but three side caches of the hit path are bounded by their shares "
        "of `--memory-max-bytes`: the call memo (validated call and key per raw path, 1/16), the rendered hit "
        "headers (1/16, per entry, reused for at most 50 ms) and, per first hit of an entry generation, the "
        "refresh-ahead plan (at most 10,000 keys planned; further hits skip it). A request whose call is not "
        "memoised parses its query, validates it and hashes the key again (the replayed memo hit share above), "
        "and a key hit less than once per 50 ms renders its headers again; with a large budget both hold more "
        "(they scale with it), but a uniform mix over 1M entries touches more keys than any of them holds. "
        "Tenants: the request counter keeps a plain dict per (action, cache, status, tenant) flushed into "
        "Prometheus once a second (`Metrics.count_request`), unnamed tenants all become `other`, named ones get a "
        "label each, so 1,000 tenants add at most 1,000 dict keys and label children, touched once a second.")
    return text
