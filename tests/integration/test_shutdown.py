"""SIGTERM under load: every request in flight or queued gets an answer, and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import requests

from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from tests.support import many_templates, start_cli

WABA = "QueryChatappBindWaba"


def test_sigterm_answers_everything_queued_and_exits_zero(sim_url: str, tmp_path: Path) -> None:
    requests.put(f"{sim_url}/__sim/fixtures", data=orjson.dumps(many_templates(80)), timeout=5).raise_for_status()
    requests.put(f"{sim_url}/__sim/faults", data=orjson.dumps({WABA: {"latency_ms": 200, "jitter_ms": 0}}),
                 timeout=5).raise_for_status()
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
           "LOG_FORMAT": "console"}
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url, "--deadline-s", "30",
                         "--queue-bound", f"{WABA}=1000", "--shutdown-grace-s", "5"], tmp_path / "gateway.log",
                        env=env, ready_text="gateway ready")

    async def load() -> list[tuple[int, str, str]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(i: int) -> tuple[int, str, str]:
                async with session.get(f"{gateway.url}/v1/{WABA}?CustSpaceId=78{i:012d}") as response:
                    body = orjson.loads(await response.read())
                    return response.status, str(body.get("Code", "")), response.headers.get("Retry-After", "")

            calls = [asyncio.ensure_future(one(i)) for i in range(80)]  # 8 s of queue at 10/s
            await asyncio.sleep(1.5)
            gateway.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*calls)

    results = asyncio.run(load())
    assert gateway.proc.wait(timeout=15) == 0
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert len(served) + len(refused) == 80  # every request answered; none lost with the connection
    assert served and refused
    for status, code, retry_after in refused:
        assert (status, code) == (503, "Throttling.Proxy") and int(retry_after) >= 1
    log = gateway.log.read_text()
    assert "shutting down" in log and "gateway stopped" in log
    stats = requests.get(f"{sim_url}/__sim/stats", timeout=5).json()["actions"][WABA]
    assert stats["calls"] == len(served) and stats["throttled"] == 0
