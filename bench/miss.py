"""The miss path: many distinct misses at once, and how close the gateway runs to the upstream caps.

All misses are sent together through one aiohttp client, to one gateway or spread round-robin over
several replicas (the i-th miss of each action goes to gateway ``i mod n``). Each has its own cache
key, so each costs exactly one upstream call: real templates and WABAs from the simulator's default
fixtures first (only about a dozen templates and a handful of spaces), then keys that do not exist
(a ``TemplateName`` no template has, a ``CustSpaceId`` no space has). The upstream answers those with
a business error, which is passed on and never retried, so it still costs one call: what is measured
is the rate of upstream calls, not the answers. No fixture has to be added however many misses are
asked for.

Utilisation for an action is ``(calls - 1) / (time from first to last upstream call) / cap``. The
simulator's stats do not expose arrival times, so the span is taken on the client side: from the
first answer to the last. Every answer trails its upstream arrival by the simulated latency
(a fixed 80 ms for the loopback rows, so the spans agree; 80 ± 20 ms for the row that shows what the
upstream's processing jitter costs, where they differ by at most ±40 ms over ~20 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.common import QUICK
from proxy.actions import ACTIONS
from proxy.simulator.fixtures import load_document

TEMPLATE: str = "GetChatappTemplateDetail"
WABA: str = "QueryChatappBindWaba"
#: Every miss-path gateway's flags beyond ``--upstream`` (and ``--redis-url`` for replicas): room for the backlog.
MISS_GATEWAY_FLAGS: tuple[str, ...] = ("--deadline-s", "60", "--upstream-timeout-s", "8", "--queue-bound",
                                       "GetChatappTemplateDetail=1000", "--queue-bound", "QueryChatappBindWaba=1000")
#: The least share of the cap a backlog must reach (with 0 throttled and never above the cap in any second).
TARGET_UTILISATION: float = 0.95
#: The least share on loopback against a simulator with a fixed answer time (issue 13).
LOOPBACK_TARGET: float = 0.98
#: The learning backlog every miss-path row sends first (keys of its own), so the measured one runs at the adapted δ.
LEARN_TEMPLATES: int = 10 if QUICK else 30
LEARN_WABAS: int = 15 if QUICK else 40


@dataclass(frozen=True)
class Sample:
    action: str
    sent: float
    answered: float
    status: int
    cache: str
    code: str
    gateway: int = 0


@dataclass
class ActionResult:
    action: str
    cap: int
    sent: int
    upstream_calls: int
    throttled: int
    max_in_any_1s: int
    span_s: float
    wall_s: float
    misses: int
    answers: dict[str, int] = field(default_factory=dict)
    gateway_errors: int = 0
    #: Misses sent to each gateway, in the order the gateways were given.
    per_gateway: list[int] = field(default_factory=list)
    #: When each upstream-bound miss was answered (monotonic seconds): one per upstream call, for the plot.
    call_times: list[float] = field(default_factory=list)
    #: When each upstream call arrived in front of the simulator (`bench.tap`; empty when not tapped).
    arrivals: list[float] = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return (self.misses - 1) / self.span_s if self.span_s > 0 else 0.0

    @property
    def utilisation(self) -> float:
        return self.calls_per_s / self.cap

    @property
    def arrival_utilisation(self) -> float | None:
        """(arrivals − 1) / (last arrival − first) / cap, from the tap's stamps; None when not tapped."""
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return None
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0]) / self.cap

    @property
    def measured_utilisation(self) -> float:
        """The arrivals' utilisation when tapped, else the answers' (`utilisation`)."""
        tapped = self.arrival_utilisation
        return self.utilisation if tapped is None else tapped


