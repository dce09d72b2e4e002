"""Fixtures: a real redis-server and a real simulator process, each on a free port."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import Process, free_port, start_cli


@pytest.fixture(scope="session")
def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is not installed: run `make test`, which installs it, or apt-get install "
                    "redis-server", pytrace=False)
    return path


def start_redis(binary: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import redis as redis_sync

    client = redis_sync.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            if client.ping():
                break
        except redis_sync.ConnectionError:
            time.sleep(0.025)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def redis_url(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the suite's own, shared by the session (tests flush what they use)."""
    proc, url = start_redis(redis_binary, tmp_path_factory.mktemp("redis"))
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def simulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """``python -m proxy simulate --port 0`` with short latency, for tests that need a separate process
    (the sync SDK blocks the event loop, so it cannot share one with the server)."""
    log = tmp_path_factory.mktemp("sim") / "simulator.log"
    process = start_cli(["simulate", "--port", "0", "--latency-ms", "3", "--jitter-ms", "1", "--seed", "7"], log)
    yield process
    process.stop()


@pytest.fixture
def sim_url(simulator_process: Process) -> str:
    """The simulator's base URL, its counters, fixtures and faults reset for this test."""
    response = requests.post(f"{simulator_process.url}/__sim/reset?all=1", timeout=5)
    response.raise_for_status()
    return simulator_process.url
