"""Coalescing: N concurrent identical misses, from 10 to 10,000, make one upstream call.

For each N a fresh template (a key no one asked for before) is requested N times at once: through one
memory-cache gateway, then spread round-robin over 3 replicas sharing one redis-server (lease + pub/sub).
Every request's connection is opened beforehand (one ``GET /healthz`` each, all at once, so the N GETs do
not wait on TCP handshakes and the listen backlog), then all N GETs are released together.

The simulator answers after a fixed 8 s (``--latency-ms 8000 --jitter-ms 0``; the gateways get
``--upstream-timeout-s 20``), longer than it takes this client to put 10,000 requests on the wire on a
2-core machine (4-5 s measured), so every request arrives while the one upstream call is in flight: each is
a miss the gateway must coalesce, not a hit on an entry already filled. Requests that arrive after the fill
are answered ``HIT`` and counted as such.

With replicas, the burst is released only once every replica's ``/readyz`` shows Redis healthy and no quiet
period (opening thousands of connections at once can starve a replica's event loop long enough for a Redis
command to time out, ``--redis-timeout-s`` 0.25 s, which opens its breaker). Redis outages the replicas count
(``/readyz`` ``redis.outages``) during the burst itself are reported: during one, a replica coalesces only
within itself (the documented Redis-down behaviour), so there can be one upstream call per replica.

Per round: the simulator's calls (``/__sim/reset`` before, ``/__sim/stats`` after; expected exactly 1), the
answers by ``X-Cache``, latency p50/p99 (from each request's send to its answer, on this client, whose one
event loop also has to read N answers), how long the client took to send all N and the spread from the
first answer to the last, and errors (non-200 or no answer).

File descriptors: this process raises its soft ``RLIMIT_NOFILE`` (``resource.setrlimit``) to at least
2 × 10,000 + 1,024 before starting the gateways, which inherit it (each needs one descriptor per client
connection). If the hard limit is lower, raise it (``ulimit -Hn``) before the run.

    python -m bench.coalescing          # BENCH_QUICK=1: N up to 1,000
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

from bench.common import (
    QUICK,
    TEMPLATE,
    percentile,
    put_fixtures,
    raise_nofile,
    sim_reset,
    sim_stats,
    templates_document,
    verdict,
)
from bench.procs import Proc, Procs

SIZES: Final = (10, 100, 1_000) if QUICK else (10, 100, 1_000, 10_000)
REPLICAS: Final = 3
SPACE: Final = "77000000000001"
LATENCY_MS: Final = 8000
#: How long to wait for every replica to report Redis healthy after the connections are opened.
SETTLE_TIMEOUT_S: Final = 20.0
NOFILE: Final = 2 * max(SIZES) + 1024
#: Generous limits, like the miss path's: nothing here should be refused for the queue or a deadline.
GATEWAY_FLAGS: Final = ("--deadline-s", "60", "--upstream-timeout-s", "20",
                        "--queue-bound", f"{TEMPLATE}=1000")


@dataclass(frozen=True)
class Answer:
    sent: float
    answered: float
    status: int
    cache: str


@dataclass
class Round:
    setup: str  # "1 gateway" or "3 replicas + Redis"
    n: int
    upstream_calls: int
    throttled: int
    answers: dict[str, int]
    errors: int
    p50_s: float
    p99_s: float
    send_span_s: float
    answer_span_s: float
    connect_s: float
    gateways_alive: bool
    #: With replicas: how long after the connections were open every replica reported Redis healthy (None:
    #: one gateway, or not within SETTLE_TIMEOUT_S), and the Redis outages counted while the burst ran.
    settle_s: float | None = None
    outages_in_burst: int = 0
    error_sample: str = ""

    @property
    def met(self) -> bool:
        return self.upstream_calls == 1 and self.errors == 0 and self.gateways_alive


@dataclass
class CoalescingResult:
    rounds: list[Round]
    nofile: tuple[int, int]
    commands: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return all(r.met for r in self.rounds)


async def _one(session: aiohttp.ClientSession, url: str, params: dict[str, str], start: asyncio.Event) -> Answer:
    await start.wait()
    sent = time.monotonic()
    try:
        async with session.get(url, params=params) as response:
            await response.read()
            return Answer(sent, time.monotonic(), response.status, response.headers.get("X-Cache", "-"))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Answer(sent, time.monotonic(), 0, f"client error: {type(exc).__name__}: {exc}"[:120])


async def _connect(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(f"{url}/healthz") as response:
        await response.read()


async def _redis_state(session: aiohttp.ClientSession, gateway: Proc) -> tuple[bool, int]:
    """(healthy and not quiet, outages so far) from the gateway's /readyz; (True, 0) without Redis."""
    async with session.get(f"{gateway.url}/readyz") as response:
        body = await response.json()
    redis = body.get("redis")
    if redis is None:
        return True, 0
    healthy = body.get("status") == "ready" and redis.get("mode") == "shared" and not redis.get("quiet_for_s")
    return healthy, int(redis.get("outages", 0))


