"""A background task that dies (heartbeat, bus, refresh-ahead, metrics sampler) is not silent: /readyz says so."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.integration.conftest import GatewayFactory
from tests.integration.test_broken_upstream import get


async def test_a_background_task_that_dies_turns_readyz_degraded(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession) -> None:
    from proxy.web.keys import GATEWAY

    gateway = await make_gateway()
    base = str(gateway.make_url("/"))
    status, body, _ = await get(session, base, "/readyz")
    assert status == 200 and orjson.loads(body)["status"] == "ready"

    async def sampler_that_breaks() -> None:
        raise RuntimeError("the sampler broke")

    gateway.app[GATEWAY].tasks.spawn(sampler_that_breaks(), name="metrics-test", long_running=True)
    await asyncio.sleep(0.05)
    status, body, _ = await get(session, base, "/readyz")
    document = orjson.loads(body)
    assert status == 200 and document["status"] == "degraded"
    assert any("metrics-test died (RuntimeError: the sampler broke)" in reason for reason in document["reasons"])
