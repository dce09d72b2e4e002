"""The gateway end to end over real HTTP, in front of the simulator process: hits, misses, key sharing,
coalescing, byte-for-byte answers, what is (not) cached, retries."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from proxy.web.keys import GATEWAY
from tests.integration.conftest import TEMPLATE, WABA, GatewayFactory, Sim, counters
from tests.support import SEED_SPACE, SEED_TEMPLATE

QUERY = f"CustSpaceId={SEED_SPACE}&Language=en_US&TemplateCode={SEED_TEMPLATE}"


async def get(session: aiohttp.ClientSession, server: TestServer, target: str,
              **kwargs: object) -> tuple[int, bytes, CIMultiDict[str]]:
    async with session.get(str(server.make_url("/")) + target.lstrip("/"), **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.read(), CIMultiDict(response.headers)


async def test_miss_then_hit_with_the_upstream_bytes(gateway: TestServer, session: aiohttp.ClientSession,
                                                     sim: Sim) -> None:
    status, body, headers = await get(session, gateway, f"/v1/{TEMPLATE}?{QUERY}")
    assert (status, headers["X-Cache"], headers["Age"]) == (200, "MISS", "0")
    assert headers["X-Request-Id"] and headers["Content-Type"].startswith("application/json")
    assert body == await sim.answer(orjson.loads(body)["RequestId"])  # byte for byte what the simulator sent
    status, again, headers = await get(session, gateway, f"/v1/{TEMPLATE}?{QUERY}")
    assert (status, headers["X-Cache"], again) == (200, "HIT", body)
    assert (await sim.stats())["calls"] == 1


async def test_every_request_shape_shares_one_entry(gateway: TestServer, session: aiohttp.ClientSession,
                                                    sim: Sim) -> None:
    shapes = [
        session.get(f"{gateway.make_url('/')}?Action={TEMPLATE}&{QUERY}"),
        session.post(f"{gateway.make_url('/')}?{QUERY}", headers={"x-acs-action": TEMPLATE,
                                                                 "x-acs-version": "2020-06-06"}),
        session.get(f"{gateway.make_url('/v1/' + TEMPLATE)}?{QUERY}&Format=json&RegionId=ap-southeast-1"),
        session.post(str(gateway.make_url(f"/v1/{TEMPLATE}")), data=QUERY,
                     headers={"Content-Type": "application/x-www-form-urlencoded"}),
        session.get(f"{gateway.make_url('/')}?Language=en_US&TemplateCode={SEED_TEMPLATE}&CustSpaceId={SEED_SPACE}"
                    f"&Action={TEMPLATE}&Version=2020-06-06&OwnerId=1&SignatureNonce=x"),
    ]
    seen = []
    for shape in shapes:
        async with shape as response:
            assert response.status == 200, await response.text()
            seen.append(response.headers["X-Cache"])
    assert seen == ["MISS", "HIT", "HIT", "HIT", "HIT"]
    assert (await sim.stats())["calls"] == 1


async def test_300_concurrent_identical_misses_make_one_call(gateway: TestServer, session: aiohttp.ClientSession,
                                                             sim: Sim) -> None:
    await sim.faults({TEMPLATE: {"latency_ms": 1500, "jitter_ms": 0}})
    results = await asyncio.gather(*(get(session, gateway, f"/v1/{TEMPLATE}?{QUERY}") for _ in range(300)))
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, body, _ in results}) == 1
    caches = [headers["X-Cache"] for _, _, headers in results]
    # Requests that arrive after the fill completed are hits; all the others joined the one flight.
    assert caches.count("MISS") == 1 and caches.count("COALESCED") + caches.count("HIT") == 299
    assert caches.count("COALESCED") > 0
    assert (await sim.stats())["calls"] == 1
    assert counters(gateway).upstream_calls == 1


async def test_upstream_faults_are_retried_through_the_queue(make_gateway: GatewayFactory,
                                                             session: aiohttp.ClientSession, sim: Sim) -> None:
    gateway = await make_gateway(upstream_attempts=3)
    await sim.faults({WABA: {"error_rate": 1.0, "latency_ms": 1, "jitter_ms": 0}})
    status, body, headers = await get(session, gateway, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    assert status in {500, 503} and orjson.loads(body)["Code"] in {"ServiceUnavailable", "InternalError"}
    assert (await sim.stats(WABA))["faults"] == 3
    await sim.faults({WABA: {"error_rate": 0.0}})
    status, _, headers = await get(session, gateway, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    assert (status, headers["X-Cache"]) == (200, "MISS")


async def test_upstream_throttling_is_retried_counted_and_never_cached(make_gateway: GatewayFactory,
                                                                       session: aiohttp.ClientSession,
                                                                       sim: Sim) -> None:
    gateway = await make_gateway(upstream_attempts=2)
    await sim.faults({WABA: {"throttle_rate": 1.0, "latency_ms": 1, "jitter_ms": 0}})
    status, body, _ = await get(session, gateway, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    assert status == 400 and orjson.loads(body)["Code"] == "System.LimitControl"
    assert counters(gateway).upstream_throttled == 2
    await sim.faults({WABA: {"throttle_rate": 0.0}})
    _, _, headers = await get(session, gateway, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    assert headers["X-Cache"] == "MISS"


async def test_unreachable_upstream_is_a_json_502(make_gateway: GatewayFactory, session: aiohttp.ClientSession) -> None:
    from tests.support import free_port

    gateway = await make_gateway(upstream=f"http://127.0.0.1:{free_port()}", upstream_attempts=2)
    status, body, _ = await get(session, gateway, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    assert status == 502 and orjson.loads(body)["Code"] == "Proxy.UpstreamUnavailable"


async def test_upstream_timeout_is_a_json_504_and_the_fill_goes_on(make_gateway: GatewayFactory,
                                                                   session: aiohttp.ClientSession, sim: Sim) -> None:
    gateway = await make_gateway(upstream_attempts=1, upstream_timeout_s=0.3, deadline_s=2.0)
    await sim.faults({WABA: {"hang_rate": 1.0, "hang_ms": 1000}})
    status, body, _ = await get(session, gateway, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    assert status == 504 and orjson.loads(body)["Code"] == "Proxy.UpstreamTimeout"


@pytest.mark.parametrize(("l1_max_ttl_s", "backend"), [(0.0, "redis"), (10.0, "tiered")])
async def test_redis_backend_serves_hits(make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim,
                                         redis_url: str, l1_max_ttl_s: float, backend: str) -> None:
    import redis as redis_sync

    redis_sync.Redis.from_url(redis_url).flushall()
    gateway = await make_gateway(redis_url=redis_url, l1_max_ttl_s=l1_max_ttl_s)
    assert gateway.app[GATEWAY].readthrough.cache.name == backend
    first = await get(session, gateway, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    second = await get(session, gateway, f"/?Action={WABA}&CustSpaceId={SEED_SPACE}")
    assert first[2]["X-Cache"] == "MISS" and second[2]["X-Cache"] == "HIT" and first[1] == second[1]
    other = await make_gateway(redis_url=redis_url)  # a second process-like gateway shares the entry
    third = await get(session, other, f"/v1/{WABA}?CustSpaceId={SEED_SPACE}")
    assert third[2]["X-Cache"] == "HIT" and third[1] == first[1]
    assert (await sim.stats(WABA))["calls"] == 1
