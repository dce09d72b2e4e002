"""Fair tenants through the real gateway and the simulator: a flood from one tenant does not starve others."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from proxy.web.keys import GATEWAY
from tests.integration.conftest import WABA, GatewayFactory, Sim
from tests.support import many_templates


async def test_a_flooding_tenant_does_not_hold_back_the_others(make_gateway: GatewayFactory,
                                                               session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(many_templates(520))
    await sim.faults({WABA: {"latency_ms": 5, "jitter_ms": 0}})
    gateway = await make_gateway(deadline_s=120.0, queue_bounds={WABA: 1000})
    base = str(gateway.make_url("/"))
    done: dict[str, int] = {"A": 0, "B": 0, "C": 0}

    async def call(tenant: str, i: int) -> int:
        async with session.get(f"{base}v1/{WABA}?CustSpaceId=78{i:012d}", headers={"X-Tenant": tenant}) as response:
            await response.read()
            done[tenant] += 1
            return response.status

    flood = [asyncio.ensure_future(call("A", i)) for i in range(500)]
    queue = gateway.app[GATEWAY].queues[WABA]
    deadline = time.monotonic() + 20
    while queue.waiting < 450:  # A's backlog is queued (counted, not slept on)
        assert time.monotonic() < deadline, queue.waiting
        await asyncio.sleep(0.01)
    small = await asyncio.gather(*(call(tenant, 500 + i + (10 if tenant == "C" else 0))
                                   for tenant in "BC" for i in range(10)))
    a_done_when_small_finished = done["A"]
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)
    assert small == [200] * 20
    assert a_done_when_small_finished < 250, a_done_when_small_finished  # B and C done before half of A
    stats = await sim.stats(WABA)
    assert stats["throttled"] == 0 and stats["max_in_any_1s"] <= 10
