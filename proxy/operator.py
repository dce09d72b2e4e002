"""Commands for operators, talking to a running gateway over HTTP: ``warm``, ``purge`` and ``status``.

* ``cams-proxy warm --file keys.csv``: prefill the cache. The CSV has an ``Action`` column and one column per
  parameter (empty cells are left out). Every row is validated before anything is sent; then the calls go
  through the gateway at warm-up priority (``X-Proxy-Priority: warm``: below interactive misses and
  refreshes, inside the same upstream budget, so the cap holds), a few at a time, honouring ``Retry-After``.
  A progress bar while it runs, a summary at the end.
* ``cams-proxy purge``: by cache key or by tag, through the admin API.
* ``cams-proxy status``: a live view of quota use, queue depth, hit ratio and tenants.

The admin token comes from ``PROXY_ADMIN_TOKEN`` only (never a flag: flags show up in ``ps``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from proxy.errors import RequestRejected
from proxy.validation import resolve_action, validate

DEFAULT_GATEWAY: Final = "http://127.0.0.1:8080"
WARM_TENANT: Final = "warm-up"
MAX_ATTEMPTS: Final = 30


class OperatorError(Exception):
    """A problem to report in one line (exit status 1)."""


def add_operator_commands(commands: Any) -> None:
    warm = commands.add_parser("warm", help="prefill the cache from a CSV of calls, within the upstream cap",
                               description="Prefill the gateway's cache at warm-up priority (below interactive "
                                           "misses), within the upstream cap, with progress and a summary.")
    warm.add_argument("--file", required=True, type=Path, help="CSV with an Action column and parameter columns")
    warm.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"gateway URL (default {DEFAULT_GATEWAY})")
    warm.add_argument("--concurrency", type=int, default=10, help="calls in flight at once (default 10)")
    purge = commands.add_parser("purge", help="purge cached answers by key or tag (admin API)",
                                description="Purge cached answers on every replica through the admin API. "
                                            "The token comes from PROXY_ADMIN_TOKEN.")
    purge.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"gateway URL (default {DEFAULT_GATEWAY})")
    purge.add_argument("--key", action="append", default=[], help="a cache key (X-Cache-Key); repeatable")
    purge.add_argument("--space", action="append", default=[], help="a CustSpaceId; repeatable")
    purge.add_argument("--template", action="append", default=[], help="a TemplateCode; repeatable")
    purge.add_argument("--waba", action="append", default=[], help="a WABA id; repeatable")
    status = commands.add_parser("status", help="live view of quota use, queues, hit ratio and tenants",
                                 description="A live terminal view of a running gateway (admin API; the token "
                                             "comes from PROXY_ADMIN_TOKEN).")
    status.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"gateway URL (default {DEFAULT_GATEWAY})")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    status.add_argument("--once", action="store_true", help="print one snapshot and exit")


def run_operator_command(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    console = Console(stderr=False)
    try:
        if args.command == "warm":
            return asyncio.run(warm(args.file, args.gateway, args.concurrency, console))
        token = env.get("PROXY_ADMIN_TOKEN", "")
        if not token:
            raise OperatorError("set PROXY_ADMIN_TOKEN to the gateway's admin token")
        if args.command == "purge":
            return asyncio.run(purge(args, token, console))
        return asyncio.run(status(args.gateway, token, args.interval, args.once, console))
    except OperatorError as exc:
        Console(stderr=True).print(f"cams-proxy {args.command}: {exc}", markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------------------------------------- warm


@dataclass(frozen=True)
class WarmCall:
    line: int
    action: str
    params: dict[str, str]


def read_calls(path: Path) -> list[WarmCall]:
    """Every row of ``path`` as a validated call; raises `OperatorError` naming each bad line."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OperatorError(f"cannot read {path}: {exc}") from exc
    calls: list[WarmCall] = []
    problems: list[str] = []
    for number, row in enumerate(rows, start=2):
        params = {name: value for name, value in row.items() if name and name != "Action" and value}
        try:
            spec = resolve_action(row.get("Action"), None)
            calls.append(WarmCall(number, spec.name, validate(spec, list(params.items()))))
        except RequestRejected as exc:
            problems.append(f"line {number}: {exc.message}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise OperatorError(f"{path}: {shown}")
    if not calls:
        raise OperatorError(f"{path}: no calls (a header row with Action and parameter columns, then one row a call)")
    return calls


async def _warm_one(session: aiohttp.ClientSession, gateway: str, call: WarmCall) -> str:
    """The outcome of one call: its X-Cache, or the error code after retries."""
    for _ in range(MAX_ATTEMPTS):
        try:
            async with session.get(f"{gateway}/v1/{call.action}", params=call.params,
                                   headers={"X-Proxy-Priority": "warm", "X-Tenant": WARM_TENANT}) as response:
                body = await response.read()
                if response.status == 503 and "Retry-After" in response.headers:
                    await asyncio.sleep(float(response.headers["Retry-After"]))
                    continue
                if response.status == 200:
                    return response.headers.get("X-Cache", "MISS")
                try:
                    return str(orjson.loads(body).get("Code", f"HTTP{response.status}"))
                except orjson.JSONDecodeError:
                    return f"HTTP{response.status}"
        except aiohttp.ClientConnectionError as exc:
            raise OperatorError(f"cannot reach the gateway at {gateway}: {exc}") from exc
    return "Throttling.Proxy"


async def warm(path: Path, gateway: str, concurrency: int, console: Console) -> int:
    calls = read_calls(path)
    gateway = gateway.rstrip("/")
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    limit = asyncio.Semaphore(max(1, concurrency))
    progress = Progress(TextColumn("warming"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[detail]}"), console=console)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        with progress:
            task = progress.add_task("warm", total=len(calls), detail="")

            async def one(call: WarmCall) -> None:
                async with limit:
                    outcome = await _warm_one(session, gateway, call)
                outcomes[outcome] += 1
                progress.update(task, advance=1, detail=f"filled {outcomes['MISS']}, cached {outcomes['HIT']}")

            await asyncio.gather(*(one(call) for call in calls))
    elapsed = time.monotonic() - started
    table = Table(title=f"warm-up of {len(calls)} calls in {elapsed:.1f} s")
    table.add_column("outcome")
    table.add_column("calls", justify="right")
    labels = {"MISS": "filled (one upstream call each)", "COALESCED": "filled by a call in flight",
              "HIT": "already cached", "STALE": "stale entry served (refresh started)"}
    for outcome, count in sorted(outcomes.items(), key=lambda item: -item[1]):
        table.add_row(labels.get(outcome, f"failed: {outcome}"), str(count))
    console.print(table)
    failed = sum(count for outcome, count in outcomes.items() if outcome not in labels)
    console.print(f"summary: filled={outcomes['MISS'] + outcomes['COALESCED']} cached={outcomes['HIT']} "
                  f"failed={failed} elapsed_s={elapsed:.1f}", markup=False, highlight=False)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------- purge, status


async def _admin(session: aiohttp.ClientSession, method: str, url: str, token: str,
                 body: object | None = None) -> dict[str, Any]:
    try:
        async with session.request(method, url, headers={"Authorization": f"Bearer {token}"},
                                   data=None if body is None else orjson.dumps(body)) as response:
            raw = await response.read()
    except aiohttp.ClientError as exc:
        raise OperatorError(f"cannot reach the gateway: {exc}") from exc
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise OperatorError(f"{url} answered {response.status} without JSON") from exc
    if response.status != 200:
        raise OperatorError(f"{url} answered {response.status} {document.get('Code')}: {document.get('Message')}")
    return dict(document)


async def purge(args: argparse.Namespace, token: str, console: Console) -> int:
    tags = {kind: values for kind, values in (("CustSpaceId", args.space), ("TemplateCode", args.template),
                                              ("WabaId", args.waba)) if values}
    if not args.key and not tags:
        raise OperatorError("name what to purge: --key, --space, --template or --waba")
    body: dict[str, object] = {"keys": args.key} if args.key else {}
    if tags:
        body["tags"] = tags
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        answer = await _admin(session, "POST", f"{args.gateway.rstrip('/')}/admin/purge", token, body)
    for line in purge_report(answer):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def purge_report(answer: Mapping[str, Any]) -> list[str]:
    """The lines ``purge`` prints for the admin API's answer (pure): the count removed, each removed key, then
    the named keys that were not cached (keys whole: printed with soft wrap, never cut or folded)."""
    purged = int(answer.get("Purged", 0))
    lines = [f"Purged {purged} {'entry' if purged == 1 else 'entries'}."]
    lines += [f"  {key}" for key in answer.get("Keys", [])]
    not_cached = list(answer.get("NotCached", []))
    if not_cached:
        lines.append(f"Not cached: {', '.join(not_cached)}")
    return lines


def status_table(document: Mapping[str, Any], gateway: str) -> Table:
    """One snapshot of the status document as a table (pure: tested without a terminal)."""
    counters = document.get("counters", {})
    served = sum(int(counters.get(name, 0)) for name in ("hits", "stale_served", "misses", "coalesced"))
    cached = int(counters.get("hits", 0)) + int(counters.get("stale_served", 0))
    redis = document.get("redis")
    title = (f"cams-proxy at {gateway}: hit ratio {cached / served:.1%} of {served} answers"
             if served else f"cams-proxy at {gateway}: no answers yet")
    if redis is not None:
        title += f"; redis {redis.get('mode', '?')}"
    table = Table(title=title)
    for column in ("action", "quota use", "cap/s", "queued", "refused", "mode"):
        table.add_column(column, justify="left" if column in ("action", "mode") else "right")
    for action, queue in document.get("queues", {}).items():
        depth = queue.get("depth", {})
        queued = " / ".join(f"{depth.get(p, 0)}" for p in ("interactive", "refresh", "warm"))
        table.add_row(action, f"{queue.get('use', 0):.0%}", str(queue.get("cap")), queued, str(queue.get("refused", 0)),
                      queue.get("mode", "enforce"))
    tenants = document.get("tenants", {})
    if tenants:
        table.add_section()
        for tenant, by_cache in sorted(tenants.items(), key=lambda item: -sum(item[1].values()))[:10]:
            total = sum(by_cache.values())
            hits = by_cache.get("HIT", 0) + by_cache.get("STALE", 0)
            table.add_row(f"tenant {tenant}", f"{hits / total:.0%} hits" if total else "-", "", str(total), "", "")
    return table


async def status(gateway: str, token: str, interval: float, once: bool, console: Console) -> int:
    url = f"{gateway.rstrip('/')}/admin/status"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        document = await _admin(session, "GET", url, token)
        if once:
            console.print(status_table(document, gateway))
            return 0
        with Live(status_table(document, gateway), console=console, refresh_per_second=4) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(status_table(await _admin(session, "GET", url, token), gateway))
