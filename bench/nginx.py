"""The hit path against nginx ``proxy_cache`` serving the same bytes.

Three servers answer one template URL from memory: bare aiohttp (`bench.bare`: the bytes and nothing
else), the gateway (memory cache, a hit), and nginx 1 worker with ``proxy_cache`` in front of that gateway,
warmed so it answers the URL from its own cache (``X-Cache-Status: HIT``, an added header; the gateway's
hit count does not move during nginx's rounds). wrk (1 thread, 64 connections, as ``bench/hit.py``
uses for the hit path) runs against each in interleaved rounds (rotating order, after a warm-up of each);
the report gives the medians and the ratios to bare aiohttp, and each server's CPU per request.

nginx is C with a file-backed cache read through the page cache; the gateway and bare aiohttp are one
Python process each. The point is the comparison: what a generic C cache in front would do for the hit
path, not a target for the gateway (nginx knows nothing of the upstream budget, coalescing across replicas,
tenants or purges).

    python -m bench.nginx               # BENCH_QUICK=1: 3 rounds of 2 s instead of 5 of 6 s
"""

from __future__ import annotations

import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from bench.common import ADMIN_TOKEN, QUICK, WRK_CONNECTIONS, WRK_THREADS, admin_status, child_env
from bench.procs import HOST, ROOT, Proc, Procs, free_port, http_ok, tree_cpu_seconds
from bench.wrk import WrkResult, ensure_wrk, run_wrk

HIT_PATH: Final = ("/v1/GetChatappTemplateDetail?CustSpaceId=28251486512358&Language=en_US"
                   "&TemplateCode=744c4b5c79c9432497a075bdfca36bf5")
#: Longer than the run, so the gateway's entry cannot expire between rounds (as bench/hit.py's hit path).
GATEWAY_FLAGS: Final = ("--ttl", "GetChatappTemplateDetail=3600")
ROUNDS: Final = 3 if QUICK else 5
ROUND_SECONDS: Final = 2 if QUICK else 6
WARMUP_SECONDS: Final = 1 if QUICK else 2
TARGETS: Final = ("bare", "gateway", "nginx")
LABELS: Final = {"bare": "bare aiohttp (same body)", "gateway": "gateway, memory cache (hit)",
                 "nginx": "nginx 1 worker, `proxy_cache` (hit)"}

NGINX_CONF: Final = """\
# bench/nginx.py: nginx proxy_cache in front of one gateway, everything under {prefix}
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=cams:10m max_size=64m inactive=2h use_temp_path=off;
    upstream gateway {{
        server {host}:{gateway_port};
        keepalive 16;
    }}
    server {{
        listen {host}:{port};
        location = /__nginx/health {{ return 200 "ok\\n"; }}
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache cams;
            proxy_cache_key $request_uri;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx, installed from Debian's packages by scripts/ensure-nginx.sh when missing (as root)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found:
        return found
    subprocess.run([str(ROOT / "scripts" / "ensure-nginx.sh")], check=True)
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise SystemExit("bench.nginx needs nginx (Debian/Ubuntu: apt-get install nginx-light)")
    return found


def nginx_version(binary: str) -> str:
    completed = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (completed.stderr or completed.stdout).strip().removeprefix("nginx version: ").replace("nginx/", "")


def start_nginx(procs: Procs, workdir: Path, gateway: Proc) -> tuple[Proc, Path]:
    prefix = workdir / "nginx"
    for sub in ("", "client_body", "proxy_temp", "fastcgi", "uwsgi", "scgi", "cache"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    # As root the master hands the worker to `nobody`, which cannot enter this private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(prefix=prefix, user=user, host=HOST, port=port, gateway_port=gateway.port))
    binary = nginx_binary()
    argv = [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    subprocess.run([*argv[:-2], "-t", "-q"], check=True)
    url = f"http://{HOST}:{port}"
    proc = procs._start("nginx", argv, url, port, lambda: http_ok(f"{url}/__nginx/health"))
    return proc, conf


def _get(url: str) -> tuple[int, dict[str, str], bytes, int]:
    """Status, headers (as sent, in order), body, and the size of the status line and headers in bytes."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=15)
    try:
        connection.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
        response = connection.getresponse()
        body = response.read()
        headers = list(response.getheaders())
        size = len(f"HTTP/1.1 {response.status} {response.reason}\r\n") + sum(
            len(f"{name}: {value}\r\n") for name, value in headers) + 2
        return response.status, dict(headers), body, size
    finally:
        connection.close()


@dataclass(frozen=True)
class Measured:
    wrk: WrkResult
    server_cpu_s: float

    @property
    def us_per_request(self) -> float:
        return self.server_cpu_s / self.wrk.requests * 1e6 if self.wrk.requests else 0.0

    @property
    def busy(self) -> float:
        return self.server_cpu_s / self.wrk.seconds if self.wrk.seconds else 0.0


