"""Redis failing in the ways that used to leave something waiting for good, with real parts only: a real
redis-server the test stops (SIGSTOP: a blackhole, every call hangs until its timeout) and continues, a real
3-node Redis Cluster the test kills, redis-py clients pointed at ports where nothing listens.

Counted, never timed beyond "answered before the client's own timeout".
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from proxy.cache import CacheError
from proxy.cache.redis import RedisCache
from proxy.replica.redis_clients import RedisUnavailable, redis_call, translating
from proxy.web.keys import GATEWAY
from tests.conftest import start_redis_cluster
from tests.integration.conftest import WABA, GatewayFactory, Sim
from tests.integration.test_replicas import RedisServer
from tests.support import free_port, many_templates

GATEWAY_CODES = {"Throttling.Proxy", "Proxy.DeadlineExceeded", "Proxy.UpstreamUnavailable"}
TIMED_OUT = -1  # what `ask` returns when the client's own timeout passed: the gateway never answered


def waba(i: int) -> str:
    return f"/v1/{WABA}?CustSpaceId=78{i:012d}"


async def ask(session: aiohttp.ClientSession, server: TestServer, target: str, limit_s: float,
              deadline_ms: int | None = None) -> tuple[int, dict[str, Any], str]:
    """(status, body, X-Cache) for one GET, or (TIMED_OUT, {}, "") if no answer came within ``limit_s``."""
    headers = {} if deadline_ms is None else {"X-Request-Timeout-Ms": str(deadline_ms)}
    try:
        async with session.get(str(server.make_url(target)), headers=headers,
                               timeout=aiohttp.ClientTimeout(total=limit_s)) as response:
            return response.status, orjson.loads(await response.read()), response.headers.get("X-Cache", "")
    except TimeoutError:
        return TIMED_OUT, {}, ""


def assert_answered(results: list[tuple[int, dict[str, Any], str]]) -> None:
    """Every request got an answer: a 200, or the gateway's own 503/504 in the upstream shape."""
    assert all(status != TIMED_OUT for status, _, _ in results), "a request never got an answer"
    for status, body, _ in results:
        assert status == 200 or (status in {503, 504} and body["Code"] in GATEWAY_CODES), (status, body)


# --- the seam and the batched MGET, against clients that reach nothing ----------------------------------------


@pytest.fixture
async def dead_cluster() -> AsyncIterator[RedisCluster]:
    """A real cluster client pointed at a port where nothing listens: it raises `RedisClusterException`."""
    client = RedisCluster.from_url(f"redis://127.0.0.1:{free_port()}", socket_timeout=0.2,
                                   socket_connect_timeout=0.2)
    yield client
    await client.aclose()


async def test_the_seam_turns_a_cluster_that_reaches_no_node_into_redis_unavailable(dead_cluster: RedisCluster) -> None:
    with pytest.raises(RedisClusterException):  # what redis-py raises: not a RedisError
        await dead_cluster.get("k")
    with pytest.raises(RedisUnavailable) as caught:
        await redis_call(dead_cluster.set("k", b"v"), "SET")
    assert isinstance(caught.value.__cause__, RedisClusterException)


async def test_the_seam_never_translates_a_cancellation() -> None:
    async def hang() -> None:
        with translating("hang"):
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(hang())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_batched_mget_on_a_cluster_that_reaches_no_node_resolves_every_caller(
        dead_cluster: RedisCluster) -> None:
    cache = RedisCache(dead_cluster)
    async with asyncio.timeout(10):  # the bug: these futures were never resolved
        results = await asyncio.gather(*(cache.get(f"k{i % 7}") for i in range(20)), return_exceptions=True)
    assert all(isinstance(result, CacheError) and isinstance(result, RedisUnavailable)
               and isinstance(result.__cause__, RedisClusterException) for result in results)
    again = await asyncio.gather(cache.get("k0"), return_exceptions=True)  # the next batch fails alike
    assert isinstance(again[0], CacheError)


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and reads, but never answers (a blackholed Redis)."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_batch_bound_ends_gets_the_client_would_still_wait_for(silent_port: int) -> None:
    import redis.asyncio

    slow = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{silent_port}/0", socket_timeout=30)
    cache = RedisCache(slow, timeout=0.2)
    try:
        async with asyncio.timeout(10):
            results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(5)), return_exceptions=True)
        assert all(isinstance(result, CacheError) for result in results)
        assert all("TimeoutError" in str(result) for result in results)
    finally:
        await slow.aclose()


