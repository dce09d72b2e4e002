"""The asyncio TCP relay of the network stand-in: its own accept loop, one `Connection` per client, two `Pipe`s each.

Per connection: the kernel has completed the TCP handshake (the client's ``connect()`` returned), then the relay
waits the handshake delay with the raw socket untouched, so the client's first bytes, a TLS ClientHello included,
wait in the socket; only then does it terminate TLS if configured (`loop.connect_accepted_socket` with the server
context: a client cannot finish its handshake before the delay), dial the target in plain TCP, and pump both ways
through one `Pipe` per direction.

Guarantees: the handshake delay is a lower bound on the client's TLS handshake (and, without TLS, on its first
relayed byte); idle connections are closed cleanly (FIN, or TLS close_notify then FIN) on both sides, never early;
a reset is a real TCP RST (``SO_LINGER`` 0); a target that cannot be dialled resets the client. Non-guarantees:
timing is late by the event loop's lag (a few ms under load); no loss, bandwidth limit or per-packet timing; with
TLS a client's half-close ends the TLS session (asyncio's TLS cannot half-close), so the answer to a half-closed TLS
request may be lost; a connection cut to a blackhole during its TLS handshake finishes the handshake first.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import asdict
from typing import Any, Final

from proxy.logs import get_logger
from proxy.netem.core import UP, Action, CutMachine, CutMode, IdleClock, Link, Profile, Verdict, on_bytes
from proxy.netem.pipe import CHUNK, Counters, Pipe, linger_zero, reset_transport

SWEEP_S: Final = 0.05  # how often idle connections are looked for
TLS_HANDSHAKE_TIMEOUT_S: Final = 30.0

log = get_logger("proxy.netem")


async def _streams(sock: socket.socket, context: ssl.SSLContext | None) -> tuple[asyncio.StreamReader,
                                                                                  asyncio.StreamWriter]:
    """Streams over an accepted socket, TLS (server side) when ``context`` is given."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, sock, ssl=context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if context else None)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class Connection:
    """One client connection and, once dialled, its target connection."""

    def __init__(self, relay: Relay, number: int, sock: socket.socket, link: Link) -> None:
        self.relay, self.number, self.sock, self.link = relay, number, sock, link
        self.client_writer: asyncio.StreamWriter | None = None
        self.target_writer: asyncio.StreamWriter | None = None
        self.idle = IdleClock(asyncio.get_running_loop().time())
        self.pipes: list[Pipe] = []
        self.done = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._phase = "delay"  # then "tls", "dial", "open"
        self._tasks: list[asyncio.Task[None]] = []
        self._reset = False

    @property
    def pending(self) -> bool:
        """Bytes wait for delivery (queued, or in a socket's write buffer)."""
        if any(pipe.queue for pipe in self.pipes):
            return True
        writers = [w for w in (self.client_writer, self.target_writer) if w is not None]
        return any(w.transport.get_write_buffer_size() > 0 for w in writers if not w.transport.is_closing())

    async def run(self) -> None:
        try:
            opened = await self._opened() if self.link is Link.LIVE else False
            if self.done.is_set():
                return
            if self.link is Link.DEAD:
                self._swallow()
            elif opened:
                self._start_pipes()
            await self.done.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            if not self._reset:
                for writer in (self.client_writer, self.target_writer):
                    if writer is not None:
                        writer.close()
            if self.client_writer is None:
                self.sock.close()  # never wrapped in a transport (an RST if reset set SO_LINGER 0)

    async def _opened(self) -> bool:
        """Run `_open`; a reset, or a cut while only the delay is running, stops it at once."""
        opening = asyncio.create_task(self._open())
        while not opening.done():
            self._interrupt.clear()
            waiter = asyncio.create_task(self._interrupt.wait())
            await asyncio.wait({opening, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not opening.done() and (self.done.is_set() or self._phase == "delay"):
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening
        return not opening.cancelled() and opening.result()  # an unexpected error is raised here

    async def _open(self) -> bool:
        """Handshake delay, TLS, target dial. False: the connection was ended (and counted)."""
        relay = self.relay
        await asyncio.sleep(relay.profile.handshake_ms / 1000.0)
        self._phase = "tls"
        try:
            reader, self.client_writer = await _streams(self.sock, relay.ssl_context)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            relay.counters.tls_failed += 1
            log.debug("netem tls handshake failed", connection=self.number, error=str(exc))
            self.reset()
            return False
        self._phase = "dial"
        try:
            target_reader, self.target_writer = await asyncio.open_connection(*relay.target)
        except OSError as exc:
            relay.counters.target_failed += 1
            log.warning("netem target unreachable", target=f"{relay.target[0]}:{relay.target[1]}", error=str(exc))
            self.reset()
            return False
        self._phase = "open"
        self.pipes = [Pipe(self, UP, reader, self.target_writer),
                      Pipe(self, "down", target_reader, self.client_writer)]
        return True

    def _start_pipes(self) -> None:
        for pipe in self.pipes:
            self._tasks += [asyncio.create_task(pipe.pump()), asyncio.create_task(pipe.deliver())]
        deliveries = self._tasks[1::2]

        def delivered(_: asyncio.Task[None]) -> None:
            if self.link is Link.LIVE and all(task.done() for task in deliveries):
                self.done.set()

        for task in deliveries:
            task.add_done_callback(delivered)

    def _swallow(self) -> None:
        """A dead path: keep reading both sides and drop everything."""
        for pipe in self.pipes:
            self.relay.counters.bytes_vanished += pipe.drop_queued()
            self._tasks.append(asyncio.create_task(pipe.pump()))
        if not self.pipes:
            self._tasks.append(asyncio.create_task(self._swallow_raw()))

    async def _swallow_raw(self) -> None:
        """A dead path before any transport: read the raw socket, drop the bytes (a restored path resets)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self.sock, CHUNK)
            except OSError:
                data = b""
            self.idle.touch(loop.time())
            if not data:
                self.done.set()
                return
            if on_bytes(self.link, self.relay.cut.mode, UP) is Action.RESET:
                self.reset()
                return
            self.relay.counters.bytes_vanished += len(data)

    def dead_end(self, direction: str) -> None:
        """A side of a dead path ended: the client leaving ends everything (quietly); the target leaving is not
        seen by the client."""
        if direction == UP:
            self.done.set()
        elif self.target_writer is not None:
            self.target_writer.close()

    def reset(self) -> None:
        """Reset both sides (TCP RST) now."""
        self._reset = True
        linger_zero(self.sock)
        if self.client_writer is not None:
            reset_transport(self.client_writer.transport)
        if self.target_writer is not None:
            reset_transport(self.target_writer.transport)
        self._interrupt.set()
        self.done.set()

    def kill(self) -> None:
        """The path died (blackhole): queued bytes vanish, nothing more crosses, nothing is closed."""
        if self.link is Link.DEAD:
            return
        self.link = Link.DEAD
        self._interrupt.set()
        if self._tasks:
            for task in self._tasks[1::2]:
                task.cancel()
            self._tasks = self._tasks[0::2]
            for pipe in self.pipes:
                self.relay.counters.bytes_vanished += pipe.drop_queued()

    def close_idle(self) -> None:
        """Idle: close both sides cleanly (FIN; under TLS close_notify first)."""
        self.relay.counters.idle_closed += 1
        self._interrupt.set()
        self.done.set()


class Relay:
    """The listener's state: the profile (replaced by the operator endpoint), the cut machine, the counters and
    the open connections."""

    def __init__(self, target: tuple[str, int], profile: Profile, *, ssl_context: ssl.SSLContext | None = None,
                 seed: int | None = None) -> None:
        self.target, self.profile, self.ssl_context, self.seed = target, profile, ssl_context, seed
        self.cut = CutMachine()
        self.counters = Counters()
        self.connections: set[Connection] = set()
        self._accepted = 0
        self._handlers: set[asyncio.Task[None]] = set()

    async def accept_forever(self, listen: socket.socket) -> None:
        """Accept on ``listen`` (non-blocking, listening) until cancelled; one handler task per connection."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listen)
            except OSError as exc:  # e.g. out of file descriptors: keep the listener, try again shortly
                log.warning("netem accept failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self.handle(sock))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def handle(self, sock: socket.socket) -> None:
        number, self._accepted = self._accepted, self._accepted + 1
        verdict = self.cut.admit()
        if verdict is Verdict.RESET:
            self.counters.refused += 1
            linger_zero(sock)
            sock.close()
            return
        self.counters.accepted += 1
        if verdict is Verdict.SWALLOW:
            self.counters.blackholed += 1
        conn = Connection(self, number, sock, Link.DEAD if verdict is Verdict.SWALLOW else Link.LIVE)
        self.connections.add(conn)
        try:
            await conn.run()
        except Exception as exc:  # one connection's failure must never reach the loop's "unhandled" log
            log.warning("netem connection failed", connection=number, error=repr(exc))
            conn.reset()
        finally:
            self.connections.discard(conn)

    def apply_cut(self, mode: CutMode) -> int:
        """Cut the path; returns how many open connections were reset or silenced."""
        action = self.cut.cut(mode)
        touched = 0
        for conn in list(self.connections):
            if action is Action.RESET:
                conn.reset()
                self.counters.reset_by_cut += 1
                touched += 1
            elif conn.link is Link.LIVE:
                conn.kill()
                self.counters.silenced_by_cut += 1
                touched += 1
        return touched

    def restore(self) -> None:
        self.cut.restore()

    async def sweep_idle(self) -> None:
        """Forever: close connections idle for the current profile's ``idle_close_s`` (dead paths excepted)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            limit, now = self.profile.idle_close_s, loop.time()
            for conn in list(self.connections):
                if conn.link is Link.LIVE and conn.pipes and conn.idle.expired(now, limit, pending=conn.pending):
                    conn.close_idle()

    async def close_all(self) -> None:
        """Shutdown: end every connection (cleanly) and wait for their handlers."""
        for conn in list(self.connections):
            conn.done.set()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=2.0)

    def stats(self) -> dict[str, Any]:
        return {
            "open_connections": len(self.connections),
            "dead_connections": sum(1 for conn in self.connections if conn.link is Link.DEAD),
            **asdict(self.counters),
            "cut": self.cut.mode.value,
            "profile": self.profile.as_dict(),
            "target": f"{self.target[0]}:{self.target[1]}",
            "tls": self.ssl_context is not None,
        }
