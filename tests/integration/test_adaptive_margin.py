"""The adaptive margin over a jittery WAN: one-way 40 ± 25 ms through the network stand-in, at the shipped floor
(``--spacing-margin-ms 10``), which alone cannot cover arrivals spread by up to 50 ms: a process's margin is the
ceiling (250 ms) until it has measured the path.

Counted at the simulator, never timed: throttled and ``max_in_any_1s``. What must hold: at most one throttled call
per action while δ is still being measured, then none; never more than the cap in a 1-second window once adapted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import start_redis
from tests.integration.conftest import TEMPLATE, WABA, Sim
from tests.integration.test_wan import ENV, fetch_all, sim_address, template_target, waba_target
from tests.netem import Netem, start_netem
from tests.support import Process, many_templates, start_cli

JITTERY_WAN: dict[str, Any] = {"tls": True, "handshake_ms": 60, "latency_ms": 40, "jitter_ms": 25, "idle_close_s": 30}
CAPS = {TEMPLATE: 5, WABA: 10}


@pytest.fixture
def jittery_upstream(sim_url: str, tmp_path: Path) -> Iterator[Netem]:
    netem = start_netem(sim_address(sim_url), tmp_path / "netem-upstream", seed=7, **JITTERY_WAN)
    yield netem
    netem.stop()


def margins(gateways: list[Process]) -> list[float]:
    return [float(requests.get(f"{g.url}/readyz", timeout=5).json()["queues"][TEMPLATE]["margin_ms"])
            for g in gateways]


async def run(sim: Sim, gateways: list[Process], first: int, count: int) -> tuple[dict[str, dict[str, Any]], float]:
    targets = ([template_target(i) for i in range(first, first + count)]
               + [waba_target(i) for i in range(first, first + 2 * count)])
    started = time.monotonic()
    results = await fetch_all([g.url for g in gateways], targets, limit_s=150)
    took = time.monotonic() - started
    assert [status for status, _, _ in results] == [200] * len(targets), [b for s, b, _ in results if s != 200][:3]
    return {action: await sim.stats(action) for action in CAPS}, took


@pytest.mark.timeout(300)
@pytest.mark.parametrize("replicas", [1, 3])
async def test_the_margin_adapts_to_25ms_of_jitter_and_then_nothing_is_throttled(
        replicas: int, sim: Sim, jittery_upstream: Netem, redis_binary: str, tmp_path: Path) -> None:
    await sim.fixtures(many_templates(300))
    redis_proc = None
    redis_args: list[str] = []
    if replicas > 1:
        redis_proc, redis_url = start_redis(redis_binary, tmp_path)
        redis_args = ["--redis-url", redis_url, "--redis-timeout-s", "1"]
    gateways: list[Process] = []
    try:
        for index in range(replicas):
            gateways.append(start_cli(
                ["serve", "--port", "0", "--upstream", f"https://{jittery_upstream.listen}", "--upstream-ca-file",
                 str(jittery_upstream.ca), "--upstream-keepalive-s", "60", *redis_args, "--deadline-s", "90",
                 "--queue-bound", f"{TEMPLATE}=500", "--queue-bound", f"{WABA}=500"],
                tmp_path / f"gateway-{index}.log", env=ENV, ready_text="gateway ready"))
        assert margins(gateways) == [250.0] * replicas  # the ceiling, before anything is measured (learning)
        learning, _ = await run(sim, gateways, 0, 30)
        for action in CAPS:
            assert learning[action]["throttled"] <= 1, (action, learning[action])  # at most one while measuring
        adapted = margins(gateways)
        assert all(margin >= 50.0 for margin in adapted), adapted  # covers the 50 ms spread (plus the guard)
        if replicas == 1:
            assert adapted[0] <= 100.0, adapted  # and costs little (a replica that saw a throttle has a bump)
        adapted_stats, took = await run(sim, gateways, 100, 60)
        for action, cap in CAPS.items():
            stats = adapted_stats[action]
            assert stats["throttled"] == learning[action]["throttled"], (action, stats)  # none once adapted
            assert stats["max_in_any_1s"] <= cap or learning[action]["throttled"] >= 1, (action, stats)
        sent = adapted_stats[TEMPLATE]["calls"] - learning[TEMPLATE]["calls"]
        print(f"\nreplicas={replicas} learning throttled {[learning[a]['throttled'] for a in CAPS]} "
              f"margins_ms={adapted} template utilisation over the adapted run "
              f"{sent / took / CAPS[TEMPLATE]:.3f} (the WABA misses run alongside, so the template backlog sets the "
              f"run's length)")
    finally:
        for gateway in gateways:
            gateway.stop()
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
