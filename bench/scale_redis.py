"""Scale rows, part 1: the Redis-only hit path over 10,000 keys with a Zipf (s = 1) mix against bare aiohttp
(target >= 0.7x), and its section of the report.

A gateway with ``--redis-url`` and ``--l1-max-ttl-s 0``; the entries are written into Redis by this process through
the project's own `RedisCache.set` under the keys the gateway computes, checked by GETs that answer ``X-Cache: HIT``
with no upstream call at the simulator. wrk (`bench/zipf.lua`) draws every request's path by Zipf over the keys;
bare aiohttp serves the same body to the same script. Interleaved rounds; a gateway run's ratio is to the mean of
the bare runs just before and after it.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from typing import Any, Final

from bench.common import ADMIN_TOKEN, admin_status, sim_reset
from bench.procs import Proc, Procs
from bench.scale_gateways import (
    SHIPPED,
    TTL_FLAGS,
    Template,
    expect_hits,
    gateway_settings_of,
    get,
    mib,
    upstream_calls,
    write_redis_entries,
)
from bench.scale_measure import (
    ROUND_SECONDS,
    ROUNDS,
    WARMUP_SECONDS,
    WRK_CONNECTIONS,
    WRK_THREADS,
    Measurer,
    Run,
    decoded_value_bytes,
    memo_call_bytes,
    paired_ratios,
    replay,
)
from bench.scale_server import body_for
from bench.zipf import Mix, path_for

REDIS_KEYS: Final = 10_000
REDIS_TARGET: Final = 0.7


@dataclass(frozen=True)
class RedisZipfRun:
    keys: int
    runs: list[Run]
    ratios: list[float]
    checks: list[str]
    commands: list[str]
    body_bytes: int
    memo_hit: float
    memo_capacity: int
    decoded_hit: float
    decoded_capacity: int
    hits_counted: int
    misses_counted: int
    access_log: dict[str, Any]
    #: The gateway's ``--memory-max-bytes`` and its shares for the call memo and the decoded Redis values.
    max_bytes: int = 0
    memo_bytes: int = 0
    decoded_bytes: int = 0
    target: float = REDIS_TARGET

    @property
    def ratio(self) -> float:
        return float(statistics.median(self.ratios))

    @property
    def met(self) -> bool:
        return self.ratio >= self.target

    @property
    def clean(self) -> bool:
        return all(r.wrk.clean for r in self.runs)


def run_redis_zipf(procs: Procs, simulator: Proc, redis: Proc, template: Template) -> RedisZipfRun:
    from proxy.bounded import memory_shares

    gateway = procs.gateway("gateway-redis-only-zipf", simulator.url, redis_url=redis.url,
                            extra=(*TTL_FLAGS, *SHIPPED, "--l1-max-ttl-s", "0"),
                            env={"PROXY_ADMIN_TOKEN": ADMIN_TOKEN})
    settings = gateway_settings_of(gateway)
    checks: list[str] = []
    written = asyncio.run(write_redis_entries(redis.url, settings, template, REDIS_KEYS))
    sim_reset(simulator)
    checked = expect_hits(gateway, REDIS_KEYS, template.body)
    if upstream_calls(simulator):
        raise RuntimeError(f"the Redis-only gateway called upstream {upstream_calls(simulator)} times on hits")
    checks.append(f"{written:,} entries written into Redis by this process through `RedisCache.set` (the "
                  f"gateway's value format `c2`, prefix `cams:c:`) under `gateway_key`, which equals the "
                  f"`X-Cache-Key` the gateway gave the template call ({template.key[:40]}…); {checked} of the paths "
                  "(the hottest, the middle, the last) answered `X-Cache: HIT` with their entry's exact body, and "
                  "the simulator saw 0 upstream calls")
    bare = procs.bare(gateway.url + path_for(0), name="bare-aiohttp-scale")
    status, bare_headers, bare_body = get(bare.url + path_for(REDIS_KEYS - 1))
    same_type = bare_headers["Content-Type"] == template.content_type
    if status != 200 or bare_body != body_for(template.body, 0) or not same_type:
        raise RuntimeError("bare aiohttp does not answer the entries' body and Content-Type on any path")
    checks.append(f"bare aiohttp answers every path with entry 0's {len(bare_body):,} body bytes (each entry's body "
                  f"is as long) and `Content-Type: {template.content_type}`")
    mix = Mix(REDIS_KEYS, "zipf")
    measurer = Measurer(redis)
    servers = {"bare": bare, "redis-only": gateway}
    for label, server in servers.items():
        measurer.run(f"{label} (warm-up)", server, mix, WARMUP_SECONDS, quiet=True)
    runs = [measurer.run("bare", bare, mix, ROUND_SECONDS)]
    for _round in range(ROUNDS):
        runs.append(measurer.run("redis-only", gateway, mix, ROUND_SECONDS))
        runs.append(measurer.run("bare", bare, mix, ROUND_SECONDS))
    calls = upstream_calls(simulator)
    if calls:
        raise RuntimeError(f"the Redis-only gateway called upstream {calls} times during the rounds")
    expect_hits(gateway, REDIS_KEYS, template.body)
    status_doc = admin_status(gateway)
    counters = status_doc["counters"]
    checks.append(f"after the rounds: 0 upstream calls at the simulator (every request of every round was a hit), "
                  f"the same paths still `X-Cache: HIT`; the gateway counted {counters['hits']:,} hits and "
                  f"{counters['misses']} misses, {counters['cache_errors']} cache errors")
    shares = memory_shares(settings.memory_max_bytes, redis=True, max_entries=settings.memory_max_entries)
    call_bytes, value_bytes = memo_call_bytes(settings), decoded_value_bytes(settings, template)
    memo = replay(measurer, {"redis-only"}, shares.call_memo, call_bytes)
    decoded = replay(measurer, {"redis-only"}, shares.decoded, value_bytes)
    commands = [redis.command, gateway.command, bare.command, measurer.commands["bare"],
                measurer.commands["redis-only"]]
    for proc in (bare, gateway):
        procs.stop(proc)
    return RedisZipfRun(REDIS_KEYS, runs, paired_ratios(runs, "bare")["redis-only"], checks, commands,
                        len(template.body), memo["redis-only"], shares.call_memo // call_bytes,
                        decoded["redis-only"], shares.decoded // value_bytes, int(counters["hits"]),
                        int(counters["misses"]), dict(status_doc.get("access_log", {})), settings.memory_max_bytes,
                        shares.call_memo, shares.decoded)


def redis_section(run: RedisZipfRun) -> list[str]:
    gateway = [r for r in run.runs if r.label == "redis-only"]
    bare = [r for r in run.runs if r.label == "bare"]

    def row(name: str, runs: list[Run], ratio: str, extra: str) -> str:
        p50, p99 = statistics.median(r.wrk.p50_ms for r in runs), statistics.median(r.wrk.p99_ms for r in runs)
        return (f"| {name} | {statistics.median(r.rps for r in runs):,.0f} | {p50:.2f} | {p99:.2f} | "
                f"{statistics.median(r.server_us for r in runs):.0f} | {extra} | {ratio} |")

    redis_cmds = statistics.median(r.redis_per_request for r in gateway)
    redis_us = statistics.median(r.per_request(r.redis_cpu_s) * 1e6 for r in gateway)
    verdict = "met" if run.met else "**not met**"
    dropped = run.access_log.get("dropped")
    return [
        f"### Redis-only hit path over {run.keys:,} keys, Zipf (s = 1)",
        "",
        f"**Target: ≥ {run.target}× bare aiohttp's req/s:** {verdict} ({run.ratio:.3f}×, the median of "
        f"{len(run.ratios)} paired ratios).",
        "",
        f"A Redis-only gateway (`--redis-url`, `--l1-max-ttl-s 0`, otherwise shipped defaults: `--log-level info` "
        f"with its access log, the default loop, `--memory-max-bytes` {mib(run.max_bytes)}) in front of "
        f"{run.keys:,} entries "
        f"of {run.body_bytes:,} body bytes each, wrk drawing every request's path by Zipf's law (s = 1: the "
        f"hottest path gets {Mix(run.keys).head_share(1):.1%} of the requests, the hottest 100 "
        f"{Mix(run.keys).head_share(100):.0%}, the hottest 1,000 {Mix(run.keys).head_share(1000):.0%}), against "
        f"bare aiohttp answering the same body to the same script; {ROUNDS} rounds of {ROUND_SECONDS} s after a "
        f"{WARMUP_SECONDS} s warm-up of each, {WRK_CONNECTIONS} connections, {WRK_THREADS} wrk thread. The ratio "
        "is the median of each gateway run's req/s over the mean of the bare runs just before and after it.",
        "",
        "| target | req/s | p50 ms | p99 ms | server CPU µs/req | Redis | ratio to bare |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
        row("bare aiohttp (asyncio, no access log)", bare, "1", "—"),
        row("gateway, Redis only, shipped defaults", gateway,
            f"**{run.ratio:.3f}×** ({', '.join(f'{r:.3f}' for r in run.ratios)})",
            f"{redis_cmds:.3f} commands/req, {redis_us:.1f} µs CPU/req"),
        "",
        ("" if run.clean else "**Some runs saw non-2xx answers or socket errors.** ")
        + f"The gateway counted {run.hits_counted:,} hits and {run.misses_counted} misses"
        + (f"; its access log dropped {dropped:,} lines (buffer full)" if dropped else
           "; its access log dropped no line" if dropped == 0 else "") + ".",
        "",
        f"Where many keys cost more than one hot key: a memo miss parses, validates and hashes the call again, "
        f"and the memo is bounded by its share of `--memory-max-bytes` ({mib(run.max_bytes)}: "
        f"{mib(run.memo_bytes)}, about {run.memo_capacity:,} of these calls, oldest insertion out first, a hit does "
        f"not renew it). Replaying the runs' request streams through a map of that size, **{run.memo_hit:.1%}** of "
        f"the measured requests find their call memoised. The unpacked copies of the last Redis values "
        f"({mib(run.decoded_bytes)}, about "
        f"{run.decoded_capacity:,} values) serve {run.decoded_hit:.1%} of the reads without unpacking; a value "
        "unpacked anew is a new `Entry`, so its hit headers are rendered again (they are reused per entry, for at "
        "most 50 ms, `RATE_LIMIT_REUSE_S`). Hits of one event-loop turn share one `MGET`, hence fewer Redis "
        "commands than requests.",
        "",
        "Checked:",
        "",
        *(f"- {check}" for check in run.checks),
        "",
    ]
