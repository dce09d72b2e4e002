"""`make run` (scripts/run.sh): the simulator and a gateway in front of it, stopped by Ctrl-C.

The script is started as a terminal would run it: in a process group of its own (a session here), SIGINT sent to
the whole group. Twice: with SIGINT at its default, as from a shell, and ignored, as in the background of another
script (where bash cannot trap it). Either way it must exit 0 without a word of alarm, and leave nothing behind;
a component that dies on its own must still be reported, with a non-zero status. A port already taken is refused
before the banner, and the gateway is never started against whatever answers there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests

from proxy.settings import GATEWAY_OPTIONS
from proxy.simulator.settings import SIMULATOR_OPTIONS
from tests.support import ROOT, SEED_SPACE, SEED_TEMPLATE, free_port

RUN_SH = ROOT / "scripts" / "run.sh"
SETTINGS = frozenset(option.env for option in (*GATEWAY_OPTIONS, *SIMULATOR_OPTIONS))
ALARMS = ("exited", "Error", "Traceback", "error", "killing")
BANNER = "cams-proxy gateway"


def with_sigint(disposition: int, argv: list[str]) -> list[str]:
    """``argv`` started with SIGINT at ``disposition`` (SIG_DFL as from a shell, SIG_IGN as from a script's ``&``)."""
    name = "SIG_IGN" if disposition == signal.SIG_IGN else "SIG_DFL"
    return [sys.executable, "-c", f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{name}); "
            "os.execvp(sys.argv[1], sys.argv[1:])", *argv]


