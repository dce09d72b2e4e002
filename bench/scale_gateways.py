"""The gateways `bench.scale` measures, and what they hold: the template body, the filled gateways, the checks.

`fetch_template` takes the hit path's answer (one upstream call through a memory-cache gateway): the shape of every
entry's body, and checks that `bench.scale_server.gateway_key` computes the key the gateway gives the call.
`spawn_scaled` / `wait_scaled` start a `bench.scale_server` (a real gateway whose cache is filled before it serves)
and read the figures of its ready line; `write_redis_entries` fills Redis for a Redis-only gateway through the
project's own `RedisCache.set`. `budget_flags` sizes ``--memory-max-*`` so that N entries fit; `expect_hits` checks
a few paths answer ``X-Cache: HIT`` with their entry's exact body.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Final

from bench.common import ADMIN_TOKEN, TEMPLATE, sim_stats
from bench.hit import HIT_PATH
from bench.procs import GATEWAY_ENV, HOST, ROOT, SCRUBBED_ENV, Proc, Procs, free_port, python, wait_ready
from bench.scale_server import READY, body_for, call_for, call_of, entry_for, gateway_key, settings_from
from bench.zipf import path_for
from proxy.settings import GatewaySettings

FILL_TTL_S: Final = 3600.0
TTL_FLAGS: Final = ("--ttl", f"{TEMPLATE}={FILL_TTL_S:g}")
#: The shipped defaults (`procs.gateway` passes ``--log-level warning`` first; a later flag wins).
SHIPPED: Final = ("--log-level", "info")
#: A fill of 1M entries takes ~30 s here; readiness waits this long.
FILL_TIMEOUT_S: Final = 600.0
#: Paths GET-checked for ``X-Cache: HIT`` (as fractions of the entry count, plus the hottest few).
CHECKED: Final = (0, 1, 2, 9)
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_ENTRIES: Final = 10_000
#: Concurrent writes into Redis (redis-py's asyncio pool refuses more than 100 connections).
WRITERS: Final = 50


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _checked_indices(entries: int) -> list[int]:
    return sorted({i for i in (*CHECKED, entries // 2, entries - 1) if 0 <= i < entries})


def expect_hits(server: Proc, entries: int, template: bytes) -> int:
    """GET a few of the server's paths: each must answer 200, ``X-Cache: HIT`` and its entry's exact body.
    Returns how many were checked."""
    indices = _checked_indices(entries)
    for i in indices:
        status, headers, body = get(server.url + path_for(i))
        if status != 200 or headers.get("X-Cache") != "HIT" or body != body_for(template, i):
            raise RuntimeError(f"{server.name}: {path_for(i)} answered {status} X-Cache={headers.get('X-Cache')} "
                               f"with {len(body)} bytes (want HIT and the entry's {len(body_for(template, i))}): "
                               f"{body[:200]!r}")
    return len(indices)


def upstream_calls(simulator: Proc) -> int:
    return int(sim_stats(simulator, TEMPLATE)["calls"])


def mem_available() -> int:
    match = re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return int(match.group(1)) * 1024 if match else 0


def mib(value: float) -> str:
    return f"{value / 1024 / 1024:,.1f} MiB"


def _env_for_children() -> dict[str, str]:
    """The environment `bench.procs` gives a gateway (this one's, scrubbed, plus the demo AccessKey)."""
    return {**{k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}, **GATEWAY_ENV}


def gateway_settings_of(proc: Proc) -> GatewaySettings:
    """The `GatewaySettings` a gateway process parsed, with its env: the argv after ``serve`` of a ``python -m proxy
    serve``, or after ``--`` of a `bench.scale_server` (whose own options come before it)."""
    marker = "serve" if "serve" in proc.argv else "--"
    return settings_from(proc.argv[proc.argv.index(marker) + 1:], {**_env_for_children(), **proc.env})


@dataclass(frozen=True)
class Template:
    """The hit path's answer (one upstream call through a memory-cache gateway): every entry's body shape."""

    body: bytes
    content_type: str
    file: Path
    #: The gateway's ``X-Cache-Key`` for the call, equal to `gateway_key` of its settings (checked).
    key: str
    commands: tuple[str, ...]


def fetch_template(procs: Procs, simulator: Proc, workdir: Path) -> Template:
    gateway = procs.gateway("gateway-template", simulator.url, extra=(*TTL_FLAGS, *SHIPPED))
    try:
        status, headers, body = get(gateway.url + HIT_PATH)
        if status != 200 or headers.get("X-Cache") != "MISS":
            raise RuntimeError(f"the template call answered {status} X-Cache={headers.get('X-Cache')}: {body[:300]!r}")
        key = str(headers.get("X-Cache-Key"))
        computed = gateway_key(gateway_settings_of(gateway), *call_of(HIT_PATH))
        if key != computed:
            raise RuntimeError(f"bench.scale_server.gateway_key computes {computed}, the gateway keyed {key}")
        content_type = str(headers.get("Content-Type"))
    finally:
        procs.stop(gateway)
    file = workdir / "template-body.json"
    file.write_bytes(body)
    return Template(body, content_type, file, key, (simulator.command, gateway.command))


# ------------------------------------------------------------------------ the filled gateways


@dataclass(frozen=True)
class Scaled:
    """A running `bench.scale_server` gateway and the figures of its ready line."""

    proc: Proc
    entries: int
    flags: tuple[str, ...]
    figures: dict[str, Any]


def _spawn(argv: Sequence[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`bench.procs._spawn` (private there): the scrubbed environment plus ``env``, output to ``log``."""
    full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    full_env.update(env)
    with log.open("wb") as handle:
        return subprocess.Popen(list(argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=ROOT)


def spawn_scaled(procs: Procs, name: str, simulator: Proc, template: Template, entries: int,
                 flags: Sequence[str], redis_url: str | None = None) -> tuple[Proc, int]:
    """Start a `bench.scale_server` (not waiting for it): its `Proc` (in ``procs``, stopped with it), its entries."""
    port = free_port()
    argv = [python(), "-m", "bench.scale_server", "--entries", str(entries), "--body-file", str(template.file),
            "--fill-ttl-s", f"{FILL_TTL_S:g}", "--", "--port", str(port), "--upstream", simulator.url]
    if redis_url:
        argv += ["--redis-url", redis_url]
    argv += [*TTL_FLAGS, *flags]
    env = {**GATEWAY_ENV, "PROXY_ADMIN_TOKEN": ADMIN_TOKEN}
    log = procs.workdir / f"{name}.log"
    proc = Proc(name, argv, env, _spawn(argv, log, env), f"http://{HOST}:{port}", log, port)
    procs.started.append(proc)
    return proc, entries


def wait_scaled(proc: Proc, entries: int, flags: Sequence[str]) -> Scaled:
    found: dict[str, Any] = {}

    def ready() -> bool:
        try:
            text = proc.log.read_text(errors="replace")
        except OSError:
            return False
        for line in text.splitlines():
            if line.startswith(READY):
                found.update(json.loads(line[len(READY):]))
                return True
        return False

    wait_ready(proc, ready, timeout=FILL_TIMEOUT_S)
    if found.get("entries") != entries:
        raise RuntimeError(f"{proc.name}: filled {found.get('entries')} entries, asked {entries}")
    return Scaled(proc, entries, tuple(flags), found)


def start_scaled(procs: Procs, name: str, simulator: Proc, template: Template, entries: int,
                 flags: Sequence[str], redis_url: str | None = None) -> Scaled:
    proc, _ = spawn_scaled(procs, name, simulator, template, entries, flags, redis_url)
    return wait_scaled(proc, entries, flags)


def budget_flags(entries: int, body_bytes: int, *, redis: bool, tags: bool = True) -> tuple[str, ...]:
    """``--memory-max-entries`` / ``--memory-max-bytes`` so that ``entries`` entries fit (the answer cache's share
    of the budget, and without Redis the purge-tag index's share, `proxy.bounded.memory_shares`): nothing when
    the shipped defaults fit."""
    from proxy.bounded import memory_shares
    from proxy.cache.tagindex import PAIR_BYTES, SET_BYTES

    cache_need = entries * body_bytes
    # each entry: a pair in its space's set and a set of its own (tag:template:<32 hex>) with its pair
    tag_need = 0 if redis or not tags else entries * (2 * PAIR_BYTES + SET_BYTES + len("tag:template:") + 32) + 4096

    def fits(max_bytes: int) -> bool:
        shares = memory_shares(max_bytes, redis=redis, max_entries=max(entries, DEFAULT_MAX_ENTRIES))
        return shares.cache >= cache_need * 1.01 and shares.tag_index >= tag_need * 1.01

    if entries <= DEFAULT_MAX_ENTRIES and fits(DEFAULT_MAX_BYTES):
        return ()
    max_bytes = DEFAULT_MAX_BYTES
    while not fits(max_bytes):
        max_bytes = int(max_bytes * 1.05) + 1024 * 1024
    max_bytes = math.ceil(max_bytes / (1024 * 1024)) * 1024 * 1024
    return ("--memory-max-entries", str(max(entries, DEFAULT_MAX_ENTRIES)), "--memory-max-bytes", str(max_bytes))


async def write_redis_entries(url: str, settings: GatewaySettings, template: Template, keys: int) -> int:
    """Store ``keys`` entries in Redis through the gateway's own `RedisCache.set` (value format, key prefix, TTL
    in whole ms), under `gateway_key`; returns how many."""
    from proxy.cache.redis import RedisCache

    cache = RedisCache.from_url(url, socket_timeout=5.0)
    now = time.time()

    async def put(i: int) -> None:
        spec, params = call_for(i)
        entry, keep_s = entry_for(body_for(template.body, i), now, FILL_TTL_S, settings)
        await cache.set(gateway_key(settings, spec, params), entry, keep_s)

    try:
        for start in range(0, keys, WRITERS):
            await asyncio.gather(*(put(i) for i in range(start, min(keys, start + WRITERS))))
    finally:
        await cache.close()
    return keys


def flags_text(flags: Sequence[str]) -> str:
    """A gateway's flags beyond the shipped defaults, for a table cell."""
    shown = [f for f in flags if f not in SHIPPED]
    pairs = [f"{shown[i]} {shown[i + 1]}" for i in range(0, len(shown) - 1, 2)]
    pairs = ["--tenants (1,000 names)" if p.startswith("--tenants") else p for p in pairs]
    return "shipped defaults" if not pairs else ", ".join(f"`{p}`" for p in pairs)