@dataclass
class NginxResult:
    rounds: list[dict[str, Measured]]
    body_bytes: int
    header_bytes: dict[str, int]
    nginx_version: str
    gateway_hits_during_nginx: int
    checks: list[str]
    commands: list[str] = field(default_factory=list)
    config: str = ""

    def median(self, target: str, attribute: str = "requests_per_s") -> float:
        def value(m: Measured) -> float:
            return float(getattr(m.wrk, attribute) if hasattr(m.wrk, attribute) else getattr(m, attribute))

        return float(statistics.median(value(r[target]) for r in self.rounds))

    def ratio(self, target: str, to: str = "bare") -> float:
        return self.median(target) / self.median(to)

    def round_ratios(self, target: str) -> list[float]:
        return [r[target].wrk.requests_per_s / r["bare"].wrk.requests_per_s for r in self.rounds]

    @property
    def clean(self) -> bool:
        return all(m.wrk.clean for r in self.rounds for m in r.values())

    def rows(self) -> list[tuple[str, float]]:
        """(label, median req/s) per target, for `bench.plots.plot_hit_path`."""
        return [(LABELS[t].replace("`", ""), self.median(t)) for t in TARGETS]


def run_nginx(procs: Procs, workdir: Path) -> NginxResult:
    ensure_wrk()
    binary = nginx_binary()
    simulator = procs.simulator("simulator-nginx")
    with child_env(PROXY_ADMIN_TOKEN=ADMIN_TOKEN):
        gateway = procs.gateway("gateway-nginx", simulator.url, extra=GATEWAY_FLAGS)
    gateway.env["PROXY_ADMIN_TOKEN"] = ADMIN_TOKEN
    checks: list[str] = []
    status, _h, fill, _s = _get(gateway.url + HIT_PATH)
    status, gateway_headers, gateway_body, gateway_header_bytes = _get(gateway.url + HIT_PATH)
    if status != 200 or gateway_headers.get("X-Cache") != "HIT":
        raise RuntimeError(f"gateway: expected a HIT, got {status} {gateway_headers.get('X-Cache')}: {fill[:200]!r}")
    nginx, conf = start_nginx(procs, workdir, gateway)
    seen = [_get(nginx.url + HIT_PATH)[1].get("X-Cache-Status", "-") for _ in range(3)]
    status, nginx_headers, nginx_body, nginx_header_bytes = _get(nginx.url + HIT_PATH)
    if status != 200 or nginx_headers.get("X-Cache-Status") != "HIT":
        raise RuntimeError(f"nginx: expected X-Cache-Status HIT after warming ({seen}), got {status} "
                           f"{nginx_headers.get('X-Cache-Status')}")
    if nginx_body != gateway_body:
        raise RuntimeError("nginx does not answer the gateway's body for the URL")
    checks.append(f"nginx's first answers were X-Cache-Status {', '.join(seen)}, then HIT; its body is the "
                  f"gateway's {len(gateway_body):,} bytes")
    bare = procs.bare(gateway.url + HIT_PATH)
    status, _bare_headers, bare_body, bare_header_bytes = _get(bare.url + HIT_PATH)
    if status != 200 or bare_body != gateway_body:
        raise RuntimeError("bare aiohttp does not answer the gateway's body")
    checks.append("bare aiohttp answers the same bytes")
    servers = {"bare": bare, "gateway": gateway, "nginx": nginx}
    urls = {t: servers[t].url + HIT_PATH for t in TARGETS}
    for target in TARGETS:  # warm-up, discarded
        run_wrk(urls[target], threads=WRK_THREADS, connections=WRK_CONNECTIONS, seconds=WARMUP_SECONDS)
    rounds: list[dict[str, Measured]] = []
    gateway_hits_during_nginx = 0
    for number in range(1, ROUNDS + 1):
        shift = (number - 1) % len(TARGETS)
        results: dict[str, Measured] = {}
        for target in TARGETS[shift:] + TARGETS[:shift]:
            pid = servers[target].pid
            hits_before = admin_status(gateway)["counters"]["hits"] if target == "nginx" else 0
            before = tree_cpu_seconds(pid)
            res = run_wrk(urls[target], threads=WRK_THREADS, connections=WRK_CONNECTIONS, seconds=ROUND_SECONDS)
            results[target] = m = Measured(res, tree_cpu_seconds(pid) - before)
            if target == "nginx":
                gateway_hits_during_nginx += admin_status(gateway)["counters"]["hits"] - hits_before
            print(f"  round {number} {target:>8}: {res.requests_per_s:9,.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
                  f"p99 {res.p99_ms:6.2f} ms  CPU {m.us_per_request:5.1f} us/req ({m.busy:4.0%})", file=sys.stderr,
                  flush=True)
        rounds.append(results)
    status, nginx_headers, _b, _s = _get(nginx.url + HIT_PATH)
    checks.append(f"after the rounds nginx still answered X-Cache-Status {nginx_headers.get('X-Cache-Status')}")
    commands = [simulator.command, gateway.command, bare.command, nginx.command,
                *(rounds[0][t].wrk.command for t in TARGETS)]
    config = conf.read_text()
    for proc in (nginx, bare, gateway, simulator):
        procs.stop(proc)
    return NginxResult(rounds, len(gateway_body), {"bare": bare_header_bytes, "gateway": gateway_header_bytes,
                                                   "nginx": nginx_header_bytes},
                       nginx_version(binary), gateway_hits_during_nginx, checks, commands, config)


