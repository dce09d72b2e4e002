"""Fixtures for gateway tests: the gateway in-process on a real port, in front of the simulator process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.replica.redis_clients import RedisClient, connect
from proxy.tenants import TenantDirectory
from proxy.web.app import create_app, gateway_runner
from proxy.web.keys import GATEWAY
from tests.support import gateway_settings

TEMPLATE = "GetChatappTemplateDetail"
WABA = "QueryChatappBindWaba"


class Sim:
    """The simulator's referee and admin endpoints."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def stats(self, action: str = TEMPLATE) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/__sim/stats") as response:
            return dict((await response.json())["actions"][action])

    async def faults(self, plans: dict[str, Any]) -> None:
        async with self.session.put(f"{self.url}/__sim/faults", json=plans) as response:
            assert response.status == 200, await response.text()

    async def fixtures(self, document: dict[str, Any]) -> None:
        async with self.session.put(f"{self.url}/__sim/fixtures", data=orjson.dumps(document)) as response:
            assert response.status == 200, await response.text()

    async def answer(self, request_id: str) -> bytes:
        async with self.session.get(f"{self.url}/__sim/answers/{request_id}") as response:
            assert response.status == 200
            return await response.read()


GatewayFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client_session:
        yield client_session


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    """A plain (non-cluster) client of the suite's redis-server, for tests of the Redis scripts and sets."""
    redis = connect(redis_url, cluster=False, timeout=2.0, connect_timeout=2.0)
    yield redis
    await redis.aclose()


@pytest.fixture
def sim(sim_url: str, session: aiohttp.ClientSession) -> Sim:
    return Sim(sim_url, session)


class GatewayTestServer(TestServer):
    """A real server on a free port, run by the production runner (JSON answers for parser errors)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return gateway_runner(cast(web.Application, self.app), **kwargs)


@pytest.fixture
async def make_gateway(sim_url: str) -> AsyncIterator[GatewayFactory]:
    servers: list[GatewayTestServer] = []

    async def make(directory: TenantDirectory | None = None, **overrides: Any) -> TestServer:
        upstream = overrides.pop("upstream", sim_url)
        server = GatewayTestServer(create_app(gateway_settings(upstream, **overrides), directory))
        await server.start_server()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> TestServer:
    return await make_gateway()


def counters(server: TestServer) -> Any:
    return server.app[GATEWAY].readthrough.counters
