"""The official SDK, sync and async, against the simulator process: parsed models match the fixtures."""

from __future__ import annotations

import asyncio

import pytest
import requests
from alibabacloud_cams20200606 import models
from alibabacloud_cams20200606.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config

from proxy.simulator.fixtures import load_document
from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from tests.support import SEED_SPACE, SEED_TEMPLATE

FIXTURES = load_document(None)
SEED = next(s for s in FIXTURES["spaces"] if s["CustSpaceId"] == SEED_SPACE)
SEED_TEMPLATE_DATA = next(t for t in SEED["Templates"]
                          if t["TemplateCode"] == SEED_TEMPLATE and t["Language"] == "en_US")


def sdk(sim_url: str, secret: str = DEMO_ACCESS_KEY_SECRET, **extra: str) -> Client:
    endpoint = sim_url.removeprefix("http://")
    return Client(Config(access_key_id=DEMO_ACCESS_KEY_ID, access_key_secret=secret, endpoint=endpoint,
                         protocol="HTTP", **extra))


def template_request(**overrides: str) -> models.GetChatappTemplateDetailRequest:
    fields = {"cust_space_id": SEED_SPACE, "language": "en_US", "template_code": SEED_TEMPLATE, **overrides}
    return models.GetChatappTemplateDetailRequest(**fields)


def check_template(body: models.GetChatappTemplateDetailResponseBody) -> None:
    assert body.code == "OK" and body.success is True
    data = body.data
    assert (data.name, data.language, data.category, data.audit_status, data.quality_score) == (
        SEED_TEMPLATE_DATA["Name"], "en_US", SEED_TEMPLATE_DATA["Category"], "pass", "GREEN")
    component = data.components[0]
    assert component.has_expiration is True and component.buttons[0].extend_attrs.next_template_code == \
        SEED_TEMPLATE_DATA["Components"][0]["Buttons"][0]["ExtendAttrs"]["NextTemplateCode"]
    assert component.cards[0].card_components[0].buttons[0].url_type == "static"
    assert data.message_send_ttl_seconds == SEED_TEMPLATE_DATA["MessageSendTtlSeconds"]


def check_waba(body: models.QueryChatappBindWabaResponseBody) -> None:
    assert body.code == "OK"
    assert body.data.id == SEED["Waba"]["Id"] and body.data.account_review_status == "APPROVED"
    assert body.data.auth_international_rate_eligibility == SEED["Waba"]["AuthInternationalRateEligibility"]


def test_sync_sdk_reads_both_actions(sim_url: str) -> None:
    client = sdk(sim_url)
    check_template(client.get_chatapp_template_detail(template_request()).body)
    check_waba(client.query_chatapp_bind_waba(models.QueryChatappBindWabaRequest(cust_space_id=SEED_SPACE)).body)


def test_async_sdk_reads_both_actions(sim_url: str) -> None:
    client = sdk(sim_url)

    async def both() -> None:
        template = await client.get_chatapp_template_detail_async(template_request())
        waba = await client.query_chatapp_bind_waba_async(models.QueryChatappBindWabaRequest(cust_space_id=SEED_SPACE))
        check_template(template.body)
        check_waba(waba.body)

    asyncio.run(both())


def test_legacy_v1_signature_is_verified_too(sim_url: str) -> None:
    client = sdk(sim_url, signature_algorithm="v2")
    check_template(client.get_chatapp_template_detail(template_request()).body)


def test_wrong_secret_raises_signature_does_not_match(sim_url: str) -> None:
    with pytest.raises(ClientException) as caught:
        sdk(sim_url, secret="not-the-secret").get_chatapp_template_detail(template_request())
    assert caught.value.code == "SignatureDoesNotMatch" and caught.value.status_code == 400

    async def async_call() -> None:
        await sdk(sim_url, secret="wrong").query_chatapp_bind_waba_async(models.QueryChatappBindWabaRequest())

    with pytest.raises(ClientException) as caught_async:
        asyncio.run(async_call())
    assert caught_async.value.code == "SignatureDoesNotMatch"


def test_business_errors_reach_the_sdk_as_client_exceptions(sim_url: str) -> None:
    with pytest.raises(ClientException) as caught:
        sdk(sim_url).get_chatapp_template_detail(template_request(cust_space_id="1"))
    assert caught.value.code == "Unknown.ResourceOwnerId"


def test_awkward_values_pass_signature_verification(sim_url: str) -> None:
    """Spaces, ``*``, ``~``, ``+``, ``/`` and non-ASCII survive the SDK's wire encoding and our verifier."""
    with pytest.raises(ClientException) as caught:
        sdk(sim_url).get_chatapp_template_detail(template_request(template_code="tpl code*~/+é中",
                                                                  template_name="hello world"))
    assert caught.value.code == "Template.NotFound"
    counted = requests.get(f"{sim_url}/__sim/stats", timeout=5).json()["actions"]["GetChatappTemplateDetail"]
    assert counted["rejected"] == 0 and counted["business_errors"] == 1
