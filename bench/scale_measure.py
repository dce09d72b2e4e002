"""How `bench.scale` measures: wrk runs of a request mix (`bench.zipf`) with the CPU the server used meanwhile
(`Measurer`, `Run`), ratios to the reference runs just before and after (`paired_ratios`), and what the gateway's
bounded side caches make of the runs' request streams (`replay`: the call memo, the decoded Redis values).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from bench.common import QUICK
from bench.procs import Proc, cpu_seconds, redis_commands
from bench.scale_gateways import FILL_TTL_S, Template
from bench.scale_server import body_for, call_for, entry_for, gateway_key
from bench.wrk import WrkResult
from bench.zipf import Mix, memo_hit_rates, path_for, run_wrk_mix
from proxy.settings import GatewaySettings

ROUNDS: Final = 2 if QUICK else 3
ROUND_SECONDS: Final = 2 if QUICK else 4
WARMUP_SECONDS: Final = 1 if QUICK else 2
WRK_THREADS: Final = 1
WRK_CONNECTIONS: Final = 64


@dataclass(frozen=True)
class Run:
    """One wrk run against one target, with the CPU the serving process (and redis-server) used meanwhile."""

    label: str
    wrk: WrkResult
    server_cpu_s: float
    redis_cpu_s: float = 0.0
    redis_commands: int = 0

    @property
    def rps(self) -> float:
        return self.wrk.requests_per_s

    def per_request(self, value: float) -> float:
        return value / self.wrk.requests if self.wrk.requests else 0.0

    @property
    def server_us(self) -> float:
        return self.per_request(self.server_cpu_s) * 1e6

    @property
    def redis_per_request(self) -> float:
        return self.per_request(self.redis_commands)


def paired_ratios(runs: Sequence[Run], reference: str) -> dict[str, list[float]]:
    """Each non-reference run's req/s over the mean of the reference runs just before and just after it."""
    found: dict[str, list[float]] = {}
    for index, run in enumerate(runs):
        if run.label == reference:
            continue
        before = next((r for r in reversed(runs[:index]) if r.label == reference), None)
        after = next((r for r in runs[index + 1:] if r.label == reference), before)
        if before is None or after is None:
            raise RuntimeError(f"no {reference} run next to {run.label}")
        found.setdefault(run.label, []).append(run.rps / ((before.rps + after.rps) / 2))
    return found


class Measurer:
    """wrk runs against named servers, one at a time, each with a new seed (so no stream is replayed)."""

    def __init__(self, redis: Proc | None = None) -> None:
        self.redis = redis
        self.seed = 0
        self.commands: dict[str, str] = {}
        #: label -> (mix, requests) of every run, warm-ups included, in order (for the memo replay).
        self.history: list[tuple[str, Mix, int]] = []

    def run(self, label: str, server: Proc, mix: Mix, seconds: int, *, quiet: bool = False) -> Run:
        self.seed += 1
        redis = self.redis
        cpu_before = cpu_seconds(server.pid)
        redis_before = cpu_seconds(redis.pid) if redis else 0.0
        commands_before = redis_commands(redis.port) if redis else 0
        result = run_wrk_mix(server.url, mix, self.seed, threads=WRK_THREADS, connections=WRK_CONNECTIONS,
                             seconds=seconds)
        run = Run(label, result, cpu_seconds(server.pid) - cpu_before,
                  cpu_seconds(redis.pid) - redis_before if redis else 0.0,
                  redis_commands(redis.port) - commands_before - 1 if redis else 0)
        self.commands.setdefault(label, result.command)
        self.history.append((label, mix, result.requests))
        if not quiet:
            print(f"  {label:<40} {run.rps:9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                  f"server {run.server_us:5.0f} us/req"
                  + (f"  redis {run.redis_per_request:.2f} cmd/req" if redis else "")
                  + ("" if result.clean else f"  NON-2XX {result.non_2xx} ERRORS {result.socket_errors}"),
                  flush=True)
        return run


def memo_call_bytes(settings: GatewaySettings) -> int:
    """What the call memo counts for one of `bench.zipf`'s paths (`CallHandler._answer`: the call's size plus its
    raw path twice; every path is as long as path 0)."""
    from proxy.web.handler import MemoCall

    spec, params = call_for(0)
    call = MemoCall(spec, params, gateway_key(settings, spec, params), None, settings.account or "")
    return call.size + 2 * len(path_for(0))


def decoded_value_bytes(settings: GatewaySettings, template: Template) -> int:
    """What the Redis cache's decoded-entry map counts for one value (`RedisCache._entry`)."""
    from proxy.cache.redis import DECODED_OVERHEAD, pack_entry

    spec, params = call_for(0)
    entry, _ = entry_for(body_for(template.body, 0), time.time(), FILL_TTL_S, settings)
    return DECODED_OVERHEAD + len("cams:c:" + gateway_key(settings, spec, params)) + len(pack_entry(entry))


def replay(measurer: Measurer, labels: set[str], memo_bytes: int, call_bytes: int) -> dict[str, float]:
    """The memo hit share of each label's runs against one gateway (median over its measured runs; warm-ups are
    replayed but not counted), from `bench.zipf.memo_hit_rates` over the runs in the order they ran."""
    history = [(label, mix, n) for label, mix, n in measurer.history if label.split(" (warm-up)")[0] in labels]
    rates = memo_hit_rates([(mix, n) for _label, mix, n in history], memo_bytes, call_bytes)
    found: dict[str, list[float]] = {}
    for (label, _mix, _n), rate in zip(history, rates, strict=True):
        if "(warm-up)" not in label:
            found.setdefault(label, []).append(rate)
    return {label: float(statistics.median(values)) for label, values in found.items()}
