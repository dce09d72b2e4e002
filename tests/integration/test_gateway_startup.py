"""A start-up that fails part-way unwinds everything `open_gateway` had opened (issue 17).

The failure is injected late (the purger, built after the cache, the Redis kit, the upstream client, the queues and
the first owned tasks): every task the gateway spawned is finished, the upstream connection pool is closed, and the
gateway's Redis connections are gone from the real redis-server's client list.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import proxy.gateway.open as opening
from proxy.gateway import open_gateway
from proxy.replica.redis_clients import RedisClient
from proxy.upstream.client import UpstreamClient
from tests.support import gateway_settings


class StartUpBug(RuntimeError):
    pass


async def connected_clients(redis: RedisClient) -> int:
    return len(await redis.client_list())


@pytest.mark.parametrize("with_redis", [False, True], ids=["memory", "redis"])
async def test_a_failed_start_up_closes_what_it_opened(with_redis: bool, sim_url: str, redis_url: str,
                                                       client: RedisClient, monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[UpstreamClient] = []

    class RecordedClient(UpstreamClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            clients.append(self)

    def broken_purger(*args: Any, **kwargs: Any) -> None:
        raise StartUpBug("injected")

    monkeypatch.setattr(opening, "UpstreamClient", RecordedClient)
    monkeypatch.setattr(opening, "Purger", broken_purger)
    before_tasks = asyncio.all_tasks()
    before_clients = await connected_clients(client)
    settings = gateway_settings(sim_url, **({"redis_url": redis_url} if with_redis else {}))

    with pytest.raises(StartUpBug):
        async with open_gateway(settings):
            pytest.fail("the gateway opened although its start-up failed")

    await asyncio.sleep(0)
    left = [task for task in asyncio.all_tasks() - before_tasks if not task.done()]
    assert left == [], f"tasks outlived the failed start-up: {[task.get_name() for task in left]}"
    assert len(clients) == 1 and clients[0].pool._closed, "the upstream connection pool was left open"
    for _ in range(50):  # the server drops a closed connection from CLIENT LIST a moment after the close
        if await connected_clients(client) == before_clients:
            break
        await asyncio.sleep(0.02)
    assert await connected_clients(client) == before_clients, "Redis connections outlived the failed start-up"


async def test_the_same_settings_open_and_close_cleanly(sim_url: str, redis_url: str, client: RedisClient) -> None:
    """The control: without the injected bug the same start-up opens (and its Redis connections are the gateway's)."""
    before_clients = await connected_clients(client)
    async with open_gateway(gateway_settings(sim_url, redis_url=redis_url)) as gateway:
        assert gateway.replicas is not None
        await gateway.replicas.client.ping()
        assert await connected_clients(client) > before_clients
    for _ in range(50):
        if await connected_clients(client) == before_clients:
            break
        await asyncio.sleep(0.02)
    assert await connected_clients(client) == before_clients
