"""Every validation rule answers a 4xx in the upstream shape and costs no upstream call."""

from __future__ import annotations

import socket

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.integration.conftest import TEMPLATE, WABA, Sim
from tests.support import SEED_SPACE, SEED_TEMPLATE

GOOD = f"CustSpaceId={SEED_SPACE}&Language=en_US&TemplateCode={SEED_TEMPLATE}"
SHAPE = {"RequestId", "HostId", "Code", "Message"}

CASES = [
    # (method, path+query, headers, body, status, code, words in the message)
    ("GET", f"/?{GOOD}", {}, b"", 400, "MissingParameter.Action", "action"),
    ("GET", f"/v1/DeleteTemplate?{GOOD}", {}, b"", 404, "InvalidAction.NotFound", "DeleteTemplate"),
    ("GET", f"/?Action=Nope&{GOOD}", {}, b"", 404, "InvalidAction.NotFound", "Nope"),
    ("GET", f"/v1/{TEMPLATE}?CustSpaceId={SEED_SPACE}&TemplateCode=x", {}, b"", 400, "MissingParameter.Language",
     "Language"),
    ("GET", f"/v1/{TEMPLATE}?Language=en_US&TemplateCode=x", {}, b"", 400, "MissingParameter.CustSpaceId",
     "CustSpaceId or CustWabaId"),
    ("GET", f"/v1/{TEMPLATE}?Language=en_US&CustSpaceId=1", {}, b"", 400, "MissingParameter.TemplateCode",
     "TemplateCode or TemplateName"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&TemplateType=SMS", {}, b"", 400, "InvalidParameter.TemplateType", "VIBER"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&Colour=red", {}, b"", 400, "InvalidParameter.Unknown", "Colour"),
    ("GET", f"/v1/{WABA}?CustSpaceId=1&TemplateCode=x", {}, b"", 400, "InvalidParameter.Unknown", "TemplateCode"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&Language=zh_CN", {}, b"", 400, "InvalidParameter.Language", "more than once"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&IsvCode=", {}, b"", 400, "InvalidParameter.IsvCode", "empty"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&TemplateName={'x' * 600}", {}, b"", 400, "InvalidParameter.TemplateName",
     "longer than"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&TemplateName=a%0Ab", {}, b"", 400, "InvalidParameter.TemplateName", "control"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&TemplateName=%FF", {}, b"", 400, "InvalidParameter.Encoding", "UTF-8"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}&Version=2019-01-01", {}, b"", 400, "InvalidVersion", "2020-06-06"),
    ("POST", f"/?{GOOD}", {"x-acs-action": TEMPLATE, "x-acs-version": "1999-01-01"}, b"", 400, "InvalidVersion",
     "Version"),
    ("POST", f"/?Action={WABA}", {"x-acs-action": TEMPLATE}, b"", 400, "InvalidParameter.Action", "conflicting"),
    ("POST", f"/v1/{TEMPLATE}", {"Content-Type": "application/json"}, b'{"Language":"en_US"}', 415,
     "InvalidParameter.Body", "x-www-form-urlencoded"),
    ("POST", f"/v1/{TEMPLATE}", {"Content-Type": "application/x-www-form-urlencoded"}, b"x" * 70_000, 413,
     "InvalidRequest.TooLarge", ""),
    ("GET", f"/v1/{TEMPLATE}?" + "&".join(f"OwnerId{i}=1" for i in range(40)), {}, b"", 400,
     "InvalidParameter.TooMany", "32"),
    ("GET", f"/v1/{TEMPLATE}?{GOOD}", {"X-Tenant": "bad tenant!"}, b"", 400, "InvalidParameter.X-Tenant", "X-Tenant"),
    ("DELETE", f"/v1/{TEMPLATE}?{GOOD}", {}, b"", 405, "InvalidParameter.Method", ""),
    ("GET", "/nowhere", {}, b"", 404, "InvalidAction.NotFound", ""),
]


@pytest.mark.parametrize(("method", "target", "headers", "body", "status", "code", "words"), CASES,
                         ids=[f"{c[5]}-{i}" for i, c in enumerate(CASES)])
async def test_rule(gateway: TestServer, session: aiohttp.ClientSession, sim: Sim, method: str, target: str,
                    headers: dict[str, str], body: bytes, status: int, code: str, words: str) -> None:
    url = str(gateway.make_url("/")).rstrip("/") + target
    async with session.request(method, aiohttp.client.URL(url, encoded=True), headers=headers,
                               data=body) as response:
        payload = orjson.loads(await response.read())
        assert (response.status, payload["Code"]) == (status, code), payload
        assert set(payload) == SHAPE and payload["RequestId"] == response.headers["X-Request-Id"]
        assert words.lower() in payload["Message"].lower()
    for action in (TEMPLATE, WABA):
        assert (await sim.stats(action))["calls"] == 0


def raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/" + TEMPLATE.encode() + b"?TemplateName=" + b"x" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n",
    b"NOT AN HTTP REQUEST\r\n\r\n",
])
async def test_requests_the_parser_refuses_still_get_json(make_gateway: object, sim: Sim,
                                                          request_bytes: bytes) -> None:
    import asyncio

    from tests.integration.conftest import GatewayFactory

    factory: GatewayFactory = make_gateway  # type: ignore[assignment]
    gateway = await factory()
    raw = await asyncio.to_thread(raw_exchange, gateway.port or 0, request_bytes)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1].startswith(b"4"), head[:80]
    assert b"application/json" in head
    payload = orjson.loads(body)
    assert set(payload) == SHAPE and payload["Code"].startswith("InvalidRequest.")
    assert (await sim.stats())["calls"] == 0
