"""The loopback miss path of `make bench`: misses at once through one gateway and through replicas sharing one
redis-server, and the "Miss path" section of the report (its table and notes come from `bench.wan`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bench import adaptive, wan
from bench.common import QUICK
from bench.miss import (
    LEARN_TEMPLATES,
    LEARN_WABAS,
    LOOPBACK_TARGET,
    MISS_GATEWAY_FLAGS,
    TARGET_UTILISATION,
    MissRun,
    learn,
    run_misses,
)
from bench.procs import Proc, Procs

TEMPLATE_MISSES: Final = 20 if QUICK else 100
WABA_MISSES: Final = 30 if QUICK else 150
REPLICAS: Final = 3


def miss_path(procs: Procs, simulator: Proc, label: str = "loopback, 1 gateway",
              target: float = LOOPBACK_TARGET) -> MissRun:
    """One fresh memory-cache gateway at the shipped defaults (δ adaptive) in front of ``simulator``."""
    gateway = procs.gateway(f"gateway-miss-{simulator.name}", simulator.url, extra=MISS_GATEWAY_FLAGS)
    cold = learn(gateway.url, simulator.url, wan.margin_ms)
    results = run_misses(gateway.url, simulator.url, templates=TEMPLATE_MISSES, wabas=WABA_MISSES)
    note, _margins, _allowance = wan.margins_note([gateway.url])
    procs.stop(gateway)
    return MissRun(1, results, [simulator.command, gateway.command], label, (note, cold.note()), target=target)


def miss_path_replicas(procs: Procs, simulator: Proc) -> MissRun:
    """`REPLICAS` gateways sharing a fresh redis-server (budget, leases, cache), the misses spread round-robin."""
    redis = procs.redis("redis-replicas")
    gateways = [procs.gateway(f"gateway-miss-replica-{n}", simulator.url, redis_url=redis.url,
                              extra=MISS_GATEWAY_FLAGS) for n in range(1, REPLICAS + 1)]
    cold = learn([g.url for g in gateways], simulator.url, wan.margin_ms)
    results = run_misses([g.url for g in gateways], simulator.url, templates=TEMPLATE_MISSES, wabas=WABA_MISSES)
    note, _margins, _allowance = wan.margins_note([g.url for g in gateways])
    for proc in (*reversed(gateways), redis):
        procs.stop(proc)
    return MissRun(REPLICAS, results, [simulator.command, redis.command, *(g.command for g in gateways)],
                   f"loopback, {REPLICAS} replicas sharing Redis", (note, cold.note()), target=LOOPBACK_TARGET)


def miss_section(single: MissRun, replicas: MissRun, wan_runs: Sequence[MissRun],
                 more: Sequence[MissRun] = ()) -> list[str]:
    return [
        "## Miss path",
        "",
        f"{TEMPLATE_MISSES} template misses and {WABA_MISSES} WABA misses sent at once (one aiohttp client, "
        "no connection limit) in front of a simulator that answers in a fixed 80 ms (no processing jitter, so δ "
        "measures the path alone; one row repeats the one-gateway run against the usual 80 ± 20 ms simulator to "
        "show what the upstream's own processing jitter costs). Each has its own cache key, so each costs "
        "exactly one upstream call: the default fixtures' templates and spaces first (12 templates, 4 spaces), then "
        "names and space ids that do not exist, which the upstream answers with a business error (passed on, never "
        "retried), so no fixture has to be added. Counters from the simulator (`/__sim/reset` before, "
        "`/__sim/stats` after): `calls`, `throttled` and `max_in_any_1s`, the most calls it received in any "
        "1-second window. Calls/s = (calls − 1) / span, the span taken from the first answer to the last on the "
        "client (each answer trails its upstream arrival by the simulated latency, so on loopback with a fixed "
        "latency the span is the arrivals'); utilisation = calls/s / cap. Every gateway runs at the shipped "
        f"defaults (δ adaptive from the 10 ms floor). Each row first sends a learning backlog to its fresh "
        f"gateways ({LEARN_TEMPLATES} + {LEARN_WABAS} misses on keys of their own, spread like the measured ones), "
        "so the measured backlog runs at the adapted δ; what that cold start cost is in the row's notes (a new "
        "process spaces at δ's 250 ms ceiling until it has timed 4 answers). Targets: utilisation ≥ "
        f"{LOOPBACK_TARGET} on loopback (issue "
        f"13), ≥ {TARGET_UTILISATION} with the simulator's processing jitter and on the WAN rows, ≥ "
        f"{adaptive.JITTER_TARGET} under ±25 ms of jitter; always 0 throttled and `max_in_any_1s` ≤ cap.",
        "",
        "*One gateway*: a fresh memory-cache gateway; its per-process queue spaces the calls. "
        f"*{replicas.replicas} replicas*: a fresh redis-server and {replicas.replicas} fresh gateways with "
        f"`--redis-url` and the same flags; the client sends each action's misses round-robin over the "
        f"{replicas.replicas} (the i-th to replica i mod {replicas.replicas}), all at once. The replicas share the "
        "budget in Redis (one GCRA slot per call, decided on the Redis server's clock), so together they must keep "
        "to the one cap; the shared slots are spaced for the replicas' clock estimates too (the clock allowance "
        "a, about the fastest round trip to Redis), so their ceiling by design is 1 / ((1 + δ)(1 + a)), given in "
        "the notes.",
        "",
        wan.profile_text(replicas.replicas),
        "",
        *wan.miss_table([single, replicas, *wan_runs, *more]),
        "",
        wan.notes_text([single, replicas, *wan_runs, *more]),
        "",
        "The jitter row is described under \"The adaptive budget\" below.",
        "",
    ]

