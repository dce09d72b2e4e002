"""Fairness: 20 tenants with skewed demand share one action's upstream slots; queue waits and Jain's index.

One gateway (memory cache) in front of the simulator, `QueryChatappBindWaba` (cap 10/s). Every tenant
(``X-Tenant: t00`` .. ``t19``) sends all of its demand at once, one distinct ``CustSpaceId`` per request
(so every request is its own miss and costs one upstream call); the requests of all tenants are shuffled
with a fixed seed before they go, so no tenant is first on the wire. For a fixed window W the client
records which requests were answered and how long each took; then it closes its connections (the rest are
abandoned) and everything is stopped.

Fair shares: the slots actually served in W, split max-min fairly over the tenants' demands with equal
weights (water-filling: a tenant that wants less than an equal share gets all it wants, the rest is split
again among the others). ``x_i = served_i / fair_i``; Jain's index ``J = (Σx)² / (n · Σx²)`` is 1 when
every tenant got exactly its fair share. Target: J ≥ 0.95.

Queue wait, client side: answer time − 80 ms (the simulator's mean latency; ±20 ms jitter). A request not
answered within W has waited more than W (it is counted as "> W" in the percentiles, not dropped). The
gateway's own ``queue_wait_ms`` (its access log, ``--log-level info``) is shown beside it for the requests
answered in W.

    python -m bench.fairness            # BENCH_QUICK=1: a 10 s window instead of 25 s
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import orjson

from bench.common import (
    QUICK,
    WABA,
    fmt_ms,
    percentile,
    put_fixtures,
    sim_reset,
    sim_stats,
    space_id,
    spaces_document,
    verdict,
)
from bench.procs import Proc, Procs

DEMANDS: Final = (400, 200, 100, 50, 25, 20, 15, 12, 10, 8, 6, 5, 4, 3, 3, 2, 2, 1, 1, 1)
WINDOW_S: Final = 10.0 if QUICK else 25.0
TARGET_JAIN: Final = 0.95
SIM_LATENCY_S: Final = 0.080
SHUFFLE_SEED: Final = 7
#: Generous queue settings (the whole backlog must be admitted, not refused): a 120 s deadline, 1,000
#: misses per tenant. Info level for the access log's queue_wait_ms (a few hundred lines: no cost here).
GATEWAY_FLAGS: Final = ("--deadline-s", "120", "--upstream-timeout-s", "8",
                        "--queue-bound", f"{WABA}=1000", "--log-level", "info")


def tenant_name(index: int) -> str:
    return f"t{index:02d}"


def water_fill(demands: Sequence[float], total: float) -> list[float]:
    """Max-min fair shares of ``total`` over ``demands`` (equal weights)."""
    fair = [0.0] * len(demands)
    active = sorted(range(len(demands)), key=lambda i: demands[i])
    remaining = float(total)
    while active:
        share = remaining / len(active)
        smallest = active[0]
        if demands[smallest] <= share:
            fair[smallest] = float(demands[smallest])
            remaining -= demands[smallest]
            active.pop(0)
            continue
        for i in active:
            fair[i] = share
        break
    return fair


def jain(values: Sequence[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else math.nan


@dataclass(frozen=True)
class Answer:
    tenant: int
    request_id: str
    sent: float
    answered: float
    status: int
    cache: str


@dataclass
class TenantRow:
    tenant: str
    demand: int
    fair: float
    served: int
    #: Client-side queue waits of every request: answered in W (latency − 80 ms), or ``inf`` when not.
    waits: list[float]
    #: The gateway's queue_wait_ms (as seconds) of this tenant's requests answered in W.
    gateway_waits: list[float]
    errors: int = 0

    @property
    def x(self) -> float:
        return self.served / self.fair if self.fair else math.nan

    def wait(self, q: float) -> float:
        return percentile(self.waits, q)

    def gateway_wait(self, q: float) -> float:
        return percentile(self.gateway_waits, q)


@dataclass
class FairnessResult:
    window_s: float
    rows: list[TenantRow]
    jain: float
    served: int
    sent: int
    send_span_s: float
    upstream_calls: int
    throttled: int
    max_in_any_1s: int
    cap: int
    histogram_count: float
    histogram_sum: float
    commands: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.jain >= TARGET_JAIN


async def _one(session: aiohttp.ClientSession, url: str, tenant: int, index: int, start: asyncio.Event) -> Answer:
    request_id = f"fair-{tenant_name(tenant)}-{index:04d}"
    await start.wait()
    sent = time.monotonic()
    async with session.get(f"{url}/v1/{WABA}", params={"CustSpaceId": space_id(index)},
                           headers={"X-Tenant": tenant_name(tenant), "X-Request-Id": request_id}) as response:
        await response.read()
        return Answer(tenant, request_id, sent, time.monotonic(), response.status,
                      response.headers.get("X-Cache", "-"))


_BUCKET: Final = re.compile(r'^cams_proxy_queue_wait_seconds_(count|sum)\{([^}]*)\} ([0-9.e+-]+)$', re.M)


def _histogram(text: str, action: str) -> tuple[float, float]:
    """(count, sum) of ``cams_proxy_queue_wait_seconds`` for ``action``, interactive priority."""
    found = {"count": 0.0, "sum": 0.0}
    for kind, labels, value in _BUCKET.findall(text):
        if f'action="{action}"' in labels and 'priority="interactive"' in labels:
            found[kind] += float(value)
    return found["count"], found["sum"]


async def _measure(gateway: Proc, window_s: float) -> tuple[list[Answer], int, float, float, tuple[float, float]]:
    """Send every tenant's demand at once; after ``window_s`` return the answers so far, the number sent,
    when sending started, how long it took to put every request on the wire, and the gateway's histogram."""
    tenants = [tenant for tenant, demand in enumerate(DEMANDS) for _ in range(demand)]
    order = [(tenant, index) for index, tenant in enumerate(tenants)]  # one CustSpaceId per request
    random.Random(SHUFFLE_SEED).shuffle(order)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    session = aiohttp.ClientSession(connector=connector, timeout=timeout)
    try:
        start = asyncio.Event()
        tasks = [asyncio.create_task(_one(session, gateway.url, tenant, index, start)) for tenant, index in order]
        await asyncio.sleep(0.1)
        began = time.monotonic()
        start.set()
        await asyncio.sleep(max(0.0, began + window_s - time.monotonic()))
        done = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
        answers = [a for a in (t.result() for t in done) if a.answered - began <= window_s]
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
        if failed:
            print(f"fairness: {len(failed)} requests failed on the client: {failed[0].exception()!r}",
                  file=sys.stderr)
        async with session.get(f"{gateway.url}/metrics") as response:
            histogram = _histogram(await response.text(), WABA)
        span = max((a.sent for a in answers), default=began) - began
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await session.close()  # closes every connection: the gateway's queued misses lose their callers
    return answers, len(order), began, span, histogram


