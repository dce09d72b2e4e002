"""A real gateway whose cache is filled before it serves (for `bench.scale`): the way round the upstream cap.

    python -m bench.scale_server --entries N --body-file FILE [--no-tags] [--fill-ttl-s 3600] -- SERVE OPTIONS

SERVE OPTIONS are ``cams-proxy serve``'s, parsed by its own parser into `GatewaySettings` with the environment
(the AccessKey, ``--redis-url``, ``--memory-max-*``, ``--log-level``, ``--loop`` apply as to ``python -m proxy
serve``). The app is `proxy.web.app.create_app`'s, served by the gateway's runner (`proxy.runner.serve_forever`
with `gateway_runner`, on the gateway's loop choice), as `proxy.__main__.run_gateway` serves it, plus one cleanup
context after the gateway's own: once the resources are open and before the socket serves, it writes N entries
into the real cache object (``app[GATEWAY].readthrough.cache``: the memory cache, or the tiered cache, whose own ``set``
writes Redis, then the L1, then the bus notice) under the keys the gateway computes (`ReadThrough.key_for`) for
the paths of `bench.zipf` (index 0 .. N - 1), each a ``GetChatappTemplateDetail`` answer: the body in FILE with
its template code and ``RequestId`` replaced (same length, distinct bytes per entry), fresh for ``--fill-ttl-s``
with the gateway's own stale windows (`Lifetimes.windows`, `store_seconds`). Without Redis, each entry is also
indexed under its purge tags (`proxy.tags.tags_for`, the gateway's tag index) as a fill does, unless
``--no-tags``. The process's VmRSS (``/proc/self/status``) is read before the fill, after the cache writes and
after the tags, each after a full ``gc.collect()`` (the collector is off
during the fill, back on before serving); the ready line, on stderr once the socket serves, gives them::

    scale-server ready {"url": ..., "entries": N, "rss_before": BYTES, "rss_cache": BYTES, "rss_after": ...}

Stop it with SIGTERM, like the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from yarl import URL

from bench.zipf import path_for, template_code
from proxy.actions import ActionSpec
from proxy.cache.base import Entry
from proxy.cache.memory import MemoryCache
from proxy.cache.tagindex import MemoryTagIndex
from proxy.cache.tiered import TieredCache
from proxy.freshness import store_seconds
from proxy.keys import cache_key
from proxy.settings import GatewaySettings
from proxy.tags import tags_for
from proxy.upstream.errors import Outcome
from proxy.validation import resolve_action, validate

#: The template code and request id in the hit path's answer (`bench.__main__.HIT_PATH`), replaced per entry.
SOURCE_CODE: Final = "744c4b5c79c9432497a075bdfca36bf5"
REQUEST_ID: Final = re.compile(rb'"RequestId":"[^"]{36}"')
CONTENT_TYPE: Final = "application/json;charset=utf-8"
READY: Final = "scale-server ready "
#: Concurrent ``set`` calls while filling a tiered cache (each a Redis SET and a PUBLISH; the pool holds 128).
TIERED_CONCURRENCY: Final = 64


# ----------------------------------------------------------------- what a request asks and what is stored


def call_of(path: str) -> tuple[ActionSpec, dict[str, str]]:
    """The validated call the gateway makes of a bodyless ``GET /v1/{Action}?...`` with no action headers
    (`parse_call`'s steps: the action from the path, the parameters from the raw query)."""
    parts = urlsplit(path)
    spec = resolve_action(parts.path.removeprefix("/v1/"), None)
    return spec, validate(spec, parse_qsl(parts.query, keep_blank_values=True, errors="strict"))


def call_for(index: int) -> tuple[ActionSpec, dict[str, str]]:
    """`call_of` the path of template ``index`` (`bench.zipf.path_for`)."""
    return call_of(path_for(index))


def body_for(template: bytes, index: int) -> bytes:
    """``template`` (the hit path's answer) as the answer for template ``index``: its code and its RequestId
    replaced, same length."""
    body = template.replace(SOURCE_CODE.encode(), template_code(index).encode())
    return REQUEST_ID.sub(f'"RequestId":"BE7C4000-0000-4000-8000-{index:012X}"'.encode(), body, count=1)


def check_template(template: bytes) -> None:
    if SOURCE_CODE.encode() not in template or not REQUEST_ID.search(template):
        raise SystemExit(f"the template body has no TemplateCode {SOURCE_CODE} or no 36-character RequestId")


def entry_for(body: bytes, now: float, ttl_s: float, settings: GatewaySettings) -> tuple[Entry, float]:
    """The entry a successful fill at ``now`` stores for ``body`` with an action TTL of ``ttl_s``, and the
    seconds the backend keeps it (`ReadThrough._fill`'s windows)."""
    windows = settings.lifetimes().windows(Outcome.SUCCESS, ttl_s, now)
    if windows is None:
        raise RuntimeError("a success is not stored?")
    fresh_until, stale_until = windows
    return Entry(200, body, now, CONTENT_TYPE, fresh_until, stale_until), store_seconds(stale_until, now)


def gateway_key(settings: GatewaySettings, spec: ActionSpec, params: Mapping[str, str]) -> str:
    """`ReadThrough.key_for` without a gateway: the endpoint as the upstream client normalises it, the account
    the gateway keys on (``--account``, else the AccessKey id of the environment)."""
    account = settings.account or settings.access_key_id
    if not account:
        raise RuntimeError("no --account and no static AccessKey: the key depends on the credential chain")
    return cache_key(endpoint=str(URL(str(settings.upstream))), access_key_id=account, action=spec.name,
                     version=spec.version, params=params)


def settings_from(serve_argv: Sequence[str], environ: Mapping[str, str]) -> GatewaySettings:
    """``cams-proxy serve SERVE_ARGV`` as the CLI reads it."""
    from proxy.__main__ import build_parser

    return GatewaySettings.from_sources(build_parser().parse_args(["serve", *serve_argv]), environ)


def vm_rss(pid: int | str = "self") -> int:
    """VmRSS of a process, in bytes (``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


# ----------------------------------------------------------------------------------------- the fill


def _rss_now() -> int:
    gc.collect()
    return vm_rss()


async def fill(app: Any, entries: int, template: bytes, ttl_s: float, tags: bool) -> dict[str, Any]:
    """Write ``entries`` entries into the app's cache (and, without Redis, its tag index); the figures."""
    from proxy.gateway import in_process_cache
    from proxy.web.keys import GATEWAY

    gateway = app[GATEWAY]
    readthrough = gateway.readthrough
    settings: GatewaySettings = gateway.settings
    cache = readthrough.cache
    index = gateway.purger.index
    tagging = tags and isinstance(index, MemoryTagIndex)
    keys: list[str] = [""] * entries  # allocated before the first reading: only what the cache holds counts
    started = time.monotonic()
    rss_before = _rss_now()
    now = time.time()

    async def put(i: int) -> None:
        spec, params = call_for(i)
        key = keys[i] = readthrough.key_for(spec, params)
        entry, keep_s = entry_for(body_for(template, i), now, ttl_s, settings)
        await cache.set(key, entry, keep_s)

    gc.disable()  # the fill makes millions of objects at once: no collection passes over them meanwhile
    try:
        if isinstance(cache, TieredCache):
            for start in range(0, entries, TIERED_CONCURRENCY):
                await asyncio.gather(*(put(i) for i in range(start, min(entries, start + TIERED_CONCURRENCY))))
        else:
            for i in range(entries):
                await put(i)
                if i % 4096 == 4095:
                    await asyncio.sleep(0)
        cache_s = time.monotonic() - started
        rss_cache = _rss_now()
        if tagging:
            stale_until = entry_for(b"", now, ttl_s, settings)[0].stale_until
            for i in range(entries):
                spec, params = call_for(i)
                await index.add(keys[i], tags_for(spec.name, params, b""), stale_until)
                if i % 4096 == 4095:
                    await asyncio.sleep(0)
        rss_after = _rss_now()
    finally:
        gc.enable()
    keys.clear()
    memory = in_process_cache(cache)
    return {
        "entries": entries, "cache": cache.name, "tags": tagging, "fill_s": round(time.monotonic() - started, 3),
        "cache_fill_s": round(cache_s, 3), "rss_before": rss_before, "rss_cache": rss_cache,
        "rss_after": rss_after, "body_bytes": len(body_for(template, 0)),
        "cache_entries": len(memory) if isinstance(memory, MemoryCache) else None,
        "evictions": memory.evictions if isinstance(memory, MemoryCache) else None,
        "tag_pairs": len(index) if isinstance(index, MemoryTagIndex) else None,
        "tags_forgotten": index.forgotten if isinstance(index, MemoryTagIndex) else None,
        "memory": gateway.memory_document(),
    }


def serve(settings: GatewaySettings, entries: int, template: bytes, ttl_s: float, tags: bool) -> None:
    """`proxy.__main__.run_gateway`'s steps, with the fill after the resources open and its own ready line."""
    from proxy.loops import LoopUnavailable, loop_factory, run
    from proxy.options import ConfigError
    from proxy.runner import bind, serve_forever
    from proxy.tenants import TenantsFileError, load_tenants
    from proxy.web.app import create_app, gateway_runner

    try:
        loop_name, _ = loop_factory(settings.loop)
    except LoopUnavailable as exc:
        raise ConfigError([str(exc)]) from exc
    try:
        directory = load_tenants(settings.tenants_file)
    except TenantsFileError as exc:
        raise ConfigError([f"invalid setting --tenants={str(settings.tenants_file)!r}: {exc}"]) from exc
    app = create_app(settings, directory)
    figures: dict[str, Any] = {}

    async def filled(app: Any) -> AsyncIterator[None]:
        figures.update(await fill(app, entries, template, ttl_s, tags))
        yield

    app.cleanup_ctx.append(filled)
    sock = bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]

    def ready() -> None:
        figures.update(url=f"http://{host}:{port}", loop=loop_name, pid_rss=vm_rss())
        print(READY + json.dumps(figures), file=sys.stderr, flush=True)

    run(serve_forever(app, sock, ready, runner_factory=gateway_runner, grace_s=settings.shutdown_grace_s),
        settings.loop)


def main(argv: Sequence[str] | None = None) -> None:
    from proxy.logs import configure
    from proxy.options import ConfigError, default_environ

    args = list(sys.argv[1:] if argv is None else argv)
    own, serve_argv = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
    parser = argparse.ArgumentParser(prog="python -m bench.scale_server", description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, required=True, help="entries to write before serving")
    parser.add_argument("--body-file", type=Path, required=True, help="the hit path's answer body (the template)")
    parser.add_argument("--fill-ttl-s", type=float, default=3600.0, help="the entries' freshness, seconds")
    parser.add_argument("--no-tags", action="store_true", help="do not index the entries' purge tags")
    options = parser.parse_args(own)
    template = options.body_file.read_bytes()
    check_template(template)
    try:
        settings = settings_from(serve_argv, default_environ())
        configure(settings.log_level, "json" if settings.json_logs(sys.stderr.isatty()) else "console")
        serve(settings, options.entries, template, options.fill_ttl_s, not options.no_tags)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"bench.scale_server: {problem}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
