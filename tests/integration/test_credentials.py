"""Key rotation without a restart: the default credential chain (alibabacloud-credentials), a credentials file
rotated on disk while the gateway serves, and the next upstream calls signed with the new key."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import orjson
import requests

from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from tests.support import many_templates, start_cli

WABA = "QueryChatappBindWaba"
NEW_ID, NEW_SECRET = "LTAI5tRotatedKey000002", "RotatedSecretNotForProduction000002"


def write_profile(path: Path, key_id: str, secret: str) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_text(f"[default]\ntype = access_key\naccess_key_id = {key_id}\naccess_key_secret = {secret}\n")
    os.replace(staged, path)  # atomic, as a secret manager's sidecar would write it


def test_a_key_rotated_on_disk_signs_the_next_calls_without_a_restart_or_a_failed_request(tmp_path: Path) -> None:
    simulator = start_cli(["simulate", "--port", "0", "--latency-ms", "3", "--jitter-ms", "1",
                           "--access-key", f"{DEMO_ACCESS_KEY_ID}:{DEMO_ACCESS_KEY_SECRET}",
                           "--access-key", f"{NEW_ID}:{NEW_SECRET}"], tmp_path / "sim.log")
    profile = tmp_path / "credentials.ini"
    write_profile(profile, DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env |= {"ALIBABA_CLOUD_CREDENTIALS_FILE": str(profile), "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            "PROXY_ACCOUNT": "org-account", "LOG_FORMAT": "console", "HOME": str(tmp_path)}
    requests.put(f"{simulator.url}/__sim/fixtures", data=orjson.dumps(many_templates(100)),
                 timeout=5).raise_for_status()
    gateway = start_cli(["serve", "--port", "0", "--upstream", simulator.url], tmp_path / "gateway.log", env=env,
                        ready_text="gateway ready")
    try:
        async def load() -> list[int]:
            async with aiohttp.ClientSession() as session:
                async def one(i: int) -> int:
                    async with session.get(f"{gateway.url}/v1/{WABA}?CustSpaceId=78{i:012d}") as response:
                        await response.read()
                        return response.status

                statuses = [await one(i) for i in range(5)]
                write_profile(profile, NEW_ID, NEW_SECRET)
                deadline = time.monotonic() + 10
                while "credentials rotated" not in gateway.log.read_text():  # the file is watched once a second
                    assert time.monotonic() < deadline, "the rotation was not picked up"
                    statuses.append(await one(len(statuses)))
                    await asyncio.sleep(0.05)
                statuses += [await one(len(statuses) + i) for i in range(5)]
                return statuses

        statuses = asyncio.run(load())
        assert set(statuses) == {200}  # no request failed across the rotation
        by_key = requests.get(f"{simulator.url}/__sim/stats", timeout=5).json()["actions"][WABA]["by_key"]
        assert set(by_key) == {DEMO_ACCESS_KEY_ID, NEW_ID}  # the calls after the rotation were signed with it
        log = gateway.log.read_text()
        assert NEW_SECRET not in log and DEMO_ACCESS_KEY_SECRET not in log
    finally:
        gateway.stop()
        simulator.stop()
