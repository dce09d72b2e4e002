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


def _free_cluster_port() -> int:
    """A port free for both a node and its cluster bus (port + 10000)."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 29999)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def start_redis_cluster(binary: str, tmp: Path, masters: int = 3) -> tuple[list[subprocess.Popen[bytes]], str]:
    """A real Redis Cluster of ``masters`` primaries on loopback, slots split evenly; (processes, URL of one)."""
    import redis as redis_sync

    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    for index in range(masters):
        port = _free_cluster_port()
        folder = tmp / f"node-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ports.append(port)
    clients = [redis_sync.Redis(host="127.0.0.1", port=port) for port in ports]
    try:
        for client in clients:
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis_sync.ConnectionError:
                    time.sleep(0.025)
        per_node = 16384 // masters
        for index, client in enumerate(clients):
            last = 16383 if index == masters - 1 else (index + 1) * per_node - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * per_node, last)
            if index:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
        for _ in range(400):
            infos = [client.execute_command("CLUSTER", "INFO") for client in clients]
            if all(b"cluster_state:ok" in info and b"cluster_known_nodes:%d" % masters in info for info in infos):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    finally:
        for client in clients:
            client.close()
    return procs, f"redis://127.0.0.1:{ports[0]}"


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
