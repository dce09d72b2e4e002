"""wrk: make sure it is installed, run it, and parse its ``--latency`` report."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass, replace
from typing import Final

_UNITS: Final = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME: Final = r"([\d.]+)(us|ms|s|m|h)"
_PERCENTILE: Final = re.compile(rf"^\s*(50|75|90|99)(?:\.0+)?%\s+{_TIME}\s*$", re.M)
_RPS: Final = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL: Final = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_NON_2XX: Final = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS: Final = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    url: str
    command: str
    requests_per_s: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    #: wrk's own user + system CPU time (``getrusage`` of reaped children around the run).
    cpu_s: float = 0.0

    @property
    def cpu_share(self) -> float:
        """wrk's CPU as a share of one core over the run."""
        return self.cpu_s / self.seconds if self.seconds else 0.0

    @property
    def clean(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0


def ensure_wrk() -> str:
    """The wrk binary; installs Debian's package when missing and running as root, else stops with one line."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing Debian's wrk package", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("make bench needs wrk (Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk)")


def wrk_version() -> str:
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = (completed.stdout or completed.stderr).strip()
    match = re.match(r"wrk (\S+)(?: \[(\w+)\])?", text)
    if not match:
        return text.splitlines()[0] if text else "unknown"
    return f"{match.group(1)} ({match.group(2)})" if match.group(2) else match.group(1)


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse(output: str, url: str = "", command: str = "") -> WrkResult:
    """Requests/s and the latency distribution from wrk's ``--latency`` output."""
    percentiles = {int(p): _ms(v, u) for p, v, u in _PERCENTILE.findall(output)}
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None or not {50, 75, 90, 99} <= percentiles.keys():
        raise WrkError(f"cannot parse wrk's output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    socket_errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        url=url,
        command=command,
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles[50],
        p75_ms=percentiles[75],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000.0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
    )


def wrk_argv(url: str, *, threads: int, connections: int, seconds: int) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, *, threads: int = 1, connections: int = 64, seconds: int = 8) -> WrkResult:
    """One wrk run. Its CPU time is the growth of this process's reaped children's time, so nothing else
    may be reaped meanwhile (the benchmark runs one wrk at a time and stops no process during it)."""
    argv = wrk_argv(url, threads=threads, connections=connections, seconds=seconds)
    command = " ".join([*argv[:-1], f"'{url}'"])
    before = _children_cpu_s()
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    cpu_s = _children_cpu_s() - before
    if completed.returncode != 0:
        raise WrkError(f"{command} failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return replace(parse(completed.stdout, url, command), cpu_s=cpu_s)
