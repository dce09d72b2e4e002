"""One direction of one relayed connection: a reader, a FIFO of scheduled chunks, and one delivery task.

Guarantees: a chunk read at ``t`` is written no earlier than its `DeliverySchedule` time, chunks are written in the
order read, intact; the end of the stream (FIN) and a reset (read error) are forwarded after the bytes before them;
at most about ``HIGH_WATER`` bytes wait in the queue (reading pauses above it). Non-guarantees: writes are late by
the event loop's lag; once the destination fails, nothing more is written (the other direction reports it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

from proxy.netem.core import (
    UP,
    Action,
    CutMachine,
    DeliverySchedule,
    IdleClock,
    Link,
    Profile,
    connection_rng,
    on_bytes,
)

HIGH_WATER: Final = 1 << 20  # bytes queued in one direction before its reader pauses
CHUNK: Final = 64 * 1024
EOF: Final = b""  # queue marker: forward a FIN
ABORT: Final = None  # queue marker: forward a reset

@dataclass
class Counters:
    """What the relay did, since start (``GET /__net/stats``)."""

    accepted: int = 0
    refused: int = 0
    blackholed: int = 0  # accepted while the path was a blackhole (never relayed)
    idle_closed: int = 0
    reset_by_cut: int = 0
    silenced_by_cut: int = 0
    tls_failed: int = 0
    target_failed: int = 0
    bytes_up: int = 0  # delivered to the target
    bytes_down: int = 0  # delivered to clients
    bytes_vanished: int = 0  # read on a dead path, or queued when it died


class RelayView(Protocol):
    """What a pipe reads of the relay (`proxy.netem.relay.Relay`): its seed, profile, cut and counters."""

    @property
    def seed(self) -> int | None: ...

    @property
    def profile(self) -> Profile: ...

    @property
    def cut(self) -> CutMachine: ...

    @property
    def counters(self) -> Counters: ...


class PipeOwner(Protocol):
    """What a pipe needs of its connection (`proxy.netem.relay.Connection`), so this module does not import the
    relay: the path's state, the idle clock to touch, and what to do when a side ends or must be reset."""

    @property
    def relay(self) -> RelayView: ...

    @property
    def number(self) -> int: ...

    @property
    def link(self) -> Link: ...

    @property
    def idle(self) -> IdleClock: ...

    def dead_end(self, direction: str) -> None:
        """A side of a dead path ended."""
        ...

    def reset(self) -> None:
        """Reset both sides (TCP RST) now."""
        ...


def linger_zero(sock: socket.socket | None) -> None:
    """Make the next close of ``sock`` a TCP reset (RST) instead of a FIN."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close with a TCP reset: ``SO_LINGER`` 0, then abort (works under TLS too: the socket is the raw one)."""
    if transport is None:
        return
    linger_zero(transport.get_extra_info("socket"))
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


class Pipe:
    """One direction of one connection: a reader, a FIFO of (deliver_at, chunk or marker), a delivery task."""

    def __init__(self, conn: PipeOwner, direction: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.conn, self.direction, self.reader, self.writer = conn, direction, reader, writer
        self.schedule = DeliverySchedule(connection_rng(conn.relay.seed, conn.number, direction))
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def _put(self, at: float, item: bytes | None) -> None:
        self.queue.append((at, item))
        self.queued += len(item or b"")
        self._wake.set()

    def drop_queued(self) -> int:
        """The path died: forget what is queued; returns how many bytes vanished."""
        dropped = self.queued
        self.queue.clear()
        self.queued = 0
        self._room.set()
        self._wake.set()
        return dropped

    async def pump(self) -> None:
        """Read the source until its end; schedule each chunk (or swallow it on a dead path)."""
        conn, loop = self.conn, asyncio.get_running_loop()
        while True:
            while self.queued >= HIGH_WATER:
                self._room.clear()
                await self._room.wait()
            try:
                data = await self.reader.read(CHUNK)
                ended: bytes | None = EOF
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
                data, ended = b"", ABORT
            now = loop.time()
            conn.idle.touch(now)
            if not data:
                if conn.link is Link.DEAD:
                    conn.dead_end(self.direction)
                else:
                    self._put(self.schedule.deliver_at(now, conn.relay.profile.latency(self.direction)), ended)
                return
            action = on_bytes(conn.link, conn.relay.cut.mode, self.direction)
            if action is Action.SWALLOW:
                conn.relay.counters.bytes_vanished += len(data)
            elif action is Action.RESET:
                conn.reset()
                return
            else:
                self._put(self.schedule.deliver_at(now, conn.relay.profile.latency(self.direction)), data)

    async def deliver(self) -> None:
        """Write each chunk at its time, in order; forward the end (FIN) or a reset after the bytes before it."""
        conn, loop, counters = self.conn, asyncio.get_running_loop(), self.conn.relay.counters
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self.queue[0][0] - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            now = loop.time()
            parts: list[bytes] = []
            marker: bytes | bool | None = False  # False: no marker reached yet
            while self.queue and self.queue[0][0] <= now:
                _, item = self.queue.popleft()
                if not item:
                    marker = item
                    break
                parts.append(item)
            data = b"".join(parts)
            self.queued -= len(data)
            if self.queued < HIGH_WATER:
                self._room.set()
            try:
                if data:
                    self.writer.write(data)
                    if self.direction == UP:
                        counters.bytes_up += len(data)
                    else:
                        counters.bytes_down += len(data)
                    conn.idle.touch(now)
                    await self.writer.drain()
                if marker is ABORT:
                    conn.reset()
                    return
                if marker == EOF:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    else:
                        self.writer.close()
                    return
            except (OSError, ssl.SSLError, RuntimeError):
                return  # the destination is gone; its own reader reports that the other way


