"""Coalesced flights wait for everyone on them: the longest deadline and the highest priority of the requests
that joined, not the leader's alone. Counted: answers and upstream calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from proxy.actions import ACTIONS
from proxy.web.keys import GATEWAY
from tests.integration.conftest import TEMPLATE, GatewayFactory, Sim
from tests.support import many_templates

BULK_SPACE = "77000000000001"


def template_target(i: int) -> str:
    return f"/v1/{TEMPLATE}?CustSpaceId={BULK_SPACE}&Language=en_US&TemplateCode={i:032x}"


async def call(session: aiohttp.ClientSession, gateway: TestServer, target: str,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, object], str]:
    async with session.get(str(gateway.make_url("/")) + target.lstrip("/"), headers=headers) as response:
        return response.status, orjson.loads(await response.read()), response.headers.get("X-Cache", "")


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2.0):
        while not condition():  # noqa: ASYNC110 - the queue has no event to wait on; a test-only poll
            await asyncio.sleep(0.001)


async def test_a_leader_with_a_short_deadline_does_not_fail_those_who_joined_it(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(many_templates(20))
    gateway = await make_gateway()
    queue = gateway.app[GATEWAY].queues[TEMPLATE]
    readthrough = gateway.app[GATEWAY].readthrough
    leader_key = readthrough.key_for(ACTIONS[TEMPLATE], {"CustSpaceId": BULK_SPACE, "Language": "en_US",
                                                         "TemplateCode": f"{15:032x}"})
    queue.estimated_wait = lambda *args, **kwargs: 0.0  # type: ignore[method-assign]  # admit the leader despite the backlog
    queue._refuse_late = lambda now: None  # type: ignore[method-assign]  # and let it wait out its own deadline
    backlog = asyncio.gather(*(call(session, gateway, template_target(i)) for i in range(5)))
    await asyncio.sleep(0.05)
    leader = asyncio.ensure_future(call(session, gateway, template_target(15), {"X-Request-Timeout-Ms": "300"}))
    # The leader gives up at its deadline less the expected answer time (0.25 s until measured): ~50 ms after it
    # queued. The joiner goes in the moment the leader's flight exists, not after a guessed sleep (nor when the
    # queue's count grows: the backlog draining meanwhile can hide the leader in that count).
    await until(lambda: readthrough.in_flight(leader_key))
    joiner = asyncio.ensure_future(call(session, gateway, template_target(15)))  # the default 10 s deadline
    leader_status, leader_body, _ = await leader
    assert leader_status == 504 and leader_body["Code"] == "Proxy.DeadlineExceeded"  # its own deadline, alone
    status, body, cache = await joiner
    assert (status, cache) == (200, "COALESCED"), body
    assert [s for s, _, _ in await backlog] == [200] * 5
    assert (await sim.stats(TEMPLATE))["calls"] == 6  # the flight went on for the joiner: one call for both


async def test_a_warm_leader_does_not_demote_an_interactive_request_that_joins_it(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(many_templates(20))
    gateway = await make_gateway()
    backlog = asyncio.gather(*(call(session, gateway, template_target(i), {"X-Tenant": "busy"}) for i in range(10)))
    await asyncio.sleep(0.05)
    warm = {"X-Tenant": "quiet", "X-Proxy-Priority": "warm"}
    leader = asyncio.ensure_future(call(session, gateway, template_target(15), warm))
    await asyncio.sleep(0.05)
    # Behind ten interactive misses (2 s at 5/s) this joiner would miss its 1.2 s deadline in the warm tier;
    # promoted to its own tier and tenant it is served within a couple of slots.
    status, body, cache = await call(session, gateway, template_target(15),
                                     {"X-Tenant": "quiet", "X-Request-Timeout-Ms": "1200"})
    assert (status, cache) == (200, "COALESCED"), body
    assert (await leader)[0] == 200
    assert [s for s, _, _ in await backlog] == [200] * 10
    assert (await sim.stats(TEMPLATE))["calls"] == 11
