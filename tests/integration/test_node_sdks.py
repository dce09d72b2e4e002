"""The official Node.js clients as clients of the gateway: ``@alicloud/cams20200606`` (V3, POST) and
``@alicloud/pop-core`` (V1 RPC, GET and POST), pinned in tests/node/package-lock.json and installed by
``make test`` (scripts/ensure-node-clients.sh). Each in open mode and with tenant authentication, with a right and a
wrong secret: served, or refused with the client's normal error and code; a refusal costs no upstream call."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_gateway_sdk import (  # noqa: F401 (module-scoped gateway fixtures)
    TENANT_KEY,
    TENANT_SECRET,
    auth_gateway,
    open_gateway,
    sim_calls,
)
from tests.support import ROOT, SEED_SPACE, Process

WABA = "QueryChatappBindWaba"
CLIENT = ROOT / "tests" / "node" / "client.js"
CLIENTS = [("cams", "POST"), ("pop", "GET"), ("pop", "POST")]


def node() -> str:
    found = shutil.which("node")
    modules = ROOT / "tests" / "node" / "node_modules" / "@alicloud"
    if found is None or not modules.is_dir():
        pytest.fail("node or the Node.js clients are missing: run `make test` (scripts/ensure-node-clients.sh "
                    "installs them)")
    return found


def call(gateway: Process, sdk: str, method: str, key: str, secret: str) -> dict[str, object]:
    args = {"sdk": sdk, "method": method, "endpoint": gateway.url.removeprefix("http://"), "key": key,
            "secret": secret, "space": SEED_SPACE}
    done = subprocess.run([node(), str(CLIENT), json.dumps(args)], capture_output=True, text=True, timeout=60,
                          cwd=Path(CLIENT).parent, check=False)
    assert done.returncode == 0 and done.stdout, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize(("sdk", "method"), CLIENTS)
def test_open_mode_serves_every_node_client_whatever_it_signs_with(
        open_gateway: Process, sim_url: str, sdk: str, method: str) -> None:  # noqa: F811
    assert call(open_gateway, sdk, method, "LTAI5tNodeAnyKey", "any-secret") == {"ok": True, "code": "OK"}
    calls = sim_calls(sim_url, WABA)
    assert calls <= 1  # a miss, or a hit from an earlier test
    assert call(open_gateway, sdk, method, "LTAI5tNodeOther", "other") == {"ok": True, "code": "OK"}
    assert sim_calls(sim_url, WABA) == calls


@pytest.mark.parametrize(("sdk", "method"), CLIENTS)
def test_tenant_auth_serves_a_right_secret_and_refuses_a_wrong_one_with_the_clients_error(
        auth_gateway: Process, sim_url: str, sdk: str, method: str) -> None:  # noqa: F811
    assert call(auth_gateway, sdk, method, TENANT_KEY, TENANT_SECRET) == {"ok": True, "code": "OK"}
    calls = sim_calls(sim_url, WABA)
    wrong = call(auth_gateway, sdk, method, TENANT_KEY, "not-the-secret")
    assert wrong["ok"] is False and wrong["code"] == "SignatureDoesNotMatch", wrong
    assert "server string to sign is:" in str(wrong["message"]) and "not-the-secret" not in str(wrong["message"])
    if sdk == "cams":
        assert wrong["status"] == 400
    unknown = call(auth_gateway, sdk, method, "LTAI5tNodeNobody", "x")
    assert unknown["ok"] is False and unknown["code"] == "InvalidAccessKeyId.NotFound", unknown
    assert sim_calls(sim_url, WABA) == calls  # refusals cost nothing upstream
