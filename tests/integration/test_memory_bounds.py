"""Every in-process cache stays inside ``--memory-max-bytes``: thousands of distinct calls, each served from the
cache twice (once through the full path, once through the short hit path), fill the call memo, the rendered hit
headers and (with Redis) the decoded-entry cache past their shares. Checked two ways: the byte counts of
``/admin/status`` stay within each share and the total, and the bodies of every `Entry` object still alive in
the process (found by the garbage collector, whoever holds them) add up to no more than the budget, where
pinning side caches would hold all of them."""

from __future__ import annotations

import gc
from typing import Any

import aiohttp
import pytest

from proxy.actions import ACTIONS
from proxy.cache.base import Entry
from proxy.secret import Secret
from proxy.web.keys import GATEWAY
from tests.integration.conftest import TEMPLATE, GatewayFactory, Sim
from tests.support import SEED_SPACE

BUDGET = 2 * 1024 * 1024
BODY = 2048
ADMIN = "memory-test-admin-token-0123456789"


def live_entry_bytes() -> int:
    gc.collect()
    return sum(len(thing.body) for thing in gc.get_objects() if isinstance(thing, Entry))


async def status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/admin/status", headers={"Authorization": f"Bearer {ADMIN}"}) as response:
        assert response.status == 200, await response.text()
        return dict((await response.json())["memory"])


@pytest.mark.parametrize("mode", ["memory", "redis-only"])
async def test_side_caches_stay_inside_the_memory_budget(
        make_gateway: GatewayFactory, sim: Sim, session: aiohttp.ClientSession, redis_url: str, mode: str) -> None:
    # memory: 500 entries of 2 KiB fit the answer cache's share, so every call is a hit; Redis-only: 3,000 (6 MiB,
    # three times the budget) live in Redis and every read is unpacked in the process.
    count = 500 if mode == "memory" else 3000
    extra: dict[str, Any] = {} if mode == "memory" else {"redis_url": redis_url, "l1_max_ttl_s": 0.0}
    server = await make_gateway(memory_max_bytes=BUDGET, admin_token=Secret(ADMIN), **extra)
    base = str(server.make_url(""))
    readthrough = server.app[GATEWAY].readthrough
    spec = ACTIONS[TEMPLATE]
    targets = []
    for number in range(count):
        params = {"CustSpaceId": SEED_SPACE, "TemplateCode": f"{number:032x}", "Language": "en_US"}
        body = b'{"Code":"OK","Data":{"Pad":"' + b"x" * BODY + b'"},"RequestId":"m%d"}' % number
        await readthrough.cache.set(readthrough.key_for(spec, params), Entry(200, body, fetched_at=0.0), ttl=600)
        targets.append(f"/v1/{TEMPLATE}?CustSpaceId={SEED_SPACE}&TemplateCode={number:032x}&Language=en_US")
    del body
    assert live_entry_bytes() <= BUDGET  # the stored entries themselves: in Redis, or within the cache's share
    # every call twice, then the newest 100 twice more (a scan in the memo's insertion order never finds the call
    # it evicted; the hot ones take the short path and fill the hit headers)
    for round_, calls in enumerate([targets, targets, targets[-100:], targets[-100:]]):
        for target in calls:
            async with session.get(base + target) as response:
                assert response.status == 200, await response.text()
                assert response.headers["X-Cache"] == "HIT", (round_, target)
                await response.read()
        memory = await status(session, base)
        assert memory["used_bytes"] <= memory["max_bytes"] == BUDGET
        for name, cache in memory["caches"].items():
            assert cache["used_bytes"] <= cache["max_bytes"], (name, cache)
    caches = memory["caches"]
    # the side caches were filled to their bounds, not left empty: the bounds are what held them
    assert caches["call_memo"]["used_bytes"] > caches["call_memo"]["max_bytes"] // 2
    assert caches["hit_headers"]["used_bytes"] > caches["hit_headers"]["max_bytes"] // 2
    if mode == "redis-only":
        assert caches["decoded"]["used_bytes"] > caches["decoded"]["max_bytes"] // 2
        assert caches["cache"]["used_bytes"] == 0
    assert live_entry_bytes() <= BUDGET
    assert (await sim.stats())["calls"] == 0  # every answer came from the cache
