"""Processes the benchmarks run against, each on a free 127.0.0.1 port, and how to stop them.

Every helper returns a `Proc` that remembers its exact command line (for ``docs/benchmarks.md``) and
its log file; `Procs` is a context manager that stops everything it started, in reverse order, even
when a benchmark fails. Readiness is detected by polling (``/healthz``, ``/__sim/health``, a Redis
``PING``), not by parsing logs: a gateway runs at ``--log-level warning`` unless the benchmark asks for more
(the hit path measures the shipped ``info`` too), and then its "gateway ready" line is not printed at all. The
one exception is the network stand-in (`Procs.netem`): it picks its own ports (``--port 0``) and says them only
in its ready line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET

ROOT: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
GATEWAY_ENV: Final = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
}
#: Variables that would change how a child behaves (or route loopback traffic through a proxy).
SCRUBBED_ENV: Final = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
                       "LOG_LEVEL", "LOG_FORMAT", "REDIS_URL", "CAMS_ENDPOINT")


#: Fields of the stand-in's ready line (``netem listening listening=HOST:PORT url=http://ADMIN/ ca=PATH ...``).
NETEM_FIELD: Final = re.compile(r"(?:^|\s)(listening|url|ca)=(\S+)")


class StartError(RuntimeError):
    """A process did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def python() -> str:
    """The interpreter, relative to the project when it lives there (``.venv/bin/python``)."""
    exe = Path(sys.executable)
    return str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else sys.executable


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes]
    url: str
    log: Path
    port: int

    @property
    def command(self) -> str:
        """The command line as one would type it from the project directory."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        line = " ".join(shlex.quote(a) for a in self.argv)
        return f"{prefix} {line}" if prefix else line

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; False when it had to be killed. A process started with
        ``PYTHONFAULTHANDLER=1`` first gets SIGABRT, so its log ends with every thread's Python stack."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if self.env.get("PYTHONFAULTHANDLER"):
                    self.popen.send_signal(signal.SIGABRT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.popen.wait(timeout=3)
                if self.popen.poll() is None:
                    self.popen.kill()
                    self.popen.wait()
                return False
        return True


@dataclass
class Netem:
    """A running network stand-in (``cams-proxy netem``, docs/netem.md): ``listen`` is ``HOST:PORT`` for clients,
    ``proc.url`` its operator endpoints (``/__net/...``), ``ca`` the CA file to trust when it terminates TLS."""

    proc: Proc
    listen: str
    ca: Path | None

    @property
    def command(self) -> str:
        return self.proc.command

    def stats(self) -> dict[str, object]:
        """``GET /__net/stats``: connections accepted, idle-closed, bytes each way, the profile."""
        with urllib.request.urlopen(f"{self.proc.url}/__net/stats", timeout=5.0) as response:
            stats: dict[str, object] = json.loads(response.read())
        return stats


def netem_ready(text: str) -> dict[str, str] | None:
    """The ``listening``, ``url`` and (with a generated CA) ``ca`` fields of the first ready line in a log."""
    for line in text.splitlines():
        if "netem listening" in line:
            fields = dict(NETEM_FIELD.findall(line))
            if "listening" in fields and "url" in fields:
                return fields
    return None


def _spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    full_env.update(env or {})
    with log.open("wb") as handle:
        return subprocess.Popen(list(argv), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, cwd=ROOT)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _redis_ok(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_commands(port: int) -> int:
    """``total_commands_processed`` from a Redis server's ``INFO stats``. This INFO counts in the next
    reading, not in its own: the difference of two readings includes the first INFO."""
    with socket.create_connection((HOST, port), timeout=5.0) as sock:
        sock.sendall(b"INFO stats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536) or b"\r\n"
        header, _, body = data.partition(b"\r\n")
        size = int(header[1:]) if header.startswith(b"$") else 0
        while len(body) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":", 1)[1])
    raise RuntimeError(f"no total_commands_processed in INFO stats of redis on port {port}: {data[:200]!r}")


def wait_ready(proc: Proc, probe: Callable[[], bool], timeout: float = 30.0) -> Proc:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return proc
        if not proc.alive():
            raise StartError(f"{proc.name} exited early ({proc.popen.returncode}): {proc.command}\n{proc.log_tail()}")
        time.sleep(0.05)
    proc.stop()
    raise StartError(f"{proc.name} not ready after {timeout:.0f}s: {proc.command}\n{proc.log_tail()}")


@dataclass
class Procs:
    """Starts processes into ``workdir`` (logs) and stops all of them on exit, newest first."""

    workdir: Path
    started: list[Proc] = field(default_factory=list)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()

    def stop(self, proc: Proc, timeout: float = 10.0) -> bool:
        stopped = proc.stop(timeout)
        if proc in self.started:
            self.started.remove(proc)
        return stopped

    def _start(self, name: str, argv: list[str], url: str, port: int, probe: Callable[[], bool],
               env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        popen = _spawn(name, argv, log, env)
        proc = Proc(name, argv, dict(env or {}), popen, url, log, port)
        self.started.append(proc)
        return wait_ready(proc, probe)

    def redis(self, name: str = "redis") -> Proc:
        port = free_port()
        argv = ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
        return self._start(name, argv, f"redis://{HOST}:{port}/0", port, lambda: _redis_ok(port))

    def simulator(self, name: str = "simulator", *, latency_ms: int = 80, jitter_ms: int = 20) -> Proc:
        port = free_port()
        argv = [python(), "-m", "proxy", "simulate", "--port", str(port), "--latency-ms", str(latency_ms),
                "--jitter-ms", str(jitter_ms), "--log-level", "warning"]
        url = f"http://{HOST}:{port}"
        return self._start(name, argv, url, port, lambda: http_ok(f"{url}/__sim/health"))

    def gateway(self, name: str, upstream: str, *, redis_url: str | None = None,
                extra: Sequence[str] = (), profile_to: Path | None = None,
                env: Mapping[str, str] | None = None) -> Proc:
        """``python -m proxy serve``; with ``profile_to``, under ``cProfile`` (written when it stops); ``env`` is
        added to the AccessKey variables."""
        port = free_port()
        profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        argv = [python(), *profiler, "-m", "proxy", "serve", "--port", str(port), "--upstream", upstream,
                "--log-level", "warning"]
        if redis_url:
            argv += ["--redis-url", redis_url]
        argv += list(extra)
        url = f"http://{HOST}:{port}"
        return self._start(name, argv, url, port, lambda: http_ok(f"{url}/healthz"),
                           env={**GATEWAY_ENV, **(env or {})})

    def netem(self, name: str, target: str, *, tls: bool = False, handshake_ms: float = 0.0,
              latency_ms: float = 0.0, jitter_ms: float = 0.0, idle_close_s: float = 0.0,
              seed: int | None = None) -> Netem:
        """``python -m proxy netem`` on free ports in front of ``target`` (``HOST:PORT``), every value explicit (its
        own defaults model a WAN); with ``tls``, its generated CA is written next to the log. Ready when its one
        ready line is logged (``--log-level info``: it logs nothing per connection but warnings)."""
        argv = [python(), "-m", "proxy", "netem", "--port", "0", "--admin-port", "0", "--target", target,
                "--handshake-ms", f"{handshake_ms:g}", "--latency-ms", f"{latency_ms:g}", "--jitter-ms",
                f"{jitter_ms:g}", "--idle-close-s", f"{idle_close_s:g}", "--log-level", "info", "--log-format",
                "console"]
        if seed is not None:
            argv += ["--seed", str(seed)]
        if tls:
            argv += ["--tls", "--ca-out", str(self.workdir / f"{name}-ca.pem")]
        log = self.workdir / f"{name}.log"
        popen = _spawn(name, argv, log)
        proc = Proc(name, argv, {}, popen, "", log, 0)
        self.started.append(proc)
        ready: dict[str, str] = {}

        def probe() -> bool:
            try:
                fields = netem_ready(log.read_text(errors="replace"))
            except OSError:
                return False
            ready.update(fields or {})
            return fields is not None

        wait_ready(proc, probe)
        proc.url, proc.port = ready["url"].rstrip("/"), int(ready["listening"].rpartition(":")[2])
        return Netem(proc, ready["listening"], Path(ready["ca"]) if "ca" in ready else None)

    def bare(self, source: str, name: str = "bare-aiohttp", processes: int = 1) -> Proc:
        """`bench.bare`: answers every GET with the body and Content-Type ``source`` answered at start-up; with
        ``processes`` > 1, that many on one port (``SO_REUSEPORT``), children of the one process started."""
        port = free_port()
        argv = [python(), "-m", "bench.bare", "--port", str(port), "--source", source]
        if processes > 1:
            argv += ["--processes", str(processes)]
        url = f"http://{HOST}:{port}"
        return self._start(name, argv, url, port, lambda: http_ok(f"{url}/healthz"))


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (field 3, the state, is index 0)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``; 0.0 elsewhere)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (children, their children, ...), from the parent pid in each
    ``/proc/N/stat``: ``/proc/PID/task/TID/children`` needs CONFIG_PROC_CHILDREN, which not every kernel has."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def tree_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of ``pid`` and every process under it: a ``--workers N`` supervisor and its workers.
    A worker that exits between two readings takes its time with it; none does during a benchmark."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in descendants(pid))


def machine_cpu_seconds() -> tuple[float, float]:
    """``(busy, steal)`` since boot, over all cores, from ``/proc/stat``: user + nice + system CPU seconds (interrupt
    time not included), and the seconds the hypervisor gave to someone else. (0.0, 0.0) where there is no /proc."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system) / tick, steal / tick
