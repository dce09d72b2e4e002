"""Freshness against the simulator over HTTP: the outcome table, stale-while-revalidate, stale-if-error,
and the headers that say which happened. Counted through the simulator's stats and the responses."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from proxy.secret import Secret
from proxy.web.keys import GATEWAY
from tests.integration.conftest import TEMPLATE, WABA, GatewayFactory, Sim

OK_SPACE, UNSUBSCRIBED, ISV_ONLY, UNKNOWN = "10000000000001", "10000000000002", "10000000000003", "19999999999999"
CODE = "a" * 32


def fixtures(name: str = "v1") -> dict[str, Any]:
    def space(space_id: str, **extra: object) -> dict[str, object]:
        return {"CustSpaceId": space_id, "IsvCode": None, "Subscribed": True,
                "Waba": {"Id": f"9{space_id}", "Name": "W"}, "Templates": [
                    {"TemplateCode": CODE, "Name": name, "Language": "en_US", "Category": "UTILITY",
                     "TemplateType": "WHATSAPP", "AuditStatus": "pass", "Components": []}], **extra}

    return {"spaces": [space(OK_SPACE), space(UNSUBSCRIBED, Subscribed=False), space(ISV_ONLY, IsvCode="isv-1")]}


def template(space: str = OK_SPACE, code: str = CODE) -> str:
    return f"/v1/{TEMPLATE}?CustSpaceId={space}&Language=en_US&TemplateCode={code}"


def waba(space: str) -> str:
    return f"/v1/{WABA}?CustSpaceId={space}"


async def get(session: aiohttp.ClientSession, server: TestServer, target: str) -> tuple[int, dict[str, Any],
                                                                                        dict[str, str]]:
    async with session.get(str(server.make_url("/")) + target.lstrip("/")) as response:
        return response.status, orjson.loads(await response.read()), dict(response.headers.items())


async def upstream_calls(sim: Sim) -> int:
    return int((await sim.stats(TEMPLATE))["calls"]) + int((await sim.stats(WABA))["calls"])


def status_ttl(headers: dict[str, str]) -> int:
    fields = dict(part.strip().partition("=")[::2] for part in headers["Cache-Status"].split(";")[1:])
    return int(fields["ttl"])


KEPT_ROWS = [  # (answer, target, code, kept for at most)
    ("success", template(), "OK", 300),
    ("unknown space", template(UNKNOWN), "Unknown.ResourceOwnerId", 30),
    ("template not found", template(code="b" * 32), "Template.NotFound", 30),
    ("not subscribed", waba(UNSUBSCRIBED), "Product.Unsubscript", 30),
    ("permission denied", waba(ISV_ONLY), "Ram.PermissionDeny", 30),
]


@pytest.mark.parametrize(("name", "target", "code", "kept"), KEPT_ROWS, ids=[row[0] for row in KEPT_ROWS])
async def test_outcomes_that_are_cached_and_for_how_long(make_gateway: GatewayFactory, session: aiohttp.ClientSession,
                                                         sim: Sim, name: str, target: str, code: str,
                                                         kept: int) -> None:
    await sim.fixtures(fixtures())
    gateway = await make_gateway()
    first = await get(session, gateway, target)
    second = await get(session, gateway, target)
    assert first[1]["Code"] == code and second[1] == first[1], name
    assert (first[2]["X-Cache"], second[2]["X-Cache"]) == ("MISS", "HIT")
    assert "fwd=miss" in first[2]["Cache-Status"] and "stored" in first[2]["Cache-Status"]
    assert kept - 2 <= status_ttl(second[2]) <= kept
    assert await upstream_calls(sim) == 1


NEVER_ROWS = [  # (answer, fault plan, HTTP status the client sees, code)
    ("throttled", {"throttle_rate": 1.0}, 400, "Throttling.User"),
    ("5xx", {"error_rate": 1.0}, None, None),
    ("timeout", {"hang_rate": 1.0, "hang_ms": 2000}, 504, "Proxy.UpstreamTimeout"),
]


@pytest.mark.parametrize(("name", "plan", "status", "code"), NEVER_ROWS, ids=[row[0] for row in NEVER_ROWS])
async def test_failures_are_never_cached(make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim,
                                         name: str, plan: dict[str, float], status: int | None,
                                         code: str | None) -> None:
    gateway = await make_gateway(upstream_attempts=1, upstream_timeout_s=0.5)
    await sim.faults({WABA: {"latency_ms": 1, "jitter_ms": 0, **plan}})
    for expected_calls in (1, 2):
        answer_status, body, headers = await get(session, gateway, waba(OK_SPACE))
        assert headers.get("X-Cache") != "HIT" and answer_status >= 400, (name, body)
        if status is not None:
            assert (answer_status, body["Code"]) == (status, code) or (
                name == "throttled" and body["Code"] in {"System.LimitControl", "Throttling.User"}), body
        assert (await sim.stats(WABA))["calls"] == expected_calls, name


async def test_a_rejected_signature_is_never_cached(make_gateway: GatewayFactory, session: aiohttp.ClientSession,
                                                    sim: Sim) -> None:
    gateway = await make_gateway(access_key_secret=Secret("not-the-secret-not-the-secret"), upstream_attempts=1)
    for expected_calls in (1, 2):
        _status, body, headers = await get(session, gateway, waba(OK_SPACE))
        assert body["Code"] == "SignatureDoesNotMatch" and headers["X-Cache"] == "MISS"
        assert (await sim.stats(WABA))["calls"] == expected_calls


async def wait_for(condition: Any, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_stale_while_revalidate_serves_at_once_refreshes_once_then_serves_the_new_data(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(fixtures("v1"))
    gateway = await make_gateway(ttls={TEMPLATE: 1.0}, stale_while_revalidate_s=30.0)
    counters = gateway.app[GATEWAY].readthrough.counters
    assert (await get(session, gateway, template()))[1]["Data"]["Name"] == "v1"
    await sim.fixtures(fixtures("v2"))
    await asyncio.sleep(1.05)  # the TTL passes: the entry is stale
    answers = await asyncio.gather(*(get(session, gateway, template()) for _ in range(20)))
    for _, body, headers in answers:
        assert headers["X-Cache"] == "STALE" and body["Data"]["Name"] == "v1"
        assert "detail=stale-while-revalidate" in headers["Cache-Status"] and status_ttl(headers) < 0
    await wait_for(lambda: counters.refreshes == 1)
    _, body, headers = await get(session, gateway, template())
    assert headers["X-Cache"] == "HIT" and body["Data"]["Name"] == "v2"
    assert (await sim.stats(TEMPLATE))["calls"] == 2  # the fill and exactly one refresh


async def test_stale_if_error_within_max_staleness_then_a_clear_error(make_gateway: GatewayFactory,
                                                                      session: aiohttp.ClientSession,
                                                                      sim: Sim) -> None:
    await sim.fixtures(fixtures())
    gateway = await make_gateway(ttls={WABA: 1.0}, stale_while_revalidate_s=0.0, max_stale_s=2.0,
                                 upstream_attempts=1)
    fresh = await get(session, gateway, waba(OK_SPACE))
    await sim.faults({WABA: {"error_rate": 1.0, "latency_ms": 1, "jitter_ms": 0}})
    await asyncio.sleep(1.05)  # past fresh: a miss, with the stale entry as the fallback
    status, body, headers = await get(session, gateway, waba(OK_SPACE))
    assert status == 200 and body == fresh[1] and headers["X-Cache"] == "STALE"
    assert "fwd=stale" in headers["Cache-Status"] and "detail=stale-if-error" in headers["Cache-Status"]
    assert "fwd-status=5" in headers["Cache-Status"]
    assert (await sim.stats(WABA))["calls"] == 2
    await asyncio.sleep(2.0)  # past the maximum staleness: the entry is gone
    status, body, headers = await get(session, gateway, waba(OK_SPACE))
    assert status >= 500 and body["Code"] in {"ServiceUnavailable", "InternalError"}
    assert headers["X-Cache"] == "MISS" and (await sim.stats(WABA))["calls"] == 3


async def test_hits_and_misses_describe_the_upstream_budget(make_gateway: GatewayFactory,
                                                            session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(fixtures())
    gateway = await make_gateway()
    for expected in ("MISS", "HIT"):
        _, _, headers = await get(session, gateway, template())
        assert headers["X-Cache"] == expected
        assert headers["RateLimit-Policy"] == '"upstream";q=5;w=1'
        assert headers["RateLimit"].startswith('"upstream";r=') and ";t=" in headers["RateLimit"]
        assert int(headers["Age"]) >= 0
        assert headers.get("X-Cache-Key", f"k1:{TEMPLATE}:").startswith(f"k1:{TEMPLATE}:")
        assert ("X-Cache-Key" in headers) == (expected == "MISS")  # not on fresh hits (the hit path's cost)


async def test_a_key_hit_during_its_ttl_is_refreshed_before_it_expires(make_gateway: GatewayFactory,
                                                                       session: aiohttp.ClientSession,
                                                                       sim: Sim) -> None:
    await sim.fixtures(fixtures("v1"))
    gateway = await make_gateway(ttls={TEMPLATE: 2.0}, refresh_ahead_fraction=0.4, stale_while_revalidate_s=0.0)
    counters = gateway.app[GATEWAY].readthrough.counters
    first = await get(session, gateway, template())
    unread = await get(session, gateway, template(UNKNOWN))  # a negative answer is never refreshed ahead
    assert (first[2]["X-Cache"], unread[2]["X-Cache"]) == ("MISS", "MISS")
    assert (await get(session, gateway, template()))[2]["X-Cache"] == "HIT"  # hit during its TTL: planned
    await sim.fixtures(fixtures("v2"))
    await wait_for(lambda: counters.refreshes == 1)  # due 0.8 s before expiry (40 % of 2 s)
    _, body, headers = await get(session, gateway, template())
    assert headers["X-Cache"] == "HIT" and body["Data"]["Name"] == "v2" and status_ttl(headers) >= 1
    assert await upstream_calls(sim) == 3  # two fills and one refresh; never a miss in between


async def test_readyz_says_degraded_while_the_upstream_fails_and_ready_again_after(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(fixtures())
    gateway = await make_gateway(upstream_attempts=1)
    await sim.faults({WABA: {"error_rate": 1.0, "latency_ms": 1, "jitter_ms": 0}})
    for space in (OK_SPACE, UNSUBSCRIBED, ISV_ONLY):
        await get(session, gateway, waba(space))
    status, body, _ = await get(session, gateway, "/readyz")
    assert status == 200 and body["status"] == "degraded" and "upstream failing" in body["reasons"][0]
    await sim.faults({WABA: {"error_rate": 0.0, "latency_ms": 1, "jitter_ms": 0}})
    await get(session, gateway, waba(OK_SPACE))
    status, body, _ = await get(session, gateway, "/readyz")
    assert (status, body["status"]) == (200, "ready")
