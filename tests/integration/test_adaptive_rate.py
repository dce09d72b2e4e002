"""The adaptive rate: someone else spends half of the account's template cap directly at the upstream.

Through the network stand-in (TLS, 40 ± 10 ms each way), one gateway under a steady backlog of template misses,
and a second client (the official signing, the demo AccessKey: the same account) calling the simulator directly at
2.5/s for `OTHER_S` seconds. Counted at the simulator and read from ``/readyz``, never timed:

* while the other client spends: the gateway's rate falls below the cap and ``/readyz`` says why; the simulator's
  throttled count stops growing (once settled, one probe at most is throttled, with what met it);
* every gateway request is answered: 200, or a JSON refusal / timeout in the upstream's error shape;
* when the other client stops, the rate climbs back to the cap and nothing more is throttled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.upstream.client import UpstreamClient
from tests.integration.conftest import TEMPLATE, Sim
from tests.integration.test_wan import ENV, MARGIN_MS, UPSTREAM_WAN, sim_address, template_target
from tests.netem import Netem, start_netem
from tests.support import DEMO, many_templates, start_cli

OTHER_RATE = 2.5
OTHER_S = 45.0
#: By then the rate has settled (a cut for each throttled level: 5, then about 3.5, 3, 2.5; about 20 s).
SETTLED_S = 25.0
#: What the simulator may still throttle once settled: one probe past the known-bad level (the gateway's call,
#: and the other client's calls that met it in the same window).
PROBE_THROTTLES = 3
#: The rate must be back at the cap this long after the other client stopped (a long quiet of up to 32 s, then
#: 5 steps of 2 s, with room for a slow machine).
RECOVERY_LIMIT_S = 60.0
BACKLOG = 12


@pytest.fixture
def upstream(sim_url: str, tmp_path: Path) -> Iterator[Netem]:
    netem = start_netem(sim_address(sim_url), tmp_path / "netem-upstream", **UPSTREAM_WAN)
    yield netem
    netem.stop()


async def readyz(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/readyz") as response:
        return dict(orjson.loads(await response.read()))


@pytest.mark.timeout(240)
async def test_another_client_spending_half_the_cap_cuts_the_rate_and_it_recovers_when_it_stops(
        sim: Sim, sim_url: str, upstream: Netem, tmp_path: Path) -> None:
    await sim.fixtures(many_templates(3000))
    gateway = start_cli(["serve", "--port", "0", "--upstream", f"https://{upstream.listen}", "--upstream-ca-file",
                         str(upstream.ca), "--spacing-margin-ms", MARGIN_MS, "--deadline-s", "20",
                         "--queue-bound", f"{TEMPLATE}=200"],
                        tmp_path / "gateway.log", env=ENV, ready_text="gateway ready")
    answers: list[tuple[int, dict[str, Any]]] = []
    stop_backlog = asyncio.Event()
    codes = iter(range(10_000))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def backlog_worker() -> None:
            while not stop_backlog.is_set():
                async with session.get(gateway.url + template_target(next(codes))) as response:
                    body = orjson.loads(await response.read())
                    answers.append((response.status, body))
                    if response.status != 200:
                        await asyncio.sleep(0.2)

        async def other_client() -> int:
            """The cron job of another team: the same account, straight at the upstream, every 0.4 s."""
            client = UpstreamClient(sim_url, lambda: DEMO, timeout=5)
            sent = 0
            try:
                loop = asyncio.get_running_loop()
                start = loop.time()
                while loop.time() - start < OTHER_S:
                    await client.call(TEMPLATE, {"CustSpaceId": "77000000000001", "Language": "en_US",
                                                 "TemplateCode": f"{sent % 3000:032x}"})
                    sent += 1
                    await asyncio.sleep(max(0.0, start + sent / OTHER_RATE - loop.time()))
            finally:
                await client.close()
            return sent

        workers = [asyncio.create_task(backlog_worker()) for _ in range(BACKLOG)]
        try:
            other = asyncio.create_task(other_client())
            await asyncio.sleep(SETTLED_S)
            halfway = (await sim.stats(TEMPLATE))["throttled"]
            during = await readyz(session, gateway.url)
            sent_by_other = await other
            after_other = (await sim.stats(TEMPLATE))["throttled"]
            stopped_at = time.monotonic()
            rate_at_end = (await readyz(session, gateway.url))["queues"][TEMPLATE]["rate"]
            recovered_after: float | None = None
            while time.monotonic() - stopped_at < RECOVERY_LIMIT_S:
                state = await readyz(session, gateway.url)
                if state["queues"][TEMPLATE]["rate"] >= 5 and state["status"] == "ready":
                    recovered_after = time.monotonic() - stopped_at
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)  # a few seconds at the cap again
            final = await sim.stats(TEMPLATE)
        finally:
            stop_backlog.set()
            done = await asyncio.gather(*workers, return_exceptions=True)
            gateway.stop()
    for outcome in done:
        assert not isinstance(outcome, BaseException), outcome
    print(f"\nother client sent {sent_by_other}; throttled at the simulator: {halfway} by half-time, {after_other} "
          f"when it stopped, {final['throttled']} at the end; gateway rate halfway {during['queues'][TEMPLATE]} "
          f"and {rate_at_end}/s when the other stopped; back at the cap {recovered_after}s later; "
          f"{len(answers)} gateway answers, {sum(1 for s, _ in answers if s == 200)} of them 200")
    assert sent_by_other >= OTHER_RATE * OTHER_S * 0.9
    # The gateway made way: its rate fell, /readyz said why, and the throttles stopped growing.
    assert during["queues"][TEMPLATE]["rate"] < 5 and during["status"] == "degraded"
    assert any("throttling below the cap" in reason for reason in during["reasons"]), during["reasons"]
    assert after_other - halfway <= PROBE_THROTTLES and after_other - halfway < halfway, (halfway, after_other)
    # It recovered once the other client stopped, and nothing more was throttled.
    assert recovered_after is not None, "the rate did not climb back to the cap"
    assert final["throttled"] - after_other <= 1, (after_other, final)
    # Every gateway request was answered: 200, or a JSON answer in the upstream's error shape.
    assert answers and all(status == 200 or {"RequestId", "Code", "Message"} <= set(body) for status, body in answers)
    statuses = {status for status, _ in answers}
    assert statuses <= {200, 503, 504}, statuses
