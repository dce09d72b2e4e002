"""/metrics after a scripted mix: the exact counts the simulator's stats and the responses say."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import TEMPLATE, WABA, GatewayFactory, Sim
from tests.support import many_templates


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and labels.items() <= dict(ls).items())


async def test_metrics_count_exactly_what_the_responses_and_the_simulator_say(make_gateway: GatewayFactory,
                                                                              session: aiohttp.ClientSession,
                                                                              sim: Sim) -> None:
    await sim.fixtures(many_templates(10))
    await sim.faults({WABA: {"latency_ms": 300, "jitter_ms": 0}})
    gateway = await make_gateway()
    base = str(gateway.make_url("/"))
    template = f"{base}v1/{TEMPLATE}?CustSpaceId=77000000000001&Language=en_US&TemplateCode={1:032x}"
    caches: list[str] = []

    async def call(url: str, tenant: str) -> None:
        async with session.get(url, headers={"X-Tenant": tenant}) as response:
            await response.read()
            caches.append(response.headers.get("X-Cache", "ERROR"))

    await call(template, "checkout")  # MISS
    await asyncio.gather(*(call(template, "checkout") for _ in range(4)))  # 4 HIT
    waba = f"{base}v1/{WABA}?CustSpaceId=78{3:012d}"
    await asyncio.gather(*(call(waba, "billing") for _ in range(6)))  # 1 MISS + 5 COALESCED
    await call(f"{base}v1/{WABA}?CustSpaceId=notanumber&Bogus=1", "billing")  # rejected: no upstream call
    async with session.get(f"{base}metrics") as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        found = samples(await response.text())
    assert caches.count("MISS") == 2 and caches.count("HIT") == 4 and caches.count("COALESCED") == 5
    assert value(found, "cams_proxy_requests_total", cache="HIT") == 4
    assert value(found, "cams_proxy_requests_total", cache="MISS") == 2
    assert value(found, "cams_proxy_requests_total", cache="COALESCED") == 5
    assert value(found, "cams_proxy_requests_total", cache="ERROR", status="400") == 1
    # no tenants file: labels are bounded (the rejected call never got as far as naming its tenant)
    assert value(found, "cams_proxy_requests_total", tenant="other") == 11
    assert value(found, "cams_proxy_requests_total", tenant="anonymous") == 1
    upstream = (await sim.stats(TEMPLATE))["calls"] + (await sim.stats(WABA))["calls"]
    assert upstream == 2 == value(found, "cams_proxy_upstream_calls_total", outcome="success")
    assert value(found, "cams_proxy_upstream_latency_seconds_count", action=WABA) == 1
    assert value(found, "cams_proxy_queue_wait_seconds_count", priority="interactive") == 2
    assert value(found, "cams_proxy_budget_cap", action=TEMPLATE) == 5
    assert value(found, "cams_proxy_l1_entries") == 2
    for secret_like in ("Secret", "LTAI", "Bearer"):
        assert secret_like not in str(found)