@dataclass(frozen=True)
class MissRun:
    """One miss-path run: ``replicas`` gateways, each action's result, the command lines, and the row label."""

    replicas: int
    results: list[ActionResult]
    commands: list[str]
    label: str = ""
    #: Observations for the report beyond the results (what went through each network stand-in).
    notes: tuple[str, ...] = ()
    #: The least utilisation this run must reach.
    target: float = TARGET_UTILISATION

    def met(self, r: ActionResult) -> bool:
        return r.measured_utilisation >= self.target and r.throttled == 0 and r.max_in_any_1s <= r.cap

    @property
    def all_met(self) -> bool:
        return all(self.met(r) for r in self.results)


def template_queries(count: int) -> list[dict[str, str]]:
    """Every (template, language) of the default fixtures, then template names that do not exist."""
    queries: list[dict[str, str]] = []
    spaces = load_document(None)["spaces"]
    for space in spaces:
        for template in space["Templates"]:
            query = {"CustSpaceId": space["CustSpaceId"], "Language": template["Language"],
                     "TemplateCode": template["TemplateCode"]}
            if space.get("IsvCode"):
                query["IsvCode"] = space["IsvCode"]
            queries.append(query)
    home = spaces[0]["CustSpaceId"]
    index = 0
    while len(queries) < count:
        queries.append({"CustSpaceId": home, "Language": "en_US", "TemplateName": f"bench_missing_{index:05d}"})
        index += 1
    return queries[:count]


def waba_queries(count: int) -> list[dict[str, str]]:
    """Every space of the default fixtures, then space ids that do not exist."""
    queries: list[dict[str, str]] = []
    for space in load_document(None)["spaces"]:
        query = {"CustSpaceId": space["CustSpaceId"]}
        if space.get("IsvCode"):
            query["IsvCode"] = space["IsvCode"]
        queries.append(query)
    index = 0
    while len(queries) < count:
        queries.append({"CustSpaceId": f"99{index:012d}"})
        index += 1
    return queries[:count]


async def _one(session: aiohttp.ClientSession, gateways: Sequence[str], index: int, action: str,
               query: dict[str, str], start: asyncio.Event) -> Sample:
    number = index % len(gateways)
    gateway = gateways[number]
    await start.wait()
    sent = time.monotonic()
    async with session.get(f"{gateway}/v1/{action}", params=query) as response:
        body = await response.read()
        answered = time.monotonic()
    try:
        parsed = orjson.loads(body)
        code = str(parsed.get("Code", "")) if isinstance(parsed, dict) else ""
    except orjson.JSONDecodeError:
        code = f"HTTP{response.status}"
    return Sample(action, sent, answered, response.status, response.headers.get("X-Cache", "-"), code, number)


async def _run(gateways: Sequence[str], simulator: str, templates: Sequence[dict[str, str]],
               wabas: Sequence[dict[str, str]]) -> tuple[list[Sample], dict[str, Any], float]:
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async with session.post(f"{simulator}/__sim/reset") as response:
            response.raise_for_status()
        start = asyncio.Event()
        tasks = [asyncio.create_task(_one(session, gateways, i, TEMPLATE, q, start))
                 for i, q in enumerate(templates)]
        tasks += [asyncio.create_task(_one(session, gateways, i, WABA, q, start))
                  for i, q in enumerate(wabas)]
        await asyncio.sleep(0.05)  # every task is parked on the event: they all go at once
        began = time.monotonic()
        start.set()
        samples = list(await asyncio.gather(*tasks))
        wall = time.monotonic() - began
        async with session.get(f"{simulator}/__sim/stats") as response:
            response.raise_for_status()
            stats = orjson.loads(await response.read())
    return samples, stats, wall


def summarise(action: str, samples: list[Sample], stats: dict[str, Any], began: float,
              gateways: int = 1) -> ActionResult:
    mine = [s for s in samples if s.action == action]
    upstream = [s for s in mine if s.cache == "MISS"]
    answered = sorted(s.answered for s in upstream)
    span = answered[-1] - answered[0] if len(answered) > 1 else 0.0
    counts: dict[str, int] = {}
    for s in mine:
        counts[s.code] = counts.get(s.code, 0) + 1
    sim = stats["actions"][action]
    return ActionResult(
        action=action,
        cap=int(sim.get("cap", ACTIONS[action].cap_per_second)),
        sent=len(mine),
        upstream_calls=int(sim["calls"]),
        throttled=int(sim["throttled"]),
        max_in_any_1s=int(sim["max_in_any_1s"]),
        span_s=span,
        wall_s=max(s.answered for s in mine) - began if mine else 0.0,
        misses=len(upstream),
        answers=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        gateway_errors=sum(1 for s in mine if s.cache not in {"MISS", "HIT", "COALESCED"}),
        per_gateway=[sum(1 for s in mine if s.gateway == number) for number in range(gateways)],
        call_times=answered,
    )


