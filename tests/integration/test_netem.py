"""The network stand-in as a real process in front of real servers: bytes intact and in order under jitter, TLS
with a generated CA (trusted and not), a real handshake delay, idle closes, cuts, and profile updates.

Time assertions are lower bounds only (the stand-in adds delay; a loaded machine only adds more)."""

from __future__ import annotations

import http.client
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.netem import Netem, start_netem
from tests.support import ROOT


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.ended = 0  # connections whose client side ended (EOF or reset), seen by the target
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class EchoHandler(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass
        finally:
            with self.server.lock:
                self.server.ended += 1


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def netem_factory(tmp_path: Path) -> Iterator[list[Netem]]:
    started: list[Netem] = []
    yield started
    for netem in started:
        netem.stop()


def start(started: list[Netem], target: str, tmp_path: Path, **kwargs: object) -> Netem:
    netem = start_netem(target, tmp_path, **kwargs)  # type: ignore[arg-type]
    started.append(netem)
    return netem


def connect(netem: Netem, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((netem.host, netem.port), timeout=timeout)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = sock.recv(min(65536, size - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def test_bytes_arrive_intact_and_in_order_under_jitter(echo: EchoServer, tmp_path: Path,
                                                       netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path, latency_ms=5, jitter_ms=20)
    results: dict[int, bool] = {}

    def one(index: int) -> None:
        payload = b"".join(f"{index}:{i:06d};".encode() for i in range(20_000))
        with connect(netem) as sock:
            reader = threading.Thread(target=lambda: results.__setitem__(index, read_exactly(
                sock, len(payload)) == payload))
            reader.start()
            for offset in range(0, len(payload), 1500):  # many small writes: many chunks, each its own draw
                sock.sendall(payload[offset:offset + 1500])
                if offset % 30_000 == 0:
                    time.sleep(0.002)
            reader.join(30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {0: True, 1: True, 2: True}
    stats = netem.stats()
    assert stats["accepted"] == 3 and stats["bytes_up"] == stats["bytes_down"] == 3 * 20_000 * 9


def test_latency_is_added_each_way(echo: EchoServer, tmp_path: Path, netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path, latency_ms=60)
    with connect(netem) as sock:
        sock.sendall(b"warm")
        assert read_exactly(sock, 4) == b"warm"
        began = time.monotonic()
        sock.sendall(b"ping")
        assert read_exactly(sock, 4) == b"ping"
        assert time.monotonic() - began >= 0.120  # 60 ms up + 60 ms down, a lower bound


def test_half_close_is_forwarded_after_the_data_before_it(echo: EchoServer, tmp_path: Path,
                                                          netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path, latency_ms=20, jitter_ms=5)
    with connect(netem) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # FIN: the echo server answers, then ends on the forwarded EOF
        assert read_exactly(sock, 100) == b"last words"  # then EOF: read_exactly stops at it


def test_a_reader_that_stops_reading_stops_the_writer(echo: EchoServer, tmp_path: Path,
                                                      netem_factory: list[Netem]) -> None:
    """Backpressure: the stand-in queues at most ~1 MiB a direction, so a client that never reads the echo is
    soon blocked (kernel buffers on both hops included), instead of the stand-in buffering without bound."""
    netem = start(netem_factory, echo.address, tmp_path, latency_ms=1)
    block = b"z" * (1 << 20)
    sent = 0
    with connect(netem, timeout=1.0) as sock:
        with pytest.raises(TimeoutError):
            while sent < 512 << 20:
                sent += sock.send(block)
        assert sent < 128 << 20, f"{sent} bytes accepted by a path whose far end stopped reading"


def test_tls_with_the_generated_ca_and_a_real_handshake_delay(echo: EchoServer, tmp_path: Path,
                                                              netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path, tls=True, handshake_ms=300, latency_ms=10,
                  extra=("--tls-name", "cams.ap-southeast-1.aliyuncs.com"))
    assert netem.ca is not None and netem.ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    trusted = ssl.create_default_context(cafile=str(netem.ca))
    for name in ("127.0.0.1", "localhost", "cams.ap-southeast-1.aliyuncs.com"):
        began = time.monotonic()
        with trusted.wrap_socket(connect(netem), server_hostname=name) as tls:
            assert time.monotonic() - began >= 0.300, "the TLS handshake finished before the handshake delay"
            tls.sendall(b"over tls")
            assert read_exactly(tls, 8) == b"over tls"

    untrusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, but trusts no CA at all
    with pytest.raises(ssl.SSLCertVerificationError), untrusting.wrap_socket(connect(netem),
                                                                              server_hostname="localhost"):
        pass
    wrong_name = ssl.create_default_context(cafile=str(netem.ca))
    with pytest.raises(ssl.SSLCertVerificationError), wrong_name.wrap_socket(connect(netem),
                                                                              server_hostname="example.com"):
        pass
    deadline = time.monotonic() + 5
    while netem.stats()["tls_failed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert netem.stats()["tls_failed"] == 2


def test_tls_with_the_operators_own_certificate(echo: EchoServer, tmp_path: Path,
                                               netem_factory: list[Netem]) -> None:
    from proxy.netem.tls import generate

    pair = generate("gateway.internal")
    (tmp_path / "chain.pem").write_bytes(pair.cert_pem)
    (tmp_path / "key.pem").write_bytes(pair.key_pem)
    (tmp_path / "their-ca.pem").write_bytes(pair.ca_pem)
    netem = start(netem_factory, echo.address, tmp_path, handshake_ms=50,
                  extra=("--tls", "--cert", str(tmp_path / "chain.pem"), "--key", str(tmp_path / "key.pem")))
    assert netem.ca is None  # nothing generated, nothing written
    trusted = ssl.create_default_context(cafile=str(tmp_path / "their-ca.pem"))
    with trusted.wrap_socket(connect(netem), server_hostname="gateway.internal") as tls:
        tls.sendall(b"own cert")
        assert read_exactly(tls, 8) == b"own cert"


def test_idle_connections_are_closed_cleanly_on_both_sides(echo: EchoServer, tmp_path: Path,
                                                           netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path, latency_ms=10, idle_close_s=0.5)
    ended_before = echo.ended
    with connect(netem) as sock:
        sent = time.monotonic()
        sock.sendall(b"hello")
        assert read_exactly(sock, 5) == b"hello"
        assert sock.recv(10) == b""  # a clean close (FIN), not a reset
        assert time.monotonic() - sent >= 0.5
    deadline = time.monotonic() + 5
    while echo.ended == ended_before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert echo.ended == ended_before + 1, "the target side was not closed"
    assert netem.stats()["idle_closed"] == 1


def test_an_idle_keep_alive_http_connection_is_closed(tmp_path: Path, netem_factory: list[Netem]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        netem = start(netem_factory, f"127.0.0.1:{server.server_address[1]}", tmp_path, latency_ms=5,
                      idle_close_s=0.4)
        conn = http.client.HTTPConnection(netem.host, netem.port, timeout=10)
        conn.request("GET", "/")
        answer = conn.getresponse()
        assert answer.status == 200 and answer.read() == b'{"ok": true}'
        conn.request("GET", "/")  # kept alive: the same connection
        assert conn.getresponse().read() == b'{"ok": true}'
        assert conn.sock is not None
        assert conn.sock.recv(1) == b""  # then the stand-in closes it, as a server's keep-alive timeout does
        conn.close()
        assert netem.stats()["idle_closed"] == 1 and netem.stats()["accepted"] == 1
    finally:
        server.shutdown()
        server.server_close()


RESET_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionRefusedError, ConnectionAbortedError)


def test_cut_refuse_resets_open_and_new_connections_and_restore_reopens(
        echo: EchoServer, tmp_path: Path, netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path, latency_ms=5)
    with connect(netem) as open_one:
        open_one.sendall(b"before")
        assert read_exactly(open_one, 6) == b"before"
        assert netem.cut("refuse") == {"cut": "refuse", "connections_affected": 1}
        with pytest.raises(RESET_ERRORS):
            open_one.recv(10)
    with pytest.raises(RESET_ERRORS), connect(netem) as new_one:  # the reset may even beat connect() returning
        new_one.recv(10)
    stats = netem.stats()
    assert stats["cut"] == "refuse" and stats["refused"] == 1 and stats["reset_by_cut"] == 1
    assert netem.restore() == {"cut": "open"}
    with connect(netem) as after:
        after.sendall(b"after")
        assert read_exactly(after, 5) == b"after"


def test_cut_blackhole_makes_bytes_vanish_and_dead_connections_stay_dead(
        echo: EchoServer, tmp_path: Path, netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path, latency_ms=5)
    with connect(netem, timeout=0.5) as open_one, connect(netem, timeout=0.5) as idle_one:
        open_one.sendall(b"before")
        assert read_exactly(open_one, 6) == b"before"
        idle_one.sendall(b"x")
        assert read_exactly(idle_one, 1) == b"x"
        assert netem.cut("blackhole")["connections_affected"] == 2
        open_one.sendall(b"into the void")
        with pytest.raises(TimeoutError):
            open_one.recv(10)  # nothing comes back, nothing is closed
        with connect(netem, timeout=0.5) as new_one:  # accepted (the kernel answers), then silence
            new_one.sendall(b"hello?")
            with pytest.raises(TimeoutError):
                new_one.recv(10)
        stats = netem.stats()
        assert stats["cut"] == "blackhole" and stats["blackholed"] == 1 and stats["silenced_by_cut"] == 2
        assert stats["dead_connections"] >= 2 and stats["bytes_vanished"] >= len(b"into the void")

        netem.restore()
        with connect(netem) as after:
            after.sendall(b"after")
            assert read_exactly(after, 5) == b"after"
        # The dead connections stay dead: bytes sent on one now are answered with a reset.
        idle_one.sendall(b"anyone?")
        with pytest.raises((*RESET_ERRORS, TimeoutError)):
            for _ in range(20):
                if idle_one.recv(10) == b"":
                    break
        assert netem.stats()["dead_connections"] <= 1


def test_profile_updates_are_validated_and_apply_to_new_chunks(echo: EchoServer, tmp_path: Path,
                                                               netem_factory: list[Netem]) -> None:
    netem = start(netem_factory, echo.address, tmp_path)
    bad = requests.put(f"{netem.admin_url}/__net/profile", json={"latency_ms": -5, "warp": 1}, timeout=5)
    assert bad.status_code == 400
    message = bad.json()["message"]
    assert "latency_ms must be a finite number >= 0" in message and "unknown field 'warp'" in message
    not_json = requests.put(f"{netem.admin_url}/__net/profile", data=b"{nope", timeout=5)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["message"]
    bad_cut = requests.post(f"{netem.admin_url}/__net/cut", json={"mode": "unplug"}, timeout=5)
    assert bad_cut.status_code == 400 and "refuse" in bad_cut.json()["message"]
    assert netem.stats()["profile"]["up"] == {"latency_ms": 0.0, "jitter_ms": 0.0}  # nothing changed

    profile = netem.set_profile(up_latency_ms=80, down_latency_ms=40)
    assert profile["up"]["latency_ms"] == 80 and profile["down"]["latency_ms"] == 40
    with connect(netem) as sock:
        began = time.monotonic()
        sock.sendall(b"slow")
        assert read_exactly(sock, 4) == b"slow"
        assert time.monotonic() - began >= 0.120


def test_bad_settings_stop_with_one_line_each() -> None:
    result = subprocess.run([sys.executable, "-m", "proxy", "netem", "--target", "nowhere", "--latency-ms", "-1",
                             "--cert", str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT,
                            timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "cams-proxy netem: invalid setting --target='nowhere': must be HOST:PORT, e.g. 127.0.0.1:8081"
    assert "invalid setting --latency-ms='-1'" in lines[1] and len(lines) == 2
    both = subprocess.run([sys.executable, "-m", "proxy", "netem", "--cert", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert both.returncode == 2 and "give both" in both.stderr and "need --tls" in both.stderr


def test_the_flag_table_in_docs_netem_is_generated_from_the_option_table() -> None:
    from proxy.netem.settings import NETEM_OPTIONS
    from proxy.reference import options_table

    assert options_table(NETEM_OPTIONS) in (ROOT / "docs" / "netem.md").read_text(), (
        "paste options_table(NETEM_OPTIONS) into docs/netem.md's Flags section")