async def test_a_cancelled_batch_still_answers_every_caller(silent_port: int) -> None:
    import redis.asyncio

    slow = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{silent_port}/0", socket_timeout=30)
    cache = RedisCache(slow)
    try:
        gets = [asyncio.ensure_future(cache.get(f"k{i}")) for i in range(5)]
        await asyncio.sleep(0.1)
        assert cache._sending  # the batch is on its way to the silent server, which never answers
        for task in list(cache._sending):
            task.cancel()  # e.g. the loop shutting down under it
        async with asyncio.timeout(10):
            results = await asyncio.gather(*gets, return_exceptions=True)
        assert all(isinstance(result, CacheError) and "cancelled" in str(result) for result in results)
    finally:
        await slow.aclose()


# --- the gateway -----------------------------------------------------------------------------------------------


async def test_a_probe_cancelled_by_its_deadline_is_released_and_the_gateway_rejoins_when_redis_is_back(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim, redis_binary: str,
        tmp_path: Path) -> None:
    await sim.fixtures(many_templates(400))
    redis = RedisServer(redis_binary, tmp_path)
    stopped = False
    try:
        gateway = await make_gateway(redis_url=redis.url, redis_timeout_s=1.0, deadline_s=8.0)
        kit = gateway.app[GATEWAY].replicas
        assert kit is not None
        assert (await ask(session, gateway, waba(0), 10))[0] == 200
        assert kit.coordinator.mode == "shared" and kit.coordinator.stats.shared_slots == 1
        # The heartbeat probes once a second; with the default 1 s cooldown it takes nearly every probe
        # itself (and never cancels one). A longer cooldown leaves the probe to a request's fill, which its
        # short deadline cancels mid-way: the case that used to leave the breaker half-open for good.
        kit.breaker.cooldown = 2.5
        os.kill(redis.proc.pid, signal.SIGSTOP)  # blackholed: every call now hangs until its 1 s timeout
        stopped = True
        asked: list[asyncio.Future[tuple[int, dict[str, Any], str]]] = []
        async with asyncio.timeout(40):
            while kit.breaker.abandoned_probes == 0:
                asked.append(asyncio.ensure_future(ask(session, gateway, waba(len(asked) + 1), 5, deadline_ms=300)))
                await asyncio.sleep(0.05)
        assert not kit.breaker.healthy
        assert_answered(list(await asyncio.gather(*asked)))
        os.kill(redis.proc.pid, signal.SIGCONT)
        stopped = False
        async with asyncio.timeout(30):  # the heartbeat probes, the breaker closes, the quiet period passes
            while True:
                async with session.get(str(gateway.make_url("/readyz"))) as response:
                    ready = await response.json()
                if (ready["status"], ready["redis"]["mode"], ready["redis"]["quiet_for_s"]) == ("ready", "shared",
                                                                                                  0):
                    break
                await asyncio.sleep(0.1)
        assert ready["redis"]["breaker"] == "closed" and kit.coordinator.stats.recoveries >= 1
        before = kit.coordinator.stats.shared_slots
        after = [await ask(session, gateway, waba(390 + i), 10) for i in range(3)]
        assert [(status, cache) for status, _, cache in after] == [(200, "MISS")] * 3
        assert kit.coordinator.stats.shared_slots == before + 3  # the misses went through the shared budget
    finally:
        if stopped:
            os.kill(redis.proc.pid, signal.SIGCONT)
        redis.kill()


@pytest.mark.parametrize("l1_max_ttl_s", [60.0, 0.0], ids=["tiered", "redis-only"])
async def test_a_cluster_with_every_node_gone_still_answers_every_request(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim, redis_binary: str,
        tmp_path: Path, l1_max_ttl_s: float) -> None:
    await sim.fixtures(many_templates(60))
    procs, url = start_redis_cluster(redis_binary, tmp_path)
    try:
        deadline_s = 4.0
        gateway = await make_gateway(redis_url=url, redis_cluster=True, redis_timeout_s=0.5, deadline_s=deadline_s,
                                     l1_max_ttl_s=l1_max_ttl_s)
        limit_s = deadline_s + 3  # the client's own timeout: a bit above the gateway's deadline
        hot = [waba(i) for i in range(10)]
        warmed = [await ask(session, gateway, target, limit_s) for target in hot + hot]
        assert [(status, cache) for status, _, cache in warmed] == [(200, "MISS")] * 10 + [(200, "HIT")] * 10
        for proc in procs:  # every node gone
            proc.kill()
            proc.wait()
        cold = [waba(20 + i) for i in range(20)]
        for _ in range(2):  # twice: no flight may be left stuck on a Redis future for the next misses of a key
            results = list(await asyncio.gather(*(ask(session, gateway, target, limit_s)
                                                  for target in hot + cold)))
            assert_answered(results)
            if l1_max_ttl_s > 0:  # hits already in L1 need no Redis
                assert [(status, cache) for status, _, cache in results[:len(hot)]] == [(200, "HIT")] * len(hot)
        assert (await sim.stats(WABA))["throttled"] == 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
