"""The simulator over real HTTP: gateway checks, caps, fixtures, faults, admin API, error shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from proxy.secret import Secret
from proxy.signing import Credentials
from proxy.simulator.app import create_app
from proxy.simulator.settings import SimulatorSettings
from proxy.upstream.client import UpstreamClient
from proxy.upstream.errors import UpstreamTimeout
from tests.support import DEMO, SEED_SPACE, SEED_TEMPLATE, signed_headers, wire_query

GET_TEMPLATE, BIND_WABA = "GetChatappTemplateDetail", "QueryChatappBindWaba"
TEMPLATE_QUERY = {"CustSpaceId": SEED_SPACE, "Language": "en_US", "TemplateCode": SEED_TEMPLATE}
ERROR_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}

Factory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def sim(aiohttp_server: Any) -> TestServer:
    settings = SimulatorSettings(latency_ms=1.0, jitter_ms=0.0, seed=1)
    return await aiohttp_server(create_app(settings))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client_session:
        yield client_session


def client_for(sim: TestServer, session: aiohttp.ClientSession, credentials: Credentials = DEMO,
               timeout: float = 5.0) -> UpstreamClient:
    return UpstreamClient(str(sim.make_url("/")), lambda: credentials, timeout=timeout)


async def stats(sim: TestServer, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(sim.make_url("/__sim/stats")) as response:
        return dict(await response.json())


async def raw_call(sim: TestServer, session: aiohttp.ClientSession, action: str, query: dict[str, str],
                   headers: dict[str, str], method: str = "POST") -> tuple[int, dict[str, Any], Any]:
    url = sim.make_url("/").with_query(None)
    async with session.request(method, f"{url}?{wire_query(query)}", headers=headers, data=b"") as response:
        return response.status, orjson.loads(await response.read()), response.headers


def host_of(sim: TestServer) -> str:
    return f"{sim.host}:{sim.port}"


async def test_both_actions_answer_in_the_seed_shapes(sim: TestServer, session: aiohttp.ClientSession) -> None:
    client = client_for(sim, session)
    template = await client.call(GET_TEMPLATE, TEMPLATE_QUERY)
    body = orjson.loads(template.body)
    assert template.status == 200 and template.request_id == body["RequestId"]
    assert list(body) == ["RequestId", "Code", "Message", "Data", "AccessDeniedDetail", "Success"]
    assert body["Data"]["Name"] == "hello_whatsapp" and body["Data"]["Components"][0]["hasExpiration"] is True
    waba = orjson.loads((await client.call(BIND_WABA, {"CustSpaceId": SEED_SPACE})).body)
    assert list(waba) == ["AccessDeniedDetail", "Message", "RequestId", "Data", "Code", "Success"]
    assert waba["Data"]["AccountReviewStatus"] == "APPROVED" and waba["Code"] == "OK"


async def test_get_and_v1_query_action_are_accepted(sim: TestServer, session: aiohttp.ClientSession) -> None:
    get = await client_for(sim, session).call(BIND_WABA, {"CustSpaceId": SEED_SPACE}, method="GET")
    assert get.status == 200


async def test_thirty_concurrent_calls_exactly_cap_accepted(sim: TestServer,
                                                            session: aiohttp.ClientSession) -> None:
    client = client_for(sim, session)
    results = await asyncio.gather(*(client.call(GET_TEMPLATE, TEMPLATE_QUERY) for _ in range(30)))
    codes = [orjson.loads(r.body)["Code"] for r in results]
    assert codes.count("OK") == 5 and codes.count("System.LimitControl") == 25
    assert {r.status for r in results if orjson.loads(r.body)["Code"] != "OK"} == {400}
    counted = (await stats(sim, session))["actions"][GET_TEMPLATE]
    assert counted["calls"] == 30 and counted["ok"] == 5 and counted["throttled"] == 25
    assert counted["max_in_any_1s"] == 30


async def test_caps_are_per_access_key(aiohttp_server: Any, session: aiohttp.ClientSession) -> None:
    other = Credentials("LTAI5tSecondKey", Secret("second"))
    settings = SimulatorSettings(latency_ms=0, jitter_ms=0, access_keys=(DEMO, other))
    server = await aiohttp_server(create_app(settings))
    calls = [client_for(server, session, key).call(BIND_WABA, {}) for key in (DEMO, other) for _ in range(12)]
    codes = [orjson.loads(r.body)["Code"] for r in await asyncio.gather(*calls)]
    assert codes.count("OK") == 20
    by_key = (await stats(server, session))["actions"][BIND_WABA]["by_key"]
    assert {k: v["max_in_any_1s"] for k, v in by_key.items()} == {DEMO.access_key_id: 12, "LTAI5tSecondKey": 12}


async def test_gateway_errors_have_the_upstream_shape(sim: TestServer, session: aiohttp.ClientSession) -> None:
    host = host_of(sim)
    cases: list[tuple[dict[str, str], str, int]] = [
        (signed_headers(host, GET_TEMPLATE, TEMPLATE_QUERY,
                        credentials=Credentials("LTAI5tUnknown", Secret("x"))), "InvalidAccessKeyId.NotFound", 404),
        (signed_headers(host, GET_TEMPLATE, TEMPLATE_QUERY,
                        credentials=Credentials(DEMO.access_key_id, Secret("bad"))), "SignatureDoesNotMatch", 400),
        (signed_headers(host, GET_TEMPLATE, TEMPLATE_QUERY, date=datetime.now(UTC) - timedelta(minutes=16)),
         "InvalidTimeStamp.Expired", 400),
        (signed_headers(host, GET_TEMPLATE, TEMPLATE_QUERY) | {"x-acs-unsigned": "1"}, "IncompleteSignature", 400),
        ({"x-acs-action": GET_TEMPLATE, "x-acs-version": "2020-06-06"}, "IncompleteSignature", 400),
        (signed_headers(host, GET_TEMPLATE, TEMPLATE_QUERY, version="2019-01-01"), "InvalidVersion", 400),
        (signed_headers(host, "DeleteEverything", TEMPLATE_QUERY), "InvalidAction.NotFound", 404),
    ]
    for headers, code, status in cases:
        got_status, body, response_headers = await raw_call(sim, session, GET_TEMPLATE, TEMPLATE_QUERY, headers)
        assert (got_status, body["Code"]) == (status, code), body
        assert set(body) == ERROR_KEYS and response_headers["x-acs-request-id"] == body["RequestId"]
    counted = (await stats(sim, session))["actions"][GET_TEMPLATE]
    assert counted["rejected"] == 5 and counted["ok"] == 0


async def test_host_signed_under_another_value_fails(sim: TestServer, session: aiohttp.ClientSession) -> None:
    headers = signed_headers("cams.ap-southeast-1.aliyuncs.com", GET_TEMPLATE, TEMPLATE_QUERY)
    headers["host"] = host_of(sim)
    status, body, _ = await raw_call(sim, session, GET_TEMPLATE, TEMPLATE_QUERY, headers)
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")


async def test_reused_nonce_is_refused(sim: TestServer, session: aiohttp.ClientSession) -> None:
    headers = signed_headers(host_of(sim), GET_TEMPLATE, TEMPLATE_QUERY, nonce="f" * 32)
    first = await raw_call(sim, session, GET_TEMPLATE, TEMPLATE_QUERY, headers)
    second = await raw_call(sim, session, GET_TEMPLATE, TEMPLATE_QUERY, headers)
    assert first[0] == 200 and (second[0], second[1]["Code"]) == (400, "SignatureNonceUsed")


@pytest.mark.parametrize(("query", "code"), [
    ({"CustSpaceId": "99999999999999", "Language": "en_US", "TemplateCode": SEED_TEMPLATE},
     "Unknown.ResourceOwnerId"),
    ({"CustSpaceId": SEED_SPACE, "Language": "en_US", "TemplateCode": "0" * 32}, "Template.NotFound"),
    ({"CustSpaceId": SEED_SPACE, "Language": "fr_FR", "TemplateCode": SEED_TEMPLATE}, "Template.NotFound"),
    ({"CustSpaceId": SEED_SPACE, "Language": "en_US", "TemplateCode": SEED_TEMPLATE, "IsvCode": "nope"},
     "Ram.PermissionDeny"),
    ({"CustSpaceId": "51234000000003", "Language": "en_US", "TemplateName": "welcome_message"},
     "Ram.PermissionDeny"),
    ({"CustSpaceId": "60000000000404", "Language": "en_US", "TemplateName": "account_notice"},
     "Product.Unsubscript"),
    ({"CustSpaceId": SEED_SPACE, "TemplateCode": SEED_TEMPLATE}, "MissingParameter"),
    ({"CustSpaceId": SEED_SPACE, "Language": "en_US", "TemplateCode": SEED_TEMPLATE, "TemplateType": "SMS"},
     "InvalidParameter"),
])
async def test_business_errors(sim: TestServer, session: aiohttp.ClientSession, query: dict[str, str],
                               code: str) -> None:
    response = await client_for(sim, session).call(GET_TEMPLATE, query)
    body = orjson.loads(response.body)
    assert (response.status, body["Code"]) == (400, code)
    assert set(body) == ERROR_KEYS


@pytest.mark.parametrize("query", [
    {"CustSpaceId": "51234000000003", "Language": "pt_BR", "TemplateName": "welcome_message",
     "IsvCode": "isv-check-code-0003"},
    {"CustWabaId": "203939883939931", "Language": "zh_CN", "TemplateCode": SEED_TEMPLATE},
    {"CustSpaceId": SEED_SPACE, "Language": "en_US", "TemplateName": "hello_whatsapp", "TemplateType": "WHATSAPP",
     "OwnerId": "1", "SomethingUnknown": "ignored"},
])
async def test_lookups_that_succeed(sim: TestServer, session: aiohttp.ClientSession,
                                    query: dict[str, str]) -> None:
    response = await client_for(sim, session).call(GET_TEMPLATE, query)
    assert response.status == 200, response.body
    assert orjson.loads(response.body)["Data"]["Language"] == query["Language"]


async def test_fixture_changes_at_run_time(sim: TestServer, session: aiohttp.ClientSession) -> None:
    client = client_for(sim, session)
    url = sim.make_url(f"/__sim/spaces/{SEED_SPACE}/templates/{SEED_TEMPLATE}/en_US")
    async with session.patch(url, json={"AuditStatus": "fail", "Reason": "policy"}) as response:
        assert response.status == 200
    body = orjson.loads((await client.call(GET_TEMPLATE, TEMPLATE_QUERY)).body)
    assert (body["Data"]["AuditStatus"], body["Data"]["Reason"]) == ("fail", "policy")
    async with session.delete(url) as response:
        assert response.status == 200
    assert orjson.loads((await client.call(GET_TEMPLATE, TEMPLATE_QUERY)).body)["Code"] == "Template.NotFound"
    async with session.patch(sim.make_url(f"/__sim/spaces/{SEED_SPACE}"), json={"Subscribed": False}) as response:
        assert response.status == 200
    waba = await client.call(BIND_WABA, {"CustSpaceId": SEED_SPACE})
    assert orjson.loads(waba.body)["Code"] == "Product.Unsubscript"
    async with session.post(sim.make_url("/__sim/reset?all=1")) as response:
        assert response.status == 200
    assert (await client.call(GET_TEMPLATE, TEMPLATE_QUERY)).status == 200


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("PUT", "/__sim/fixtures", b"{not json", 400),
    ("PUT", "/__sim/fixtures", b'{"spaces": "no"}', 400),
    ("PATCH", "/__sim/spaces/nope", b"{}", 404),
    ("PUT", "/__sim/faults", b'{"GetChatappTemplateDetail": {"error_rate": 2}}', 400),
    ("PUT", "/__sim/faults", b'{"Nope": {}}', 400),
    ("GET", "/no/such/path", b"", 404),
])
async def test_admin_bad_input_gets_the_error_shape(sim: TestServer, session: aiohttp.ClientSession, method: str,
                                                    path: str, body: bytes, status: int) -> None:
    async with session.request(method, sim.make_url(path), data=body) as response:
        assert response.status == status
        assert set(orjson.loads(await response.read())) == ERROR_KEYS


async def test_garbage_input_never_yields_a_traceback(sim: TestServer, session: aiohttp.ClientSession) -> None:
    url = str(sim.make_url("/"))
    for target, headers in [
        (f"{url}?Action=GetChatappTemplateDetail&Language=%FF%FE", {}),
        (url, {"Authorization": "ACS3-HMAC-SHA256 garbage", "x-acs-action": GET_TEMPLATE,
               "x-acs-version": "2020-06-06"}),
        (f"{url}?Action=GetChatappTemplateDetail&Version=2020-06-06&Signature=x", {}),
        (url, {}),
    ]:
        async with session.post(aiohttp.client.URL(target, encoded=True), headers=headers) as response:
            assert 400 <= response.status < 500
            assert set(orjson.loads(await response.read())) == ERROR_KEYS


async def test_injected_faults_are_counted(sim: TestServer, session: aiohttp.ClientSession) -> None:
    client = client_for(sim, session, timeout=0.3)
    async def set_plan(plan: dict[str, Any]) -> None:
        async with session.put(sim.make_url("/__sim/faults"), json={BIND_WABA: plan}) as response:
            assert response.status == 200
    await set_plan({"error_rate": 1.0})
    assert (await client.call(BIND_WABA, {})).status in {500, 503}
    await set_plan({"error_rate": 0.0, "throttle_rate": 1.0})
    throttled = await client.call(BIND_WABA, {})
    assert orjson.loads(throttled.body)["Code"] == "System.LimitControl"
    await set_plan({"throttle_rate": 0.0, "hang_rate": 1.0, "hang_ms": 2000})
    with pytest.raises(UpstreamTimeout):
        await client.call(BIND_WABA, {})
    counted = (await stats(sim, session))["actions"][BIND_WABA]
    assert (counted["faults"], counted["throttled"], counted["calls"]) == (2, 1, 3)
