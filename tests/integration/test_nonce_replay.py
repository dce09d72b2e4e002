"""A signed request replayed to a second replica is refused: the nonce registry is shared through Redis."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from proxy.secret import Secret
from proxy.signing import Credentials
from tests.conftest import start_redis
from tests.integration.test_gateway_sdk import TENANT_KEY, TENANT_SECRET, gateway_env, sim_calls
from tests.support import SEED_SPACE, signed_headers, start_cli, wire_query

WABA = "QueryChatappBindWaba"


def test_a_nonce_used_on_one_replica_is_refused_on_another(sim_url: str, redis_binary: str, tmp_path: Path) -> None:
    redis_proc, redis_url = start_redis(redis_binary, tmp_path)
    tenants = tmp_path / "tenants.json"
    tenants.write_text(json.dumps({"require_authentication": True, "tenants": {
        "checkout": {"access_keys": [{"id": TENANT_KEY, "secret": TENANT_SECRET}]}}}))
    gateways = [start_cli(["serve", "--port", "0", "--upstream", sim_url, "--redis-url", redis_url, "--tenants",
                           str(tenants)], tmp_path / f"gateway-{n}.log", env=gateway_env(), ready_text="gateway ready")
                for n in range(2)]
    try:
        host = gateways[0].url.removeprefix("http://")
        query = {"CustSpaceId": SEED_SPACE}
        headers = signed_headers(host, WABA, query, credentials=Credentials(TENANT_KEY, Secret(TENANT_SECRET)))
        headers["Host"] = host  # behind one load balancer every replica sees the same host

        def send(index: int) -> tuple[int, str]:
            answer = requests.post(f"{gateways[index].url}/?{wire_query(query)}", headers=headers, timeout=10)
            return answer.status_code, str(answer.json()["Code"])

        assert send(0) == (200, "OK")
        calls = sim_calls(sim_url, WABA)
        assert send(1) == (400, "SignatureNonceUsed")  # replayed to the other replica
        assert send(0) == (400, "SignatureNonceUsed")  # and to the first
        assert sim_calls(sim_url, WABA) == calls
        status = requests.get(f"{gateways[1].url}/readyz", timeout=5)
        assert status.status_code == 200
    finally:
        for gateway in gateways:
            gateway.stop()
        redis_proc.kill()
        redis_proc.wait()
