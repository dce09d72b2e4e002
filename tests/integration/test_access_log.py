"""The access log under a burst, through the real CLI: one line per request, none lost, none twice, each with
its request's id and outcome, and the drop counter at zero; the lines still buffered at SIGTERM are written."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import orjson

from tests.integration.test_wan import ENV
from tests.support import SEED_SPACE, SEED_TEMPLATE, start_cli

HIT = f"/v1/GetChatappTemplateDetail?CustSpaceId={SEED_SPACE}&Language=en_US&TemplateCode={SEED_TEMPLATE}"
WABA = f"/v1/QueryChatappBindWaba?CustSpaceId={SEED_SPACE}"
INVALID = "/v1/GetChatappTemplateDetail?Language=en_US"  # 400: no space, no template
UNKNOWN = "/v1/NoSuchAction"  # 404
ADMIN = "access-log-test-admin-token"


async def burst(base: str, count: int) -> dict[str, tuple[str, int]]:
    targets = [HIT, WABA, INVALID, UNKNOWN]
    sent: dict[str, tuple[str, int]] = {}
    limit = asyncio.Semaphore(64)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        target = targets[0] if i % 10 < 7 else targets[i % 10 - 6]
        request_id = f"burst-{i:05d}"
        async with limit, session.get(base + target, headers={"X-Request-Id": request_id}) as response:
            await response.read()
            sent[request_id] = (target, response.status)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        for warm in (HIT, WABA):  # fill both entries first: the burst is hits, rejections and 404s
            async with session.get(base + warm) as response:
                assert response.status == 200
        await asyncio.gather(*(one(session, i) for i in range(count)))
        async with session.get(base + "/metrics") as response:
            assert "cams_proxy_access_log_dropped_total 0.0" in await response.text()
        async with session.get(base + "/admin/status", headers={"Authorization": f"Bearer {ADMIN}"}) as response:
            status = (await response.json())["access_log"]
            assert status["dropped"] == 0 and status["max_buffered"] > 0 and status["written"] >= 0
    return sent


def test_no_access_line_is_lost_under_a_burst(sim_url: str, tmp_path: Path) -> None:
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url], tmp_path / "gateway.log",
                        env={**ENV, "LOG_FORMAT": "json", "PROXY_ADMIN_TOKEN": ADMIN}, ready_text="gateway ready")
    try:
        sent = asyncio.run(burst(gateway.url, 4000))
    finally:
        gateway.stop()  # SIGTERM right after the burst: the last batch is written at shutdown
    assert gateway.proc.returncode == 0
    lines = [orjson.loads(line) for line in gateway.log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["event"] == "request" and line["request_id"].startswith("burst-")]
    assert len(access) == len(sent) == 4000
    assert Counter(line["request_id"] for line in access) == Counter(list(sent))  # each once
    for line in access:
        target, status = sent[line["request_id"]]
        assert line["status"] == status and line["method"] == "GET" and target.startswith(line["path"])
        assert line["level"] == "info" and line["timestamp"].endswith("Z") and line["duration_ms"] >= 0
    statuses = Counter(line["status"] for line in access)
    assert statuses == {200: 3200, 400: 400, 404: 400}, statuses
    assert {line.get("cache") for line in access if line["path"] == "/v1/GetChatappTemplateDetail"
            and line["status"] == 200} == {"HIT"}
    assert not [line for line in lines if "dropped" in line["event"]]