async def _settle(session: aiohttp.ClientSession, gateways: list[Proc]) -> tuple[float | None, int]:
    """Wait until every gateway reports Redis healthy; (seconds waited or None, outages so far)."""
    began = time.monotonic()
    while True:
        states = [await _redis_state(session, g) for g in gateways]
        if all(ok for ok, _ in states):
            return time.monotonic() - began, sum(n for _, n in states)
        if time.monotonic() - began > SETTLE_TIMEOUT_S:
            return None, sum(n for _, n in states)
        await asyncio.sleep(0.1)


async def _round(gateways: list[Proc], n: int, index: int) -> tuple[list[Answer], float, float, float | None, int]:
    params = {"CustSpaceId": SPACE, "Language": "en_US", "TemplateCode": f"{index:032x}"}
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=120)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.monotonic()
        # one connection per request, kept alive in the pool for the GETs below
        await asyncio.gather(*(_connect(session, gateways[i % len(gateways)].url) for i in range(n)))
        connect_s = time.monotonic() - began
        settle_s, outages_before = await _settle(session, gateways)
        start = asyncio.Event()
        tasks = [asyncio.create_task(_one(session, f"{gateways[i % len(gateways)].url}/v1/{TEMPLATE}", params, start))
                 for i in range(n)]
        await asyncio.sleep(0.05)
        released = time.monotonic()
        start.set()
        answers = list(await asyncio.gather(*tasks))
        outages_after = sum([(await _redis_state(session, g))[1] for g in gateways])
    return answers, released, connect_s, settle_s, outages_after - outages_before


def _measure(simulator: Proc, gateways: list[Proc], setup: str, n: int, index: int) -> Round:
    sim_reset(simulator)
    answers, _released, connect_s, settle_s, outages = asyncio.run(_round(gateways, n, index))
    stats = sim_stats(simulator, TEMPLATE)
    ok = [a for a in answers if a.status == 200]
    errors = [a for a in answers if a.status != 200]
    latencies = [a.answered - a.sent for a in answers]
    answered = [a.answered for a in ok]
    return Round(
        setup=setup, n=n, upstream_calls=int(stats["calls"]), throttled=int(stats["throttled"]),
        answers=dict(Counter(a.cache for a in ok).most_common()), errors=len(errors),
        p50_s=percentile(latencies, 50), p99_s=percentile(latencies, 99),
        send_span_s=max(a.sent for a in answers) - min(a.sent for a in answers),
        answer_span_s=max(answered) - min(answered) if answered else 0.0, connect_s=connect_s,
        gateways_alive=all(g.alive() for g in gateways), settle_s=settle_s if len(gateways) > 1 else None,
        outages_in_burst=outages,
        error_sample=(f"{errors[0].status} {errors[0].cache}" if errors else ""))


