"""A plain TCP relay right in front of the simulator that notes when each upstream call arrives, per action.

The simulator's ``/__sim/stats`` counts arrivals (``calls``, ``max_in_any_1s``) but does not say when they came, so
`bench.miss` takes the span of a backlog from the client's answers. Behind a WAN that span is a poor stand-in:
an answer trails its upstream call by the way back and, with replicas, by Redis round trips (storing the answer,
releasing the fill lease) over a jittery path. This relay sits on loopback between the network stand-in and the
simulator (``netem --target`` points at it) and stamps each request with ``time.monotonic()`` (the clock of
`bench.miss`'s samples) when its head has arrived in full, reading the action from its ``x-acs-action`` header.
It adds no delay worth speaking of (one loopback hop in this process's own thread and event loop).

    tap = ArrivalTap(("127.0.0.1", sim_port)); listen = tap.start()      # "127.0.0.1:PORT"
    ...; tap.arrivals("GetChatappTemplateDetail"); tap.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from typing import Final

ACTION_HEADER: Final = re.compile(rb"\r\nx-acs-action:[ \t]*([^\r\n]+)", re.IGNORECASE)
CONTENT_LENGTH: Final = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
READ_CHUNK: Final = 65536


class ArrivalTap:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self._arrivals: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._listen = ""
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Listen on a free port (in a thread of its own); returns ``HOST:PORT``."""
        self._thread = threading.Thread(target=self._run, name="arrival-tap", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the arrival tap did not start: {self._error!r}")
        return self._listen

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def arrivals(self, action: str) -> list[float]:
        """When each call of ``action`` arrived (monotonic seconds), in order."""
        with self._lock:
            return sorted(at for name, at in self._arrivals if name == action)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() when it happens before the server is up
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, self.host, 0)
        port = server.sockets[0].getsockname()[1]
        self._listen = f"{self.host}:{port}"
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pumps = [asyncio.create_task(self._requests(reader, up_writer)),
                 asyncio.create_task(self._copy(up_reader, writer))]
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to simulator: forward every byte, stamping each request head as it completes."""
        buffer = b""
        skip = 0  # body bytes of the current request still to pass
        while data := await self._read(reader):
            now = time.monotonic()
            writer.write(data)
            buffer += data
            while True:
                if skip:
                    taken = min(skip, len(buffer))
                    buffer, skip = buffer[taken:], skip - taken
                    if skip:
                        break
                head, found, rest = buffer.partition(b"\r\n\r\n")
                if not found:
                    break
                action = ACTION_HEADER.search(head)
                length = CONTENT_LENGTH.search(head)
                with self._lock:
                    self._arrivals.append((action.group(1).strip().decode("latin-1") if action else "?", now))
                buffer, skip = rest, int(length.group(1)) if length else 0
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await self._read(reader):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> bytes:
        try:
            return await reader.read(READ_CHUNK)
        except OSError:
            return b""
