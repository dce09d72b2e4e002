"""``--ops-port``: /metrics, /admin and the details of /readyz on a port of their own, so the API port exposes only
/healthz, /readyz's status, the API and the audit callback. The real CLI process, two real listening ports."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.integration.test_wan import ENV
from tests.support import SEED_SPACE, SEED_TEMPLATE, start_cli

ADMIN = "ops-port-admin-token-0123456789abcdef"
OPS_URL = re.compile(r"ops_url=(http://[^\s\"]+)")
API_URL = re.compile(r"(?<![a-z_])url=(http://[^\s\"]+)")


async def test_ops_routes_only_on_the_ops_port(sim_url: str, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    log = tmp_path / "gateway.log"
    gateway = start_cli(["serve", "--port", "0", "--ops-port", "0", "--upstream", sim_url, "--log-format", "console"],
                        log, env={**ENV, "PROXY_ADMIN_TOKEN": ADMIN}, ready_text="gateway ready")
    try:
        text = log.read_text()
        match, api_match = OPS_URL.search(text), API_URL.search(text)
        assert match and api_match, text
        api, ops = api_match.group(1).rstrip("/"), match.group(1).rstrip("/")
        assert api != ops
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        call = f"/v1/GetChatappTemplateDetail?CustSpaceId={SEED_SPACE}&TemplateCode={SEED_TEMPLATE}&Language=en_US"
        async with session.get(api + call) as response:
            assert response.status == 200  # the API is on the API port
        async with session.get(api + "/healthz") as response:
            assert response.status == 200
        async with session.get(api + "/readyz") as response:
            assert response.status == 200 and await response.json() == {"status": "ready"}  # status, no details
        for path, method in (("/metrics", "GET"), ("/admin/status", "GET"), ("/admin/purge", "POST")):
            async with session.request(method, api + path, headers=bearer, json={"keys": []}) as response:
                body = await response.json()
                assert response.status == 404 and body["Code"] == "InvalidAction.NotFound", (path, body)
                assert set(body) >= {"RequestId", "Code", "Message"}
        async with session.get(ops + "/readyz") as response:
            details = await response.json()
            assert response.status == 200 and details["status"] == "ready" and "queues" in details
        async with session.get(ops + "/metrics") as response:
            assert response.status == 200 and "cams_proxy_requests_total" in await response.text()
        async with session.get(ops + "/admin/status", headers=bearer) as response:
            assert response.status == 200 and "memory" in await response.json()
        async with session.get(ops + "/admin/status") as response:
            assert response.status == 401  # the ops port does not waive the admin token
    finally:
        gateway.stop()
