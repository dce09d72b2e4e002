"""Safe capacity through the network stand-in: three replicas, each reaching the one redis-server through its own
stand-in (Redis in another zone, 60 ± 30 ms each way), the upstream over the HTTPS WAN profile.

Counted at the simulator, never timed: ``max_in_any_1s`` and throttled per action, and what each request got.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import start_redis
from tests.integration.conftest import TEMPLATE, WABA, Sim
from tests.integration.test_wan import (
    ENV,
    REDIS_WAN,
    REPLICAS_MARGIN_MS,
    UPSTREAM_WAN,
    fetch_all,
    sim_address,
    template_target,
    waba_target,
)
from tests.netem import Netem, start_netem
from tests.support import Process, many_templates, start_cli

CAPS = {TEMPLATE: 5, WABA: 10}
GATEWAY_CODES = {"Throttling.Proxy", "Proxy.DeadlineExceeded"}


class Fleet:
    """One redis-server, a stand-in per replica in front of it, and the replicas."""

    def __init__(self, redis_binary: str, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.redis_proc, url = start_redis(redis_binary, tmp_path)
        self.redis_address = url.removeprefix("redis://").split("/")[0]
        self.paths: list[Netem] = []
        self.gateways: list[Process] = []

    def start(self, upstream: Netem, count: int = 3, cut: str | None = None) -> None:
        for index in range(count):
            path = start_netem(self.redis_address, self.tmp_path / f"netem-redis-{index}", seed=index + 1,
                               **REDIS_WAN)
            if cut is not None:
                path.cut(cut)
            self.paths.append(path)
        for index, path in enumerate(self.paths):
            self.gateways.append(start_cli(
                ["serve", "--port", "0", "--upstream", f"https://{upstream.listen}", "--upstream-ca-file",
                 str(upstream.ca), "--upstream-keepalive-s", "30", "--redis-url", f"redis://{path.listen}/0",
                 "--redis-timeout-s", "1", "--spacing-margin-ms", REPLICAS_MARGIN_MS, "--deadline-s", "25",
                 "--upstream-timeout-s", "8", "--queue-bound", f"{TEMPLATE}=500", "--queue-bound", f"{WABA}=500"],
                self.tmp_path / f"gateway-{index}.log", env=ENV, ready_text="gateway ready"))

    def ready(self) -> list[dict[str, Any]]:
        return [requests.get(f"{g.url}/readyz", timeout=5).json() for g in self.gateways]

    def wait_until(self, check: Any, limit_s: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + limit_s
        while True:
            ready = self.ready()
            if check(ready) or time.monotonic() > deadline:
                return ready
            time.sleep(0.2)

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        for path in self.paths:
            path.stop()
        self.redis_proc.kill()
        self.redis_proc.wait()


@pytest.fixture
def upstream_wan(sim_url: str, tmp_path: Path) -> Iterator[Netem]:
    netem = start_netem(sim_address(sim_url), tmp_path / "netem-upstream", **UPSTREAM_WAN)
    yield netem
    netem.stop()


@pytest.fixture
def fleet(redis_binary: str, tmp_path: Path) -> Iterator[Fleet]:
    built = Fleet(redis_binary, tmp_path)
    yield built
    built.stop()


def assert_answered(results: list[tuple[int, dict[str, Any], str]]) -> None:
    """Every request got a 200, or the gateway's own 503/504 in the upstream's shape."""
    for status, body, _ in results:
        assert status == 200 or (status in {503, 504} and body.get("Code") in GATEWAY_CODES
                                 and "RequestId" in body and body.get("Message")), (status, body)


async def assert_never_over_the_cap(sim: Sim) -> dict[str, dict[str, Any]]:
    stats = {action: await sim.stats(action) for action in CAPS}
    for action, cap in CAPS.items():
        assert stats[action]["max_in_any_1s"] <= cap, (action, stats[action])
        assert stats[action]["throttled"] == 0, (action, stats[action])
    return stats


def targets(first: int, templates: int, wabas: int) -> list[str]:
    return ([template_target(i) for i in range(first, first + templates)]
            + [waba_target(i) for i in range(first, first + wabas)])


def converged(ready: list[dict[str, Any]]) -> bool:
    """Every replica shared, and the template shares add up to the cap, split as evenly as whole numbers go."""
    shares = [r["redis"]["safe_capacity"]["shares"].get(TEMPLATE, 0) for r in ready]
    return (all(r["redis"]["mode"] == "shared" for r in ready) and sum(shares) == CAPS[TEMPLATE]
            and max(shares) - min(shares) <= 1)


@pytest.mark.timeout(300)
async def test_one_replica_cut_from_redis_spends_only_its_held_back_share(
        fleet: Fleet, sim: Sim, upstream_wan: Netem) -> None:
    await sim.fixtures(many_templates(450))
    fleet.start(upstream_wan)
    ready = fleet.wait_until(converged)
    assert converged(ready), ready
    shares = [r["redis"]["safe_capacity"]["shares"] for r in ready]
    bases = [g.url for g in fleet.gateways]
    warm = await fetch_all(bases, targets(0, 15, 30), limit_s=60)  # margins measured, connections warm
    assert [s for s, _, _ in warm] == [200] * 45

    async def cut_under_backlog() -> list[tuple[int, dict[str, Any], str]]:
        backlog = asyncio.ensure_future(fetch_all(bases, targets(100, 120, 200), limit_s=90))
        await asyncio.sleep(1.0)
        fleet.paths[0].cut("blackhole")  # replica 0 alone loses Redis; its packets vanish, nothing is refused
        during_ready: list[dict[str, Any]] = []
        for _ in range(100):
            await asyncio.sleep(0.2)
            during_ready = await asyncio.to_thread(fleet.ready)
            if during_ready[0]["redis"]["local_slots"] >= 3:
                break
        assert during_ready[0]["status"] == "degraded" and during_ready[0]["redis"]["mode"] == "local"
        held = [r["redis"]["safe_capacity"]["held_back_for_others"] for r in during_ready[1:]]
        own = during_ready[0]["redis"]["safe_capacity"]["shares"]  # what it holds: its last renewal's grant
        assert own[TEMPLATE] >= 1 and any(h.get(TEMPLATE) == own[TEMPLATE] for h in held), (held, own)
        return await backlog

    results = await cut_under_backlog()
    assert_answered(results)
    served = sum(1 for s, _, _ in results if s == 200)
    cut_stats = await assert_never_over_the_cap(sim)
    local = fleet.ready()[0]["redis"]["local_slots"]
    assert local >= 3  # the cut replica went on serving misses on its own share

    fleet.paths[0].restore()
    ready = fleet.wait_until(lambda rs: rs[0]["redis"]["mode"] == "shared" and rs[0]["status"] == "ready")
    assert ready[0]["redis"]["mode"] == "shared", ready[0]
    before = ready[0]["redis"]["shared_slots"]
    after = await fetch_all([bases[0]], targets(400, 10, 10), limit_s=60)
    assert [s for s, _, _ in after] == [200] * 20  # served again, through the shared budget
    assert fleet.ready()[0]["redis"]["shared_slots"] >= before + 20
    final = await assert_never_over_the_cap(sim)
    print(f"\nshares {shares}; during the cut {served}/{len(results)} answered 200, replica 0 sent {local} on its "
          f"own share; max_in_any_1s template {cut_stats[TEMPLATE]['max_in_any_1s']} waba "
          f"{cut_stats[WABA]['max_in_any_1s']}; after {final[TEMPLATE]['calls']} template calls in all")


@pytest.mark.timeout(300)
async def test_replicas_started_while_redis_is_unreachable_spend_nothing_until_it_appears(
        fleet: Fleet, sim: Sim, upstream_wan: Netem) -> None:
    await sim.fixtures(many_templates(300))
    fleet.start(upstream_wan, cut="blackhole")
    bases = [g.url for g in fleet.gateways]
    before = await fetch_all(bases, targets(0, 15, 15), limit_s=60)
    assert_answered(before)
    assert {s for s, _, _ in before} == {503}
    assert all("has not reached Redis since it started" in body["Message"] for _, body, _ in before)
    assert [(await sim.stats(action))["calls"] for action in CAPS] == [0, 0]  # nothing spent without a lease
    for path in fleet.paths:
        path.restore()  # Redis appears; misses are already queued on every replica as it does
    results = await fetch_all(bases, targets(100, 90, 150), limit_s=120)
    assert_answered(results)
    ready = fleet.wait_until(converged)
    assert converged(ready), ready
    stats = await assert_never_over_the_cap(sim)
    # Served once Redis is there (what is not is refused at admission: more than the deadline's worth of backlog).
    assert sum(1 for s, _, _ in results if s == 200) >= 150
    print(f"\nafter Redis appeared: {sum(1 for s, _, _ in results if s == 200)}/{len(results)} answered 200; "
          f"max_in_any_1s template {stats[TEMPLATE]['max_in_any_1s']} waba {stats[WABA]['max_in_any_1s']}")
