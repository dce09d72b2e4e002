"""``--workers N`` without Redis: real worker processes share one host budget kept by the supervisor.

Counted, never timed: upstream calls, throttled calls and ``max_in_any_1s`` come from the simulator; which
workers spent comes from the supervisor's own count (its closing log line).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import requests

from proxy.admission.host_budget import BUDGET_SOCKET_ENV, HostBudgetThread
from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from tests.support import Process, free_port, many_templates, start_cli

TEMPLATE, WABA = "GetChatappTemplateDetail", "QueryChatappBindWaba"
BULK_SPACE = "77000000000001"
ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
       "LOG_FORMAT": "console"}
GRANTED_BY_WORKER = re.compile(r"'pid:(\d+)': (\d+)")
BACKLOG = ("--deadline-s", "60", "--upstream-timeout-s", "8", "--queue-bound", f"{TEMPLATE}=1000",
           "--queue-bound", f"{WABA}=1000")


def sim_stats(sim_url: str, action: str) -> dict[str, Any]:
    return dict(requests.get(f"{sim_url}/__sim/stats", timeout=5).json()["actions"][action])


def put_json(url: str, body: object) -> None:
    requests.put(url, data=orjson.dumps(body), timeout=5).raise_for_status()


def targets(action: str, count: int) -> list[str]:
    if action == TEMPLATE:
        return [f"/v1/{TEMPLATE}?CustSpaceId={BULK_SPACE}&Language=en_US&TemplateCode={i:032x}" for i in range(count)]
    return [f"/v1/{WABA}?CustSpaceId=78{i:012d}" for i in range(count)]


async def fetch_all(base: str, paths: list[str]) -> list[tuple[int, dict[str, Any], str]]:
    """GET every path at once, each on a connection of its own (so SO_REUSEPORT spreads them over the
    workers); (status, body, X-Cache)."""
    async def one(path: str) -> tuple[int, dict[str, Any], str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as session, \
                session.get(base + path) as response:
            return response.status, orjson.loads(await response.read()), response.headers.get("X-Cache", "")

    return list(await asyncio.gather(*(one(path) for path in paths)))


def lines_with(log: Path, event: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if event in line]


def wait_for_workers(supervisor: Process, workers: int) -> None:
    deadline = time.monotonic() + 30
    while len(lines_with(supervisor.log, "gateway ready")) < workers:
        assert supervisor.proc.poll() is None, supervisor.log.read_text()
        assert time.monotonic() < deadline, supervisor.log.read_text()
        time.sleep(0.1)


@pytest.mark.parametrize(("action", "cap", "workers", "misses"), [(TEMPLATE, 5, 6, 40), (WABA, 10, 2, 60)])
def test_workers_share_one_budget_that_never_passes_the_cap(sim_url: str, tmp_path: Path, action: str, cap: int,
                                                            workers: int, misses: int) -> None:
    put_json(f"{sim_url}/__sim/fixtures", many_templates(misses))
    port = free_port()
    supervisor = start_cli(["serve", "--port", str(port), "--upstream", sim_url, "--workers", str(workers),
                            *BACKLOG], tmp_path / "workers.log", env=ENV, ready_text="supervising")
    try:
        wait_for_workers(supervisor, workers)
        results = asyncio.run(fetch_all(f"http://127.0.0.1:{port}", targets(action, misses)))
        assert [status for status, _, _ in results] == [200] * misses, [b for s, b, _ in results if s != 200][:3]
        assert {cache for _, _, cache in results} == {"MISS"}
        stats = sim_stats(sim_url, action)
        assert stats["calls"] == misses and stats["throttled"] == 0
        assert cap - 1 <= stats["max_in_any_1s"] <= cap  # the cap is used under backlog, never passed
    finally:
        supervisor.stop()
    assert supervisor.proc.returncode == 0
    (closed,) = lines_with(supervisor.log, "host budget closed")
    by_worker = {int(pid): int(count) for pid, count in GRANTED_BY_WORKER.findall(closed)}
    assert sum(by_worker.values()) >= misses  # every upstream call took a host slot
    assert len(by_worker) >= min(workers, 2)  # several workers spent, from one budget


def test_a_worker_whose_supervisor_is_gone_spends_nothing_and_still_serves_hits(sim_url: str,
                                                                                 tmp_path: Path) -> None:
    """One worker process as the supervisor starts it (``--workers`` and the socket in its environment), with
    the budget served by this test, which then stops it."""
    put_json(f"{sim_url}/__sim/fixtures", many_templates(3))
    budget = HostBudgetThread(str(tmp_path / "budget.sock"))
    budget.start()
    port = free_port()
    worker = start_cli(["serve", "--port", str(port), "--upstream", sim_url, "--workers", "2", *BACKLOG],
                       tmp_path / "worker.log", env={**ENV, "CAMS_PROXY_WORKER": "0", BUDGET_SOCKET_ENV: budget.path},
                       ready_text="gateway ready")
    try:
        first, second = targets(TEMPLATE, 2)
        miss = requests.get(worker.url + first, timeout=10)
        assert miss.status_code == 200 and miss.headers["X-Cache"] == "MISS"
        budget.stop()
        calls = sim_stats(sim_url, TEMPLATE)["calls"]
        assert calls == 1
        refused = requests.get(worker.url + second, timeout=10)
        assert refused.status_code == 503
        body = refused.json()
        assert body["Code"] == "Throttling.Proxy" and "unreachable" in body["Message"]
        assert set(body) >= {"RequestId", "Code", "Message"}
        assert refused.headers["Retry-After"] == "1"
        hit = requests.get(worker.url + first, timeout=10)
        assert hit.status_code == 200 and hit.headers["X-Cache"] == "HIT"
        assert sim_stats(sim_url, TEMPLATE)["calls"] == calls  # nothing was spent without the budget
    finally:
        budget.stop()
        worker.stop()
