"""The official SDK as a client of the gateway (sync and async), tenants, and the no-leak guarantee.

The gateway runs as a real process here: the sync SDK blocks, so it cannot share an event loop with it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from alibabacloud_cams20200606 import models
from alibabacloud_cams20200606.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config

from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from tests.support import SEED_SPACE, SEED_TEMPLATE, Process, start_cli, wait_for_log

TENANT_KEY, TENANT_SECRET = "LTAI5tTenantCheckout01", "checkout-secret-do-not-log-7f3a"
TENANT_TOKEN = "billing-token-do-not-log-9c1e2d"


def gateway_env(**extra: str) -> dict[str, str]:
    return {"ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET, "LOG_FORMAT": "console", **extra}


@pytest.fixture(scope="module")
def open_gateway(simulator_process: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    log = tmp_path_factory.mktemp("gw") / "gateway.log"
    process = start_cli(["serve", "--port", "0", "--upstream", simulator_process.url], log, env=gateway_env(),
                        ready_text="gateway ready")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def auth_gateway(simulator_process: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("gw-auth")
    tenants = folder / "tenants.json"
    tenants.write_text(json.dumps({"require_authentication": True, "tenants": {
        "checkout": {"access_keys": [{"id": TENANT_KEY, "secret": TENANT_SECRET}]},
        "billing": {"tokens": [TENANT_TOKEN]},
    }}))
    process = start_cli(["serve", "--port", "0", "--upstream", simulator_process.url, "--tenants", str(tenants)],
                        folder / "gateway.log", env=gateway_env(), ready_text="gateway ready")
    yield process
    process.stop()


def client(url: str, key: str = "any-key-the-gateway-ignores", secret: str = "any-secret", **extra: Any) -> Client:
    return Client(Config(access_key_id=key, access_key_secret=secret, endpoint=url.removeprefix("http://"),
                         protocol="HTTP", **extra))


def template_request(code: str = SEED_TEMPLATE, language: str = "en_US") -> models.GetChatappTemplateDetailRequest:
    return models.GetChatappTemplateDetailRequest(cust_space_id=SEED_SPACE, language=language, template_code=code)


def without_request_id(body: Any) -> dict[str, Any]:
    data = dict(body.to_map())
    data.pop("RequestId", None)
    return data


def sim_calls(sim_url: str, action: str = "GetChatappTemplateDetail") -> int:
    return int(requests.get(f"{sim_url}/__sim/stats", timeout=5).json()["actions"][action]["calls"])


def test_sync_sdk_through_the_gateway_matches_the_simulator(open_gateway: Process, sim_url: str) -> None:
    direct = client(sim_url, DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
    via = client(open_gateway.url)
    expected_template = direct.get_chatapp_template_detail(template_request())
    expected_waba = direct.query_chatapp_bind_waba(models.QueryChatappBindWabaRequest(cust_space_id=SEED_SPACE))
    first = via.get_chatapp_template_detail(template_request())
    second = via.get_chatapp_template_detail(template_request())
    waba = via.query_chatapp_bind_waba(models.QueryChatappBindWabaRequest(cust_space_id=SEED_SPACE))
    assert without_request_id(first.body) == without_request_id(expected_template.body)
    assert without_request_id(waba.body) == without_request_id(expected_waba.body)
    assert first.body.data.components[0].has_expiration is True
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.body.request_id == first.body.request_id  # the same bytes, served from the cache
    assert sim_calls(sim_url) == 2  # one direct, one through the gateway


def test_async_and_v1_sdk_clients_share_the_entry(open_gateway: Process, sim_url: str) -> None:
    async def both() -> tuple[Any, Any]:
        # The module's gateway keeps its cache across tests: use a key no other test uses.
        first = await client(open_gateway.url).get_chatapp_template_detail_async(template_request(language="zh_CN"))
        second = await client(open_gateway.url, signature_algorithm="v2").get_chatapp_template_detail_async(
            template_request(language="zh_CN"))
        return first, second

    first, second = asyncio.run(both())
    assert first.body.data.language == "zh_CN" and second.body.data.name == "hello_whatsapp"
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert sim_calls(sim_url) == 1


def test_business_error_reaches_the_sdk_as_the_same_exception(open_gateway: Process, sim_url: str) -> None:
    with pytest.raises(ClientException) as caught:
        client(open_gateway.url).get_chatapp_template_detail(
            models.GetChatappTemplateDetailRequest(cust_space_id="1", language="en_US", template_code="x"))
    assert caught.value.code == "Unknown.ResourceOwnerId" and caught.value.status_code == 400


def test_validation_error_reaches_the_sdk_with_its_code(open_gateway: Process, sim_url: str) -> None:
    with pytest.raises(ClientException) as caught:
        client(open_gateway.url).get_chatapp_template_detail(
            models.GetChatappTemplateDetailRequest(cust_space_id=SEED_SPACE, template_code="x"))
    assert caught.value.code == "MissingParameter.Language"
    assert sim_calls(sim_url) == 0


def test_tenant_authentication_with_sdk_keys_and_bearer_tokens(auth_gateway: Process, sim_url: str) -> None:
    ok = client(auth_gateway.url, TENANT_KEY, TENANT_SECRET).get_chatapp_template_detail(template_request())
    assert ok.body.code == "OK"
    with pytest.raises(ClientException) as wrong_secret:
        client(auth_gateway.url, TENANT_KEY, "wrong").get_chatapp_template_detail(template_request())
    assert wrong_secret.value.code == "SignatureDoesNotMatch"
    with pytest.raises(ClientException) as unknown:
        client(auth_gateway.url, "LTAI5tNobody", "x").get_chatapp_template_detail(template_request())
    assert (unknown.value.code, unknown.value.status_code) == ("InvalidAccessKeyId.NotFound", 404)
    url = f"{auth_gateway.url}/v1/QueryChatappBindWaba?CustSpaceId={SEED_SPACE}"
    assert requests.get(url, headers={"Authorization": f"Bearer {TENANT_TOKEN}"}, timeout=5).status_code == 200
    bad = requests.get(url, headers={"Authorization": "Bearer not-a-valid-token-at-all"}, timeout=5)
    assert (bad.status_code, bad.json()["Code"]) == (401, "InvalidBearerToken")
    anonymous = requests.get(url, timeout=5)
    assert (anonymous.status_code, anonymous.json()["Code"]) == (401, "MissingAuthorization")
    assert sim_calls(sim_url) == 1 and sim_calls(sim_url, "QueryChatappBindWaba") == 1
    log = wait_for_log(auth_gateway, "tenant=checkout", "tenant=billing")
    assert "tenant=checkout" in log and "tenant=billing" in log


def test_tenant_labels_are_logged(open_gateway: Process, sim_url: str) -> None:
    url = f"{open_gateway.url}/v1/QueryChatappBindWaba?CustSpaceId={SEED_SPACE}"
    requests.get(url, headers={"X-Tenant": "search-team"}, timeout=5).raise_for_status()
    client(open_gateway.url, "LTAI5tLabelOnly").query_chatapp_bind_waba(
        models.QueryChatappBindWabaRequest(cust_space_id=SEED_SPACE))
    log = wait_for_log(open_gateway, "tenant=search-team", "tenant=LTAI5tLabelOnly")
    assert "tenant=search-team" in log and "tenant=LTAI5tLabelOnly" in log


def test_no_secret_token_or_signature_in_logs_or_answers(open_gateway: Process, auth_gateway: Process,
                                                         sim_url: str, tmp_path: Path) -> None:
    answer = requests.get(f"{open_gateway.url}/v1/QueryChatappBindWaba?CustSpaceId={SEED_SPACE}",
                          headers={"Authorization": "ACS3-HMAC-SHA256 Credential=x,SignedHeaders=host,Signature="
                                                    "deadbeefcafe"}, timeout=5)
    signed = client(auth_gateway.url, TENANT_KEY, TENANT_SECRET).get_chatapp_template_detail(template_request())
    forbidden = [DEMO_ACCESS_KEY_SECRET, TENANT_SECRET, TENANT_TOKEN, "deadbeefcafe", "Signature="]
    texts = [wait_for_log(open_gateway, answer.headers["X-Request-Id"]),
             wait_for_log(auth_gateway, signed.headers["x-request-id"]), answer.text, str(answer.headers)]
    for text in texts:
        for secret in forbidden:
            assert secret not in text
