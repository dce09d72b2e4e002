"""Request mixes over many cached paths for wrk (`bench/zipf.lua`), and what the gateway's call memo makes of them.

The paths are ``PREFIX + f"{index:032x}"``: one ``GetChatappTemplateDetail`` call per template code, all in one
customer space, shaped like the hit path's URL in `bench.__main__` (its code is 32 hex digits too). wrk draws each
request's index itself (`bench/zipf.lua`: Zipf with s = 1, index 0 the hottest, or uniform; optionally an
``X-Tenant`` header over ``t0000`` .. ``t0999``), seeded per run, so no run replays the stream of the one before.

`run_wrk_mix` is `bench.wrk.run_wrk` with that script and its arguments (`bench.wrk` takes no script).
`memo_hit_rates` replays a mix, in Python, through a `proxy.bounded.BoundedMap` of the call memo's size: the
share of requests that find their validated call memoised (the rest parse, validate and hash the call again).
"""

from __future__ import annotations

import itertools
import random
import resource
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from bench.procs import ROOT
from bench.wrk import WrkError, WrkResult, parse

PREFIX: Final = "/v1/GetChatappTemplateDetail?CustSpaceId=28251486512358&Language=en_US&TemplateCode="
LUA: Final = ROOT / "bench" / "zipf.lua"
#: The tenant names the script sends (``X-Tenant``), by index.
TENANT_FORMAT: Final = "t{:04d}"


def template_code(index: int) -> str:
    return f"{index:032x}"


def path_for(index: int) -> str:
    return PREFIX + template_code(index)


def tenant_name(index: int) -> str:
    return TENANT_FORMAT.format(index)


@dataclass(frozen=True)
class Mix:
    """What wrk asks for: ``count`` paths (indices 0 .. count - 1) drawn by ``mode`` ("zipf": s = 1, or
    "uniform"), with an ``X-Tenant`` header over ``tenants`` names (0: no header)."""

    count: int
    mode: str = "zipf"
    tenants: int = 0

    def script_args(self, seed: int) -> list[str]:
        return [PREFIX, str(self.count), self.mode, str(self.tenants), str(seed)]

    def describe(self) -> str:
        law = "Zipf (s = 1)" if self.mode == "zipf" else "uniform"
        who = ("" if not self.tenants else ", `X-Tenant: t0000`" if self.tenants == 1
               else f", `X-Tenant` uniform over {self.tenants:,} names")
        return f"{law} over {self.count:,} paths{who}"

    def head_share(self, top: int) -> float:
        """The share of requests that ask for the ``top`` hottest paths."""
        top = min(top, self.count)
        if self.mode == "uniform":
            return top / self.count
        return harmonic(top) / harmonic(self.count)


def harmonic(n: int) -> float:
    return float(sum(1.0 / k for k in range(1, n + 1)))


def zipf_cumulative(count: int) -> list[float]:
    return list(itertools.accumulate(1.0 / rank for rank in range(1, count + 1)))


def draws(mix: Mix, n: int, rng: random.Random, cumulative: Sequence[float] | None = None) -> list[int]:
    """``n`` indices drawn as the script draws them (another generator, the same law)."""
    if mix.mode == "uniform":
        return [rng.randrange(mix.count) for _ in range(n)]
    weights = cumulative if cumulative is not None else zipf_cumulative(mix.count)
    return rng.choices(range(mix.count), cum_weights=weights, k=n)


def memo_hit_rates(runs: Sequence[tuple[Mix, int]], memo_bytes: int, call_bytes: int, seed: int = 16) -> list[float]:
    """Replay ``runs`` (each a mix and how many requests wrk sent with it, in the order they ran against one
    gateway) through an empty `BoundedMap` of ``memo_bytes``, each call counted as ``call_bytes`` as the handler
    counts it; the share of each run's requests found in it. FIFO as the memo is: a hit does not renew a call."""
    from proxy.bounded import BoundedMap

    memo: BoundedMap[int, bool] = BoundedMap(memo_bytes)
    rng = random.Random(seed)
    cumulative: dict[int, list[float]] = {}
    rates = []
    for mix, requests in runs:
        if mix.mode == "zipf" and mix.count not in cumulative:
            cumulative[mix.count] = zipf_cumulative(mix.count)
        hits = 0
        for index in draws(mix, requests, rng, cumulative.get(mix.count)):
            if index in memo.mapping:
                hits += 1
            else:
                memo.put(index, True, call_bytes)
        rates.append(hits / requests if requests else 0.0)
    return rates


def wrk_argv(url: str, mix: Mix, seed: int, *, threads: int, connections: int, seconds: int) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA.relative_to(ROOT)),
            url, "--", *mix.script_args(seed)]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk_mix(url: str, mix: Mix, seed: int, *, threads: int = 1, connections: int = 64,
                seconds: int = 4) -> WrkResult:
    """One wrk run of `bench/zipf.lua` (a copy of `bench.wrk.run_wrk` with a script: wrk's CPU is the growth of
    this process's reaped children's time, so nothing else may be reaped meanwhile)."""
    argv = wrk_argv(url, mix, seed, threads=threads, connections=connections, seconds=seconds)
    command = " ".join(f"'{part}'" if "?" in part or "&" in part else part for part in argv)
    before = _children_cpu_s()
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False, cwd=ROOT)
    cpu_s = _children_cpu_s() - before
    if completed.returncode != 0:
        raise WrkError(f"{command} failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return replace(parse(completed.stdout, url, command), cpu_s=cpu_s)
