"""The tenants file is reloaded when it changes, with no restart: a rotated token works within seconds and the old
one stops; a bad file keeps the tenants loaded before and says why (/readyz degraded, an error log line)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.integration.test_gateway_sdk import gateway_env
from tests.support import SEED_SPACE, Process, start_cli

OLD_TOKEN, NEW_TOKEN = "rotation-old-token-0001", "rotation-new-token-0002"


def tenants(token: str) -> str:
    return json.dumps({"require_authentication": True, "tenants": {"billing": {"tokens": [token]}}})


def status_with(gateway: Process, token: str) -> int:
    return requests.get(f"{gateway.url}/v1/QueryChatappBindWaba?CustSpaceId={SEED_SPACE}", timeout=10,
                        headers={"Authorization": f"Bearer {token}"}).status_code


def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not within the reload interval"
        time.sleep(0.2)


def test_a_rotated_token_takes_effect_without_a_restart_and_a_bad_file_keeps_the_old_one(
        sim_url: str, tmp_path: Path) -> None:
    path = tmp_path / "tenants.json"
    path.write_text(tenants(OLD_TOKEN))
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url, "--tenants", str(path)],
                        tmp_path / "gateway.log", env=gateway_env(), ready_text="gateway ready")
    try:
        assert status_with(gateway, OLD_TOKEN) == 200
        assert status_with(gateway, NEW_TOKEN) == 401
        path.write_text(tenants(NEW_TOKEN))
        eventually(lambda: status_with(gateway, NEW_TOKEN) == 200)
        assert status_with(gateway, OLD_TOKEN) == 401
        path.write_text('{"tenants": {"billing": {"tokens": ["short"]}}')  # not even JSON
        eventually(lambda: requests.get(f"{gateway.url}/readyz", timeout=5).json()["status"] == "degraded")
        ready = requests.get(f"{gateway.url}/readyz", timeout=5).json()
        assert any("tenants file" in reason and "not reloaded" in reason for reason in ready["reasons"]), ready
        assert status_with(gateway, NEW_TOKEN) == 200  # the tenants loaded before are in force
        assert "tenants file not reloaded" in gateway.log.read_text()
        path.write_text(tenants(NEW_TOKEN) + " ")
        eventually(lambda: requests.get(f"{gateway.url}/readyz", timeout=5).json()["status"] == "ready")
        log = gateway.log.read_text()
        assert NEW_TOKEN not in log and OLD_TOKEN not in log
    finally:
        gateway.stop()
