"""What a purge answers, through a real gateway in front of the simulator (issue 15): the entries it removed,
not the keys it was named or found under a tag, and which named keys were not cached. With the memory cache,
Redis alone, and Redis behind an L1 (tiered); and a 503 while Redis is down. Each test uses a space, WABA and
template codes of its own, so the suite's shared redis-server holds nothing else under them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from proxy.cache.tiered import TieredCache
from proxy.secret import Secret
from proxy.web.keys import GATEWAY
from tests.integration.conftest import TEMPLATE, WABA, GatewayFactory, Sim
from tests.integration.test_replicas import RedisServer
from tests.support import many_templates

ADMIN = "purge-results-admin-token-0123456789"
CALLBACK = "purge-results-callback-token-0123456789"
BACKENDS = {"memory": {}, "redis": {"l1_max_ttl_s": 0.0}, "tiered": {"l1_max_ttl_s": 10.0}}


def own_fixtures(count: int) -> tuple[dict[str, Any], str, str, list[str]]:
    """A simulator document with one space of ``count`` templates: (document, space, WABA id, codes), all unique."""
    space = f"7{uuid.uuid4().int % 10**13:013d}"
    document = many_templates(count, space=space)
    first = document["spaces"][0]  # type: ignore[index]
    waba_id = f"9{uuid.uuid4().int % 10**14:014d}"
    first["Waba"]["Id"] = waba_id
    codes = [uuid.uuid4().hex for _ in range(count)]
    for template, code in zip(first["Templates"], codes, strict=True):
        template["TemplateCode"] = code
    document["spaces"] = [first]
    return document, space, waba_id, codes


async def gateway_for(make_gateway: GatewayFactory, backend: str, redis_url: str) -> TestServer:
    extra: dict[str, Any] = dict(BACKENDS[backend])
    if backend != "memory":
        extra["redis_url"] = redis_url
    server = await make_gateway(admin_token=Secret(ADMIN), callback_token=Secret(CALLBACK), **extra)
    assert server.app[GATEWAY].readthrough.cache.name == backend
    return server


async def purge(session: aiohttp.ClientSession, server: TestServer, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(server.make_url("/admin/purge"), data=orjson.dumps(body),
                            headers={"Authorization": f"Bearer {ADMIN}"}) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def fill(session: aiohttp.ClientSession, server: TestServer, target: str) -> str:
    """Call ``target`` (a miss); the cache key of the entry it filled."""
    async with session.get(str(server.make_url("/")) + target.lstrip("/")) as response:
        assert response.status == 200, await response.text()
        assert response.headers["X-Cache"] == "MISS", target
        return response.headers["X-Cache-Key"]


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_a_purge_counts_the_entries_it_removed_and_names_the_keys_not_cached(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim, redis_url: str, backend: str) -> None:
    document, space, _, codes = own_fixtures(6)
    await sim.fixtures(document)
    server = await gateway_for(make_gateway, backend, redis_url)

    never = await purge(session, server, {"keys": ["does-not-exist"]})
    assert never == {"Purged": 0, "Keys": [], "NotCached": ["does-not-exist"]}

    targets = [f"/v1/{TEMPLATE}?CustSpaceId={space}&Language=en_US&TemplateCode={code}" for code in codes]
    keys = [await fill(session, server, target) for target in targets]
    first = await purge(session, server, {"tags": {"CustSpaceId": [space]}})
    assert first == {"Purged": 6, "Keys": sorted(keys), "NotCached": []}
    again = await purge(session, server, {"tags": {"CustSpaceId": [space]}})  # the index still names the six
    assert again == {"Purged": 0, "Keys": [], "NotCached": []}

    # by key, by call and by tag at once, a key named twice: one entry counted once, the named misses listed
    refilled = await fill(session, server, targets[0])
    call = {"Action": TEMPLATE, "CustSpaceId": space, "Language": "en_US", "TemplateCode": codes[1]}
    mixed = await purge(session, server, {"keys": [refilled, refilled, "does-not-exist"], "calls": [call],
                                          "tags": {"TemplateCode": [codes[0]]}})
    assert mixed == {"Purged": 1, "Keys": [refilled], "NotCached": sorted([keys[1], "does-not-exist"])}
    assert (await sim.stats())["calls"] == 7  # six fills and one refill; a purge never costs upstream quota


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_an_audit_callback_counts_the_entries_it_removed(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim, redis_url: str, backend: str) -> None:
    document, space, waba_id, codes = own_fixtures(2)
    await sim.fixtures(document)
    server = await gateway_for(make_gateway, backend, redis_url)
    await fill(session, server, f"/v1/{WABA}?CustSpaceId={space}")  # links the WABA to the space
    for code in codes:
        await fill(session, server, f"/v1/{TEMPLATE}?CustSpaceId={space}&Language=en_US&TemplateCode={code}")
    event = orjson.dumps([{"WabaId": waba_id, "TemplateCode": codes[0], "AuditStatus": "pass"}])
    for expected in (1, 0):  # the second callback finds the key in the index, and nothing cached under it
        async with session.post(server.make_url("/callbacks/cams/audit"), data=event,
                                headers={"X-Callback-Token": CALLBACK}) as response:
            assert response.status == 200, await response.text()
            assert await response.json() == {"Purged": expected}


async def test_a_purge_while_redis_is_down_answers_503_and_still_drops_this_replicas_l1(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim, redis_binary: str,
        tmp_path: Path) -> None:
    """Whether Redis held the entry is unknown, so no count and no "not cached" may be claimed: 503, retry later."""
    document, space, _, codes = own_fixtures(1)
    await sim.fixtures(document)
    redis = RedisServer(redis_binary, tmp_path)
    try:
        server = await make_gateway(redis_url=redis.url, redis_timeout_s=1.0, admin_token=Secret(ADMIN))
        cache = server.app[GATEWAY].readthrough.cache
        assert isinstance(cache, TieredCache)
        key = await fill(session, server, f"/v1/{TEMPLATE}?CustSpaceId={space}&Language=en_US&TemplateCode={codes[0]}")
        assert cache.l1.peek(key) is not None
        redis.kill()
        for _ in range(2):  # the first finds Redis gone (and opens the breaker), the second is refused at once
            async with session.post(server.make_url("/admin/purge"), data=orjson.dumps({"keys": [key, "nope"]}),
                                    headers={"Authorization": f"Bearer {ADMIN}"}) as response:
                assert response.status == 503, await response.text()
                assert (await response.json())["Code"] == "Proxy.PurgeUnavailable"
        assert cache.l1.peek(key) is None and not cache.breaker.healthy
    finally:
        redis.kill()