def _gateway_waits(log: Path, request_ids: set[str]) -> dict[str, float]:
    """request id -> the gateway's queue_wait_ms (seconds) from its JSON access log."""
    waits: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{") or '"queue_wait_ms"' not in line:
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if entry.get("request_id") in request_ids:
            waits[entry["request_id"]] = float(entry["queue_wait_ms"]) / 1000
    return waits


def run_fairness(procs: Procs, workdir: Path) -> FairnessResult:
    simulator = procs.simulator("simulator-fairness")
    put_fixtures(simulator, spaces_document(sum(DEMANDS)))
    gateway = procs.gateway("gateway-fairness", simulator.url, extra=GATEWAY_FLAGS)
    sim_reset(simulator)
    answers, sent, _began, span, histogram = asyncio.run(_measure(gateway, WINDOW_S))
    stats = sim_stats(simulator, WABA)
    procs.stop(gateway)  # the log is complete once the gateway has stopped
    gateway_waits = _gateway_waits(gateway.log, {a.request_id for a in answers})
    procs.stop(simulator)
    ok = [a for a in answers if a.status == 200]
    fair = water_fill(DEMANDS, len(ok))
    rows: list[TenantRow] = []
    for tenant, demand in enumerate(DEMANDS):
        mine = [a for a in answers if a.tenant == tenant]
        served = [a for a in mine if a.status == 200]
        waits = [max(0.0, a.answered - a.sent - SIM_LATENCY_S) for a in served]
        waits += [math.inf] * (demand - len(served))
        rows.append(TenantRow(tenant_name(tenant), demand, fair[tenant], len(served), waits,
                              [gateway_waits[a.request_id] for a in served if a.request_id in gateway_waits],
                              errors=len(mine) - len(served)))
    return FairnessResult(
        window_s=WINDOW_S, rows=rows, jain=jain([r.x for r in rows]), served=len(ok), sent=sent,
        send_span_s=span, upstream_calls=int(stats["calls"]), throttled=int(stats["throttled"]),
        max_in_any_1s=int(stats["max_in_any_1s"]), cap=int(stats["cap"]), histogram_count=histogram[0],
        histogram_sum=histogram[1], commands=[simulator.command, gateway.command])


def _wait(value: float, window_s: float) -> str:
    return f"> {window_s:.0f} s (queued)" if math.isinf(value) else fmt_ms(value)


def section(result: FairnessResult) -> list[str]:
    w = result.window_s
    errors = sum(r.errors for r in result.rows)
    lines = [
        "## Fairness: 20 tenants, skewed demand, one action",
        "",
        f"One memory-cache gateway in front of the simulator (80 ± 20 ms), `{WABA}` (cap {result.cap}/s). "
        f"20 tenants (`X-Tenant: t00` .. `t19`) send {result.sent:,} misses at once, one distinct "
        f"`CustSpaceId` each (so each costs one upstream call), shuffled across tenants with a fixed seed; the "
        f"client had every request on the wire within {result.send_span_s * 1000:,.0f} ms. Demands: "
        f"{', '.join(map(str, DEMANDS))}. The gateway runs `--deadline-s 120 --queue-bound {WABA}=1000` so "
        f"the whole backlog is admitted, not refused. After a window of W = {w:.0f} s the client counts what "
        "was answered and closes its connections.",
        "",
        "Fair share: the requests served in W split max-min fairly over the demands with equal weights "
        "(water-filling). x = served / fair share; Jain's index J = (Σx)² / (n·Σx²), 1.0 when every tenant got "
        f"exactly its share. Queue wait (client) = answer time − 80 ms simulated latency (±20 ms), over all of "
        f"the tenant's requests: one not answered in W counts as \"> {w:.0f} s\". Queue wait (gateway) = "
        "`queue_wait_ms` from the gateway's access log, for the requests answered in W (from entering the "
        "queue to the grant). The client's figure is larger by the time to reach the queue (all connections "
        "open at once), the gateway's own handling and the ±20 ms latency jitter.",
        "",
        f"**Jain's index over the fair shares: J = {result.jain:.4f}** (target ≥ {TARGET_JAIN}: "
        f"{verdict(result.met)}). {result.served} requests served in {w:.0f} s "
        f"({result.served / w:.2f}/s; {errors} errors); the simulator counted {result.upstream_calls} calls, "
        f"{result.throttled} throttled, `max_in_any_1s` {result.max_in_any_1s} (cap {result.cap}) by the end of W.",
        "",
        "| tenant | demand | fair share | served in W | x = served / fair | queue wait p50 (client) | "
        "queue wait p99 (client) | queue wait p50 / p99 (gateway, answered) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result.rows:
        lines.append(f"| {r.tenant} | {r.demand} | {r.fair:.2f} | {r.served} | {r.x:.3f} | {_wait(r.wait(50), w)} | "
                     f"{_wait(r.wait(99), w)} | {fmt_ms(r.gateway_wait(50))} / {fmt_ms(r.gateway_wait(99))} |")
    mean = result.histogram_sum / result.histogram_count if result.histogram_count else math.nan
    lines += [
        "",
        f"The gateway's `cams_proxy_queue_wait_seconds` histogram (interactive, `{WABA}`) had "
        f"{result.histogram_count:,.0f} observations with a mean of {fmt_ms(mean)} at the end of W (it observes a "
        "wait when a request leaves the queue).",
        "",
        "```sh",
        *result.commands,
        f"# then PUT /__sim/fixtures ({result.sent:,} spaces) and POST /__sim/reset on the simulator; the "
        "requests come from bench/fairness.py's own aiohttp client (python -m bench.fairness)",
        "```",
        "",
    ]
    return lines


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cams-bench-fairness-") as tmp, Procs(Path(tmp)) as procs:
        result = run_fairness(procs, Path(tmp))
    print("\n".join(section(result)))


if __name__ == "__main__":
    main()