def run_coalescing(procs: Procs, workdir: Path) -> CoalescingResult:
    nofile = raise_nofile(NOFILE)  # before any gateway starts: they inherit it
    simulator = procs.simulator("simulator-coalescing", latency_ms=LATENCY_MS, jitter_ms=0)
    put_fixtures(simulator, templates_document(2 * len(SIZES), SPACE))
    rounds: list[Round] = []
    index = 0
    gateway = procs.gateway("gateway-coalescing", simulator.url, extra=GATEWAY_FLAGS)
    commands = [simulator.command, gateway.command]
    for n in SIZES:
        print(f"  1 gateway, N={n:,} ...", file=sys.stderr, flush=True)
        rounds.append(_measure(simulator, [gateway], "1 gateway", n, index))
        index += 1
    procs.stop(gateway)
    redis = procs.redis("redis-coalescing")
    replicas = [procs.gateway(f"gateway-coalescing-replica-{k}", simulator.url, redis_url=redis.url,
                              extra=GATEWAY_FLAGS) for k in range(1, REPLICAS + 1)]
    commands += [redis.command, *(g.command for g in replicas)]
    for n in SIZES:
        print(f"  {REPLICAS} replicas, N={n:,} ...", file=sys.stderr, flush=True)
        rounds.append(_measure(simulator, replicas, f"{REPLICAS} replicas + Redis", n, index))
        index += 1
    for proc in (*reversed(replicas), redis, simulator):
        procs.stop(proc)
    return CoalescingResult(rounds, nofile, commands)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def section(result: CoalescingResult) -> list[str]:
    sizes = ", ".join(f"{n:,}" for n in SIZES)
    failed = [r for r in result.rounds if not r.met]
    lines = [
        "## Coalescing: N concurrent identical misses",
        "",
        f"For N = {sizes}: a fresh template key each round, requested N times at once by one aiohttp client, "
        f"through one memory-cache gateway, then round-robin over {REPLICAS} replicas sharing one redis-server "
        "(fill lease + pub/sub notice). Each request has its own connection, opened beforehand (one `GET /healthz` "
        "each, all at once; the time that took is the \"connect\" column), then all N GETs are released together. "
        f"The simulator answers after a fixed {LATENCY_MS / 1000:.0f} s (`--latency-ms {LATENCY_MS} --jitter-ms 0`), "
        "longer than the client needs to send all N, so every request arrives while the one upstream call is in "
        "flight (a request that arrives after the fill would be a `HIT`, and is counted as one). Upstream calls "
        "from the simulator (`/__sim/reset` before each round, `/__sim/stats` after). Latency is from each "
        f"request's send to its answer on the client, so it includes the {LATENCY_MS / 1000:.0f} s upstream call and "
        "the client's own event loop reading N answers; \"answers over\" is the spread from the first answer to "
        f"the last. Gateway flags: `{' '.join(GATEWAY_FLAGS)}`. With replicas the burst is released only once "
        "every replica's `/readyz` shows Redis healthy with no quiet period (\"Redis ready after\": opening thousands "
        "of connections at once can starve a replica's event loop past `--redis-timeout-s`, 0.25 s, and open its "
        "breaker); \"Redis outages\" counts the replicas' `redis.outages` that happened during the burst itself (in "
        "one, a replica coalesces only within itself, the documented Redis-down behaviour, so each replica may call "
        "once). Open files: this process's soft `RLIMIT_NOFILE` was raised to "
        f"{result.nofile[0]:,} (hard {result.nofile[1]:,}) with `resource.setrlimit` before the gateways "
        "started, and they inherit it.",
        "",
        f"**Target: exactly 1 upstream call per round, no errors:** {verdict(not failed)}"
        + (f" ({len(failed)} of {len(result.rounds)} rounds missed it: "
           + "; ".join(f"{r.setup} N={r.n:,}: {r.upstream_calls} calls, {r.errors} errors, {r.outages_in_burst} "
                       "Redis outages during the burst" + ("" if r.gateways_alive else ", a gateway died")
                       for r in failed) + ")" if failed else "")
        + ".",
        "",
        "| setup | N | upstream calls | throttled | answers by X-Cache | errors | latency p50 | latency p99 | "
        "client sent all N in | answers over | connect N | Redis ready after | Redis outages in burst |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result.rounds:
        answers = ", ".join(f"{cache} {count:,}" for cache, count in r.answers.items()) or "—"
        errors = f"{r.errors:,}" + (f" (e.g. {r.error_sample})" if r.error_sample else "")
        if not r.gateways_alive:
            errors += "; a gateway exited"
        replicated = r.setup != "1 gateway"
        settle = "—" if not replicated else _ms(r.settle_s) if r.settle_s is not None else \
            f"not in {SETTLE_TIMEOUT_S:.0f} s"
        outages = str(r.outages_in_burst) if replicated else "—"
        lines.append(f"| {r.setup} | {r.n:,} | {r.upstream_calls} | {r.throttled} | {answers} | {errors} | "
                     f"{_ms(r.p50_s)} | {_ms(r.p99_s)} | {_ms(r.send_span_s)} | {_ms(r.answer_span_s)} | "
                     f"{_ms(r.connect_s)} | {settle} | {outages} |")
    lines += [
        "",
        "```sh",
        *result.commands,
        "# then PUT /__sim/fixtures (a few templates) on the simulator; the requests come from "
        "bench/coalescing.py's own aiohttp client (python -m bench.coalescing)",
        "```",
        "",
    ]
    return lines


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cams-bench-coalescing-") as tmp, Procs(Path(tmp)) as procs:
        result = run_coalescing(procs, Path(tmp))
    print("\n".join(section(result)))


if __name__ == "__main__":
    main()
