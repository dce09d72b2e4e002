"""Commands for operators, talking to a running gateway over HTTP: ``warm``, ``purge`` and ``status``.

* ``cams-proxy warm --file keys.csv``: prefill the cache. The CSV has an ``Action`` column and one column per
  parameter (empty cells are left out). Every row is validated before anything is sent, and a problem is named
  in CSV terms (file, line, column): no ``Action`` column, a column no action takes, a value in a column the
  row's action does not take, a missing or invalid value. Then the calls go
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
import difflib
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import aiohttp
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from proxy.actions import ACTIONS
from proxy.admission.fair import Priority
from proxy.errors import RequestRejected
from proxy.validation import validate

DEFAULT_GATEWAY: Final = "http://127.0.0.1:8080"
WARM_TENANT: Final = "warm-up"
MAX_ATTEMPTS: Final = 30
#: The width of output that is not a terminal (a pipe, a file): wide enough that nothing is wrapped, so tables
#: take the width of their content and a long key or error stays on one line.
UNWRAPPED_WIDTH: Final = 100_000
#: At most this many of a CSV's problems are listed, one a line.
MAX_PROBLEMS_SHOWN: Final = 10


class OperatorError(Exception):
    """Problems to report, one a line (exit status 1)."""


def make_console(*, stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A console for operator output that never folds a line (``soft_wrap``): a key or an error message prints
    whole, to copy in one piece. On a terminal tables fit its width; anywhere else nothing is wrapped at all
    (rich would assume 80 columns) and no colour or cursor codes are written."""
    console = Console(stderr=stderr, file=file, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, file=file, soft_wrap=True, width=UNWRAPPED_WIDTH, color_system=None)
    return console


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
    console = make_console()
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
        errors = make_console(stderr=True)
        for line in str(exc).splitlines():
            errors.print(f"cams-proxy {args.command}: {line}", markup=False, highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------------------------------------- warm


@dataclass(frozen=True)
class WarmCall:
    line: int
    action: str
    params: dict[str, str]


def _quote(text: str, limit: int = 60) -> str:
    """A cell or column name as it appears in a message: quoted, escaped, truncated."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _in_csv_terms(exc: RequestRejected) -> str:
    """A validation message about a parameter, said of the column of that name."""
    message = exc.message.rstrip(".")
    if message.startswith("The parameter "):
        return message.removeprefix("The parameter ")
    return message[:1].lower() + message[1:]


def _check_header(path: Path, names: list[str]) -> list[str]:
    """The problems of a header row: no ``Action`` column, a column named twice, a column no action takes."""
    columns = sorted({param.name for spec in ACTIONS.values() for param in spec.params})
    problems: list[str] = []
    if "Action" not in names:
        problems.append(f"{path}: no Action column (header: {', '.join(names)})")
    for name in sorted({name for name in names if name and names.count(name) > 1}):
        problems.append(f"{path}: column {_quote(name)} appears {names.count(name)} times")
    for name in dict.fromkeys(names):
        if name and name != "Action" and name not in columns:
            close = difflib.get_close_matches(name, ["Action", *columns], n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(f"{path}: unknown column {_quote(name)} ({hint}the actions take: {', '.join(columns)})")
    return problems


def _check_row(line: int, names: list[str], row: list[str]) -> WarmCall | str:
    """The data row at ``line`` as a call, or its first problem (without the file and line)."""
    known = ", ".join(ACTIONS)
    if len(row) > len(names):
        return f"{len(row)} cells, but the header has {len(names)} columns"
    cells = dict(zip(names, row, strict=False))
    action = cells.get("Action", "")
    if not action:
        return f"Action is empty (one of {known})"
    spec = ACTIONS.get(action)
    if spec is None:
        return f"Action {_quote(action)} is not one of {known}"
    params: list[tuple[str, str]] = []
    for index, (name, value) in enumerate(zip(names, row, strict=False), start=1):
        if not value or name == "Action":
            continue
        if not name:
            return f"a value in column {index}, which the header leaves unnamed"
        if name not in spec.by_name:
            return (f"{name} is not a parameter of {spec.name} (it takes {', '.join(spec.by_name)}): "
                    f"leave the cell empty")
        params.append((name, value))
    try:
        return WarmCall(line, spec.name, validate(spec, params))
    except RequestRejected as exc:
        return _in_csv_terms(exc)


def read_calls(path: Path) -> list[WarmCall]:
    """Every row of ``path`` as a validated call, before anything is sent; raises `OperatorError` naming the
    file, the line and the column of each problem (CSV terms: a column is a parameter, empty cells are left out).

    The header row names ``Action`` and parameter columns (names are stripped of spaces); a column no action takes
    is refused, so is a value in a column the row's action does not take. Blank rows are skipped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader, None)
                rows: list[tuple[int, list[str]]] = []  # (the line the row starts on, its cells)
                start = reader.line_num + 1
                for row in reader:
                    rows.append((start, row))
                    start = reader.line_num + 1
            except csv.Error as exc:
                raise OperatorError(f"{path} line {reader.line_num}: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise OperatorError(f"cannot read {path}: {exc}") from exc
    example = "Action,CustSpaceId,Language,TemplateCode"
    if header is None or not any(cell.strip() for cell in header):
        raise OperatorError(f"{path}: no header row (the first line names Action and the parameter columns, e.g. "
                            f"{example})")
    names = [cell.strip() for cell in header]
    problems = _check_header(path, names)
    if problems:
        raise OperatorError("\n".join(problems))
    calls: list[WarmCall] = []
    for line, row in rows:
        if not any(row):
            continue
        checked = _check_row(line, names, row)
        if isinstance(checked, str):
            problems.append(f"{path} line {line}: {checked}")
        else:
            calls.append(checked)
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"{path}: and {len(problems) - MAX_PROBLEMS_SHOWN} more lines with problems")
        raise OperatorError("\n".join(shown))
    if not calls:
        raise OperatorError(f"{path}: no calls (a header row such as {example}, then one row a call)")
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
    console.print(table, soft_wrap=False)  # tables are laid out to the console's width (soft wrap would skew titles)
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


#: The queue priorities, highest first, as the status document names them (``depth`` per priority).
QUEUE_PRIORITIES: Final = tuple(priority.name.lower() for priority in sorted(Priority))
#: How many tenants the status view lists (the busiest).
TENANTS_SHOWN: Final = 10


def status_table(document: Mapping[str, Any], gateway: str) -> Table:
    """The queues of one status snapshot, an action a row (pure: tested without a terminal). Calls waiting for
    an upstream slot are counted per priority, each in a column headed ``queued`` and the priority: ``interactive``
    (clients' misses), ``refresh`` (background refreshes of stale entries), ``warm`` (``cams-proxy warm``)."""
    counters = document.get("counters", {})
    served = sum(int(counters.get(name, 0)) for name in ("hits", "stale_served", "misses", "coalesced"))
    cached = int(counters.get("hits", 0)) + int(counters.get("stale_served", 0))
    redis = document.get("redis")
    title = (f"cams-proxy at {gateway}: hit ratio {cached / served:.1%} of {served} answers"
             if served else f"cams-proxy at {gateway}: no answers yet")
    if redis is not None:
        title += f"; redis {redis.get('mode', '?')}"
    table = Table(title=Text(title))
    table.add_column("action", no_wrap=True)  # on a narrow terminal the other columns give way
    # Two-line headers ("queued" above each priority): the table fits 100 columns.
    for column in ("quota\nuse", "cap/s", *(f"queued\n{priority}" for priority in QUEUE_PRIORITIES), "refused"):
        table.add_column(column, justify="right")
    table.add_column("mode")
    for action, queue in document.get("queues", {}).items():
        depth = queue.get("depth", {})
        table.add_row(Text(action), f"{queue.get('use', 0):.0%}", str(queue.get("cap")),
                      *(str(depth.get(priority, 0)) for priority in QUEUE_PRIORITIES), str(queue.get("refused", 0)),
                      Text(str(queue.get("mode", "enforce"))))
    return table


def tenants_table(document: Mapping[str, Any]) -> Table | None:
    """The busiest tenants of one status snapshot: answers served and the share from the cache; None without any."""
    tenants = document.get("tenants", {})
    if not tenants:
        return None
    table = Table(title=f"tenants (the {TENANTS_SHOWN} busiest)" if len(tenants) > TENANTS_SHOWN else "tenants")
    table.add_column("tenant")
    table.add_column("answers", justify="right")
    table.add_column("from the cache", justify="right")
    for tenant, by_cache in sorted(tenants.items(), key=lambda item: -sum(item[1].values()))[:TENANTS_SHOWN]:
        total = sum(by_cache.values())
        hits = by_cache.get("HIT", 0) + by_cache.get("STALE", 0)
        table.add_row(Text(str(tenant)), str(total), f"{hits / total:.0%}" if total else "-")
    return table


def status_view(document: Mapping[str, Any], gateway: str) -> Group:
    """What ``status`` prints for one snapshot: the queues table, then the tenants table."""
    tenants = tenants_table(document)
    return Group(status_table(document, gateway), *([] if tenants is None else [tenants]))


async def status(gateway: str, token: str, interval: float, once: bool, console: Console) -> int:
    url = f"{gateway.rstrip('/')}/admin/status"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        document = await _admin(session, "GET", url, token)
        if once:
            console.print(status_view(document, gateway), soft_wrap=False)
            return 0
        with Live(status_view(document, gateway), console=console, refresh_per_second=4) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(status_view(await _admin(session, "GET", url, token), gateway))