def session_members(sid: int) -> list[int]:
    """The live processes of session ``sid`` (each script runs in a session of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


class Run:
    """scripts/run.sh on two free ports, output to a file."""

    def __init__(self, tmp: Path, *, sigint: int = signal.SIG_DFL,
                 sim_port: int | None = None, proxy_port: int | None = None, **env: str) -> None:
        self.sim_port = sim_port or free_port()
        self.proxy_port = proxy_port or free_port()
        while self.proxy_port == self.sim_port:
            self.proxy_port = free_port()
        self.output = tmp / "run.out"
        full_env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
        full_env.update(SIM_PORT=str(self.sim_port), PROXY_PORT=str(self.proxy_port), **env)
        with self.output.open("w") as out:
            # A new session: its own process group, as a terminal gives a foreground job; SIGINT set as asked.
            self.proc = subprocess.Popen(with_sigint(sigint, ["bash", str(RUN_SH)]), stdout=out,
                                         stderr=subprocess.STDOUT, env=full_env, cwd=ROOT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.proxy_port}"

    def text(self) -> str:
        return self.output.read_text()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"scripts/run.sh exited ({self.proc.returncode}):\n{self.text()}")
            if "gateway ready" in self.text():
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return
            time.sleep(0.05)
        pytest.fail(f"scripts/run.sh not ready after {timeout} s:\n{self.text()}")

    def role(self, command: str) -> int:
        (pid,) = [pid for pid in session_members(self.proc.pid) if cmdline(pid)[1:4] == ["-m", "proxy", command]]
        return pid

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            left = {pid: cmdline(pid) for pid in session_members(self.proc.pid)}
            pytest.fail(f"scripts/run.sh still running {timeout} s later ({left}):\n{self.text()}")

    def kill_session(self) -> None:
        for pid in session_members(self.proc.pid):  # the session this test started, nothing else
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def started(**kwargs: object) -> Run:
        run = Run(tmp_path, **kwargs)  # type: ignore[arg-type]
        runs.append(run)
        return run

    yield started
    for run in runs:
        run.kill_session()


def assert_all_gone(sid: int) -> None:
    deadline = time.monotonic() + 5
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {pid: cmdline(pid) for pid in session_members(sid)} == {}


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["from-a-shell", "sigint-ignored"])
def test_ctrl_c_stops_both_with_status_0_and_no_alarm(start: Callable[..., Run], sigint: int) -> None:
    run = start(sigint=sigint)
    run.wait_ready()
    assert BANNER in run.text()
    sim, gateway = run.role("simulate"), run.role("serve")
    # Wired as printed: the gateway in front of this simulator.
    params = {"CustSpaceId": SEED_SPACE, "Language": "en_US", "TemplateCode": SEED_TEMPLATE}
    answer = requests.get(f"{run.url}/v1/GetChatappTemplateDetail", params=params, timeout=10)
    assert answer.status_code == 200 and answer.headers["X-Cache"] == "MISS", answer.text
    health = requests.get(f"http://127.0.0.1:{run.sim_port}/__sim/health", timeout=5).json()
    assert health == {"status": "ok", "pid": sim}

    os.killpg(run.proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    assert run.wait() == 0, run.text()
    output = run.text()
    assert not [alarm for alarm in ALARMS if alarm in output], output
    assert "gateway stopped" in output
    assert_all_gone(run.proc.pid)
    assert not any(map(alive, (sim, gateway)))


def test_ctrl_c_during_start_up_exits_0(start: Callable[..., Run]) -> None:
    run = start()
    deadline = time.monotonic() + 10
    while not any(cmdline(pid)[1:4] == ["-m", "proxy", "simulate"] for pid in session_members(run.proc.pid)):
        assert time.monotonic() < deadline and run.proc.poll() is None, run.text()
        time.sleep(0.01)
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.wait() == 0, run.text()
    output = run.text()
    assert not [alarm for alarm in ALARMS if alarm in output], output
    assert_all_gone(run.proc.pid)


@pytest.mark.parametrize(("victim", "name"), [("serve", "gateway"), ("simulate", "simulator")])
def test_a_component_that_dies_is_reported_and_fails(start: Callable[..., Run], victim: str, name: str) -> None:
    run = start()
    run.wait_ready()
    os.kill(run.role(victim), signal.SIGKILL)
    status = run.wait()
    assert status != 0, run.text()
    assert f"make run: the {name} exited (status {128 + signal.SIGKILL})" in run.text()
    assert_all_gone(run.proc.pid)


def listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(("taken", "env"), [("sim_port", "SIM_PORT"), ("proxy_port", "PROXY_PORT")])
def test_a_taken_port_is_refused_before_anything_starts(start: Callable[..., Run], taken: str, env: str) -> None:
    with listener() as blocker:
        port = blocker.getsockname()[1]
        run = start(**{taken: port})
        status = run.wait()
    output = run.text()
    assert status == 1, output
    what = "simulator" if env == "SIM_PORT" else "gateway"
    assert f"make run: port {port} (the {what}, {env}) is already in use" in output
    assert BANNER not in output and "gateway ready" not in output and "Traceback" not in output, output


class FakeSimulator(BaseHTTPRequestHandler):
    """Some other server that answers /__sim/health, as an older simulator left running would."""

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_another_server_answering_where_it_looks_is_not_taken_for_its_simulator(start: Callable[..., Run]) -> None:
    # The simulator listens on 127.0.0.2 (SIM_HOST): its port there is free, and the health check on 127.0.0.1
    # finds the foreign server. Such a server could also take the port between the check and the bind.
    foreign = HTTPServer(("127.0.0.1", 0), FakeSimulator)
    thread = threading.Thread(target=foreign.serve_forever, daemon=True)
    thread.start()
    try:
        run = start(sim_port=foreign.server_address[1], SIM_HOST="127.0.0.2")
        status = run.wait()
    finally:
        foreign.shutdown()
        foreign.server_close()
    output = run.text()
    assert status == 1, output
    assert f"make run: another server answers on port {foreign.server_address[1]}, not the simulator" in output
    assert BANNER not in output and "gateway ready" not in output, output
    assert_all_gone(run.proc.pid)


def test_a_simulator_that_cannot_start_stops_it_before_the_gateway(start: Callable[..., Run], tmp_path: Path) -> None:
    run = start(SIM_FIXTURES=str(tmp_path / "missing.json"))
    status = run.wait()
    output = run.text()
    assert status == 1, output
    assert "SIM_FIXTURES" in output and "make run: the simulator exited during start-up" in output
    assert BANNER not in output and "gateway ready" not in output, output
