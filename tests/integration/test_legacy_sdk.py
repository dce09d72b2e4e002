"""The legacy Python SDK (``aliyun-python-sdk-core``, V1 RPC signatures, ``CommonRequest``) as a client of the
gateway, GET and POST, in open mode and with tenant authentication, with a right and a wrong secret: served, or
refused with the SDK's own exception and code, and a refusal costs no upstream call. The SDK reads the string to
sign after the colon of CAMS's ``SignatureDoesNotMatch`` message (a message without one made it raise
``IndexError`` instead of ``ServerException``)."""

from __future__ import annotations

import json

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

from tests.integration.test_gateway_sdk import (  # noqa: F401 (module-scoped gateway fixtures)
    TENANT_KEY,
    TENANT_SECRET,
    auth_gateway,
    open_gateway,
    sim_calls,
)
from tests.support import SEED_SPACE, Process

WABA = "QueryChatappBindWaba"


def call(gateway: Process, method: str, key: str, secret: str, space: str = SEED_SPACE) -> dict[str, object]:
    client = AcsClient(key, secret, "ap-southeast-1", auto_retry=False, max_retry_time=0)
    request = CommonRequest(domain=gateway.url.removeprefix("http://"), version="2020-06-06", action_name=WABA)
    request.set_protocol_type("http")
    request.set_method(method)
    if method == "POST":
        request.add_body_params("CustSpaceId", space)
    else:
        request.add_query_param("CustSpaceId", space)
    return dict(json.loads(client.do_action_with_exception(request)))


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_open_mode_serves_the_legacy_sdk_whatever_it_signs_with(open_gateway: Process,  # noqa: F811
                                                               sim_url: str, method: str) -> None:
    answer = call(open_gateway, method, "LTAI5tAnyKey", "any-secret")  # a miss, or a hit from an earlier test
    assert answer["Code"] == "OK"
    calls = sim_calls(sim_url, WABA)
    assert calls <= 1
    assert call(open_gateway, method, "LTAI5tOtherKey", "other")["Code"] == "OK"  # the same entry: a hit
    assert sim_calls(sim_url, WABA) == calls


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_tenant_auth_serves_a_right_secret_and_refuses_a_wrong_one_with_the_sdks_exception(
        auth_gateway: Process, sim_url: str, method: str) -> None:  # noqa: F811
    assert call(auth_gateway, method, TENANT_KEY, TENANT_SECRET)["Code"] == "OK"
    calls = sim_calls(sim_url, WABA)
    assert calls <= 1  # a miss, or a hit from an earlier test
    with pytest.raises(ServerException) as wrong:
        call(auth_gateway, method, TENANT_KEY, "not-the-secret", space="78000000000001")
    # The SDK splits CAMS's message on its colon to compare the string it signed (for a CommonRequest it keeps the
    # code, as against CAMS: the string it compares is the outer request's, which is empty).
    assert (wrong.value.get_error_code(), wrong.value.get_http_status()) == ("SignatureDoesNotMatch", 400)
    message = wrong.value.get_error_msg()
    assert message.startswith("Specified signature is not matched with our calculation. server string to sign is:")
    assert message.split(":")[1].startswith(f"{method}&%2F&AccessKeyId%3D{TENANT_KEY}")
    assert "not-the-secret" not in message
    with pytest.raises(ServerException) as unknown:
        call(auth_gateway, method, "LTAI5tNobodyKnows", "x", space="78000000000002")
    assert (unknown.value.get_error_code(), unknown.value.get_http_status()) == ("InvalidAccessKeyId.NotFound", 404)
    assert sim_calls(sim_url, WABA) == calls  # refusals cost nothing upstream
