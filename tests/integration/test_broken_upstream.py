"""A misbehaving upstream: 200 answers that are not CAMS answers (an HTML maintenance page, truncated JSON, 10 MiB of
bytes). Counted at the simulator and in the gateway: the client gets a JSON 502 (or the stale entry), nothing is
cached, the gateway's memory does not grow by the size of what it was sent, and the upstream's own JSON errors
still pass through byte for byte."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.integration.conftest import TEMPLATE, GatewayFactory, Sim
from tests.integration.test_wan import ENV
from tests.support import many_templates, start_cli

SPACE = "77000000000001"
QUIET = {"latency_ms": 1, "jitter_ms": 0, "html_rate": 0, "truncated_rate": 0, "huge_rate": 0, "error_rate": 0}


def target(i: int) -> str:
    return f"/v1/{TEMPLATE}?CustSpaceId={SPACE}&Language=en_US&TemplateCode={i:032x}"


async def get(session: aiohttp.ClientSession, base: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    async with session.get(base.rstrip("/") + path) as response:
        return response.status, await response.read(), dict(response.headers.items())


@pytest.mark.parametrize("fault", ["html_rate", "truncated_rate", "huge_rate"])
async def test_a_broken_200_is_a_json_502_and_is_never_cached(
        fault: str, make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(many_templates(5))
    await sim.faults({TEMPLATE: {**QUIET, fault: 1.0}})
    gateway = await make_gateway()
    base = str(gateway.make_url("/"))
    status, body, headers = await get(session, base, target(1))
    assert status == 502, body[:200]
    document = orjson.loads(body)
    assert set(document) == {"RequestId", "HostId", "Code", "Message"}
    assert document["Code"] == "Proxy.UpstreamInvalidAnswer" and "nothing was cached" in document["Message"]
    assert len(body) < 1000 and headers["Content-Type"].startswith("application/json")
    assert (await sim.stats())["calls"] == 3  # the allowed attempts, each one call, then the refusal
    # Nothing was cached: once the upstream is well again, the same key is a miss that reaches it.
    await sim.faults({TEMPLATE: QUIET})
    status, body, headers = await get(session, base, target(1))
    assert status == 200 and headers["X-Cache"] == "MISS" and orjson.loads(body)["Code"] == "OK"
    assert (await sim.stats())["calls"] == 4


async def test_a_broken_answer_serves_the_stale_entry_when_there_is_one(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(many_templates(5))
    await sim.faults({TEMPLATE: QUIET})
    gateway = await make_gateway(ttls={TEMPLATE: 0.3}, stale_while_revalidate_s=0.1)
    base = str(gateway.make_url("/"))
    status, fresh, _ = await get(session, base, target(2))
    assert status == 200
    await asyncio.sleep(0.6)  # past the TTL and the stale-while-revalidate window: a miss with a fallback
    await sim.faults({TEMPLATE: {**QUIET, "html_rate": 1.0}})
    status, body, headers = await get(session, base, target(2))
    assert status == 200 and headers["X-Cache"] == "STALE" and body == fresh  # stale-if-error


async def test_the_upstreams_own_json_errors_pass_through_byte_for_byte(
        make_gateway: GatewayFactory, session: aiohttp.ClientSession, sim: Sim) -> None:
    await sim.fixtures(many_templates(5))
    await sim.faults({TEMPLATE: {**QUIET, "error_rate": 1.0}})
    gateway = await make_gateway(upstream_attempts=1)
    status, body, _ = await get(session, str(gateway.make_url("/")), target(3))
    assert status in {500, 503}
    assert body == await sim.answer(orjson.loads(body)["RequestId"])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_ten_mib_answers_do_not_balloon_the_gateway(sim_url: str, sim: Sim, tmp_path: Path,
                                                          session: aiohttp.ClientSession) -> None:
    await sim.fixtures(many_templates(40))
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url],
                        tmp_path / "gateway.log", env=ENV, ready_text="gateway ready")
    try:
        await sim.faults({TEMPLATE: QUIET})
        assert (await get(session, gateway.url, target(0)))[0] == 200  # warm: buffers and code paths
        before = rss_kib(gateway.proc.pid)
        await sim.faults({TEMPLATE: {**QUIET, "huge_rate": 1.0}})
        results = await asyncio.gather(*(get(session, gateway.url, target(i)) for i in range(1, 21)))
        assert [status for status, _, _ in results] == [502] * 20
        grown_mib = (rss_kib(gateway.proc.pid) - before) / 1024
        sent_mib = (await sim.stats())["faults"] * 10
        assert sent_mib >= 200  # 20 misses x 3 attempts x 10 MiB offered
        assert grown_mib < 40, (grown_mib, sent_mib)  # read at most the 1 MiB bound of each, then dropped
    finally:
        gateway.stop()

