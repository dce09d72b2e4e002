"""Small helpers the stand-alone benchmark modules share (fairness, refresh, coalescing, nginx).

Nothing here starts a process: `bench.procs.Procs` does. This is quick mode, percentiles, simulator
fixtures and counters, the gateway's admin status, and raising this process's open-file limit.
"""

from __future__ import annotations

import json
import math
import os
import resource
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from bench.procs import Proc

QUICK: Final = os.environ.get("BENCH_QUICK", "") not in {"", "0"}
TEMPLATE: Final = "GetChatappTemplateDetail"
WABA: Final = "QueryChatappBindWaba"
#: A bench-only admin token (the gateways here listen on 127.0.0.1 and live for one run).
ADMIN_TOKEN: Final = "bench-admin-token-not-secret"
#: wrk's settings, the same as bench/hit.py uses for the hit path.
WRK_THREADS: Final = 1
WRK_CONNECTIONS: Final = 64


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


# --------------------------------------------------------------------------------- simulator fixtures


def template(index: int) -> dict[str, Any]:
    return {"TemplateCode": f"{index:032x}", "Name": f"bench_{index}", "Language": "en_US", "Category": "UTILITY",
            "TemplateType": "WHATSAPP", "AuditStatus": "pass",
            "Components": [{"Type": "BODY", "Text": f"Bench template {index}: hello {{{{1}}}}"}]}


def templates_document(count: int, space: str = "77000000000001") -> dict[str, Any]:
    """One customer space holding ``count`` templates (codes ``f"{i:032x}"``, all ``en_US``)."""
    return {"spaces": [{"CustSpaceId": space, "IsvCode": None, "Subscribed": True,
                        "Waba": {"Id": "990000000000001", "Name": "Bench"},
                        "Templates": [template(i) for i in range(count)]}]}


def spaces_document(count: int) -> dict[str, Any]:
    """``count`` customer spaces (ids ``78`` + 12 digits), each bound to its own WABA, no templates."""
    return {"spaces": [{"CustSpaceId": space_id(i), "IsvCode": None, "Subscribed": True,
                        "Waba": {"Id": f"98{i:013d}", "Name": f"Bench WABA {i}"}, "Templates": []}
                       for i in range(count)]}


def space_id(index: int) -> str:
    return f"78{index:012d}"


def _request(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def put_fixtures(simulator: Proc, document: dict[str, Any]) -> None:
    _request("PUT", f"{simulator.url}/__sim/fixtures", document, timeout=60.0)


def sim_reset(simulator: Proc) -> None:
    _request("POST", f"{simulator.url}/__sim/reset")


def sim_stats(simulator: Proc, action: str) -> dict[str, Any]:
    """The simulator's counters for ``action`` since its last reset (``calls``, ``throttled``, ``max_in_any_1s``)."""
    stats: dict[str, Any] = _request("GET", f"{simulator.url}/__sim/stats")["actions"][action]
    return stats


def admin_status(gateway: Proc) -> dict[str, Any]:
    status: dict[str, Any] = _request("GET", f"{gateway.url}/admin/status", token=ADMIN_TOKEN)
    return status


@contextmanager
def child_env(**values: str) -> Iterator[None]:
    """Set environment variables for processes started inside the block (`bench.procs` passes this
    process's environment on). Record them on the `Proc` afterwards so its command line shows them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit); processes
    started afterwards inherit it. Returns the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"