def section(result: NginxResult) -> list[str]:
    nginx_x = result.ratio("nginx")
    gateway_x = result.ratio("gateway")
    lines = [
        "## Hit path against nginx `proxy_cache`",
        "",
        f"The same template answer ({result.body_bytes:,} body bytes) from three servers: bare aiohttp (one "
        "process, the bytes and nothing else), the gateway (one process, memory cache, a hit), and nginx "
        f"{result.nginx_version} (Debian's package; 1 worker process, `proxy_cache` keyed on `$request_uri`, "
        "`proxy_cache_valid 200 1h`, in front of that gateway) answering from its own cache. wrk, "
        f"{WRK_THREADS} thread and {WRK_CONNECTIONS} connections for each, {ROUNDS} rounds of {ROUND_SECONDS} s "
        f"interleaved in a rotating order after a {WARMUP_SECONDS} s warm-up of each; medians of the rounds. CPU "
        "per request is the server's user + system time (nginx: master and worker) over the requests wrk "
        "completed; busy is that CPU over the run as a share of one core.",
        "",
        f"**nginx answered {nginx_x:.2f}× bare aiohttp's rate and {nginx_x / gateway_x:.2f}× the gateway's; the "
        f"gateway {gateway_x:.3f}× bare aiohttp.** nginx is C with an event loop and a cache read from a file "
        "through the page cache; the gateway and bare aiohttp are Python (aiohttp) processes. nginx in front "
        "would answer repeated calls faster, but knows nothing of the upstream budget, coalescing across "
        "replicas, tenants, freshness (it replays the stored `Age`, `X-Request-Id` and `X-Cache` of the answer "
        "it cached) or purges. With wrk's single thread on the same 2 cores, a fast server's figure is partly "
        "wrk's limit: see the busy columns (wrk's CPU is `getrusage` of the reaped wrk).",
        "",
        "| target | req/s (median) | p50 | p99 | ratio to bare | ratio per round | CPU per request | "
        "busy: server / wrk | status line + header bytes |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for target in TARGETS:
        per_round = ", ".join(f"{r:.2f}" for r in result.round_ratios(target))
        lines.append(f"| {LABELS[target]} | {result.median(target):,.0f} | {result.median(target, 'p50_ms'):.2f} ms | "
                     f"{result.median(target, 'p99_ms'):.2f} ms | {result.ratio(target):.3f}x | {per_round} | "
                     f"{result.median(target, 'us_per_request'):.1f} µs | {result.median(target, 'busy'):.0%} / "
                     f"{result.median(target, 'cpu_share'):.0%} | "
                     f"{result.header_bytes[target]} |")
    lines += [
        "",
        "Every round:",
        "",
        "| round | target | req/s | p50 | p99 | requests | non-2xx | socket errors | CPU per request |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for number, results in enumerate(result.rounds, 1):
        for target, m in results.items():
            w = m.wrk
            lines.append(f"| {number} | {target} | {w.requests_per_s:,.0f} | {w.p50_ms:.2f} ms | {w.p99_ms:.2f} ms | "
                         f"{w.requests:,} | {w.non_2xx} | {w.socket_errors} | {m.us_per_request:.1f} µs |")
    lines += [
        "",
        "Checks: " + "; ".join(result.checks) + f"; the gateway's hit counter grew by "
        f"{result.gateway_hits_during_nginx} during nginx's rounds (0: nginx answered every request from its cache)"
        + ("" if result.clean else "; **some rounds had non-2xx answers or socket errors**") + ".",
        "",
        "```sh",
        *result.commands,
        "```",
        "",
        "nginx's configuration (paths under the run's temporary directory):",
        "",
        "```nginx",
        *result.config.rstrip().splitlines(),
        "```",
        "",
    ]
    return lines


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cams-bench-nginx-") as tmp, Procs(Path(tmp)) as procs:
        result = run_nginx(procs, Path(tmp))
    print("\n".join(section(result)))


if __name__ == "__main__":
    main()
