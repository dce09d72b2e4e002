"""Warm upstream connections: a LIFO pool of HTTP/1.1 keep-alive connections (TCP, or TLS), opened
*before* a call's send slot is reserved, so nothing between the slot and the send waits on the network.

    checkout()   the most recently used idle connection that is still usable, else a new one
                 (TCP connect, then the TLS handshake; bounded by ``connect_timeout``)
    checkin(c)   back to the pool once its answer was read in full and both sides may go on
    discard(c)   closed, never reused (an error, ``Connection: close``, an unread answer)
    prewarm(n)   open connections in the background until ``n`` are idle or opening (the queue asks for
                 one while misses wait, so the next turn finds a connection in hand)

A connection counts as usable while its transport is open, the peer has not closed it (an idle close by
the server arrives as EOF, which the stream protocol records even when nobody reads) and it has been
idle less than ``keepalive_s``. The pool closes connections idle for longer itself: set ``keepalive_s``
below the upstream's own idle timeout, so the server never closes a connection a call is about to use.

Guarantees: at most ``limit`` connections exist (idle, in use or opening); a failed open raises
`UpstreamUnreachable` (or `UpstreamTimeout` for the connect timeout) and leaves nothing behind; a
connection is in one place at a time (idle in the pool, or held by exactly one caller).
Non-guarantees: a connection that looks usable may still be closed by the peer while a request is on
its way (the request then fails and the caller counts it as a call that got no answer); no HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h11

from proxy.upstream.errors import UpstreamTimeout, UpstreamUnreachable


@dataclass(eq=False)
class Connection:
    """One open HTTP/1.1 connection and its h11 state machine."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened_at: float
    last_used: float
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    requests: int = 0

    def usable(self, now: float, keepalive_s: float) -> bool:
        """Open on both sides, idle for less than ``keepalive_s``, ready for a new request."""
        return (not self.writer.transport.is_closing() and not self.reader.at_eof()
                and now - self.last_used < keepalive_s and self.protocol.our_state is h11.IDLE)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass
class PoolStats:
    opened: int = 0
    reused: int = 0
    expired: int = 0
    failed_opens: int = 0


class ConnectionPool:
    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None, server_hostname: str | None,
                 connect_timeout: float = 3.0, keepalive_s: float = 4.0, limit: int = 32,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname if ssl_context is not None else None
        self.connect_timeout = connect_timeout
        self.keepalive_s = keepalive_s
        self.limit = limit
        self._clock = clock
        self._idle: list[Connection] = []  # LIFO: the last one is the most recently used
        self._slots = asyncio.Semaphore(limit)  # one per connection that exists or is being opened
        self._warming: set[asyncio.Task[None]] = set()
        self._closed = False
        self.stats = PoolStats()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _take_idle(self) -> Connection | None:
        now = self._clock()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(now, self.keepalive_s):
                return connection
            self._drop(connection)
            self.stats.expired += 1
        return None

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._slots.release()

    async def checkout(self) -> Connection:
        """A usable connection, opening one if none is idle. Raises `UpstreamUnreachable` / `UpstreamTimeout`."""
        if self._closed:
            raise UpstreamUnreachable("the upstream connection pool is closed")
        connection = self._take_idle()
        if connection is not None:
            self.stats.reused += 1
            return connection
        await self._slots.acquire()
        # While we waited for room, a connection may have come back.
        connection = self._take_idle()
        if connection is not None:
            self._slots.release()  # the one we took back holds its own slot
            self.stats.reused += 1
            return connection
        try:
            return await self._open()
        except BaseException:
            self._slots.release()
            raise

    async def _open(self) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self._ssl, server_hostname=self._server_hostname,
                    ssl_handshake_timeout=self.connect_timeout if self._ssl is not None else None)
        except TimeoutError as exc:
            self.stats.failed_opens += 1
            raise UpstreamTimeout(f"no connection to the upstream within {self.connect_timeout}s") from exc
        except (OSError, ssl.SSLError) as exc:
            self.stats.failed_opens += 1
            raise UpstreamUnreachable(f"cannot connect to the upstream: {type(exc).__name__}") from exc
        now = self._clock()
        self.stats.opened += 1
        return Connection(reader, writer, now, now)

    def checkin(self, connection: Connection) -> None:
        """Return a connection whose exchange completed; reused only if both sides may go on."""
        protocol = connection.protocol
        if self._closed or protocol.our_state is not h11.DONE or protocol.their_state is not h11.DONE:
            self.discard(connection)
            return
        try:
            protocol.start_next_cycle()
        except h11.LocalProtocolError:
            self.discard(connection)
            return
        connection.last_used = self._clock()
        self._idle.append(connection)

    def give_back(self, connection: Connection) -> None:
        """Return a connection that was checked out and never used (the slot did not come)."""
        if self._closed or connection.protocol.our_state is not h11.IDLE:
            self.discard(connection)
            return
        self._idle.append(connection)

    def discard(self, connection: Connection) -> None:
        self._drop(connection)

    def prewarm(self, count: int) -> None:
        """Open connections in the background until ``count`` are idle or opening (failures are left to the
        next checkout, which reports them)."""
        now = self._clock()
        usable = sum(1 for connection in self._idle if connection.usable(now, self.keepalive_s))
        missing = count - usable - len(self._warming)
        for _ in range(max(0, missing)):
            if self._closed or self._slots.locked():
                return
            task = asyncio.get_running_loop().create_task(self._warm_one())
            self._warming.add(task)
            task.add_done_callback(self._warming.discard)

    async def _warm_one(self) -> None:
        await self._slots.acquire()
        try:
            connection = await self._open()
        except BaseException:
            self._slots.release()
            return
        if self._closed:
            self._drop(connection)
            return
        self._idle.append(connection)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._warming):
            task.cancel()
        for task in list(self._warming):
            with contextlib.suppress(BaseException):
                await task
        while self._idle:
            self._drop(self._idle.pop())