@dataclass(frozen=True)
class ColdStart:
    """The learning backlog a row sends before the measured one, on keys of its own, to fresh gateways: what a
    cold start costs (each new process spaces at δ's ceiling until it has timed a few answers)."""

    templates: int
    wabas: int
    #: Each gateway's δ before and after it, ms.
    margin_before_ms: list[float]
    margin_after_ms: list[float]
    #: Per action: the simulator's throttled count, and the utilisation from the answers' span.
    throttled: dict[str, int]
    utilisation: dict[str, float]

    def note(self) -> str:
        def ms(values: list[float]) -> str:
            return " / ".join(f"{v:.1f}" for v in values)

        return (f"cold start (a learning backlog of {self.templates} + {self.wabas} misses on keys of their own, "
                f"before the measured one): δ {ms(self.margin_before_ms)} → {ms(self.margin_after_ms)} ms, "
                f"utilisation from answers {self.utilisation[TEMPLATE]:.3f} (template) and "
                f"{self.utilisation[WABA]:.3f} (WABA), throttled {self.throttled[TEMPLATE]} and "
                f"{self.throttled[WABA]}")


def learning_queries(templates: int, wabas: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Keys no measured backlog uses (template names ``learn_*``, space ids ``97…``), so it still misses after."""
    home = load_document(None)["spaces"][0]["CustSpaceId"]
    return ([{"CustSpaceId": home, "Language": "en_US", "TemplateName": f"learn_{i:05d}"} for i in range(templates)],
            [{"CustSpaceId": f"97{i:012d}"} for i in range(wabas)])


def learn(gateways: str | Sequence[str], simulator: str, margin_ms: Callable[[str], float], *,
          templates: int = LEARN_TEMPLATES, wabas: int = LEARN_WABAS) -> ColdStart:
    """Send the learning backlog (spread round-robin like the measured one, so every replica learns its path),
    the simulator reset first; ``margin_ms`` reads a gateway's δ."""
    urls = [gateways] if isinstance(gateways, str) else list(gateways)
    before = [margin_ms(url) for url in urls]
    samples, stats, _wall = asyncio.run(_run(urls, simulator, *learning_queries(templates, wabas)))
    began = min(s.sent for s in samples)
    results = {action: summarise(action, samples, stats, began, len(urls)) for action in (TEMPLATE, WABA)}
    return ColdStart(templates, wabas, before, [margin_ms(url) for url in urls],
                     {action: r.throttled for action, r in results.items()},
                     {action: r.utilisation for action, r in results.items()})


def run_misses(gateways: str | Sequence[str], simulator: str, *, templates: int = 100, wabas: int = 150,
               arrivals: Callable[[str], list[float]] | None = None) -> list[ActionResult]:
    """``gateways``: one base URL, or several replicas' (each action's misses spread round-robin). ``arrivals``:
    when each call of an action arrived in front of the simulator (`bench.tap.ArrivalTap.arrivals`), if tapped."""
    urls = [gateways] if isinstance(gateways, str) else list(gateways)
    samples, stats, _wall = asyncio.run(_run(urls, simulator, template_queries(templates), waba_queries(wabas)))
    began = min(s.sent for s in samples)
    results = [summarise(action, samples, stats, began, len(urls)) for action in (TEMPLATE, WABA)]
    for result in results:
        result.arrivals = [at for at in arrivals(result.action) if at >= began] if arrivals else []
    return results
