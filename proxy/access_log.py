"""The access log: one line per request, recorded on the hit path for about the cost of a list append, rendered
and written off it, in batches.

* **Recording** (`AccessLog.record`): the request's fields as one tuple appended to a list. No formatting, no
  processor chain, no I/O on the event loop.
* **Writing**: a flusher task, every `FLUSH_INTERVAL_S` (50 ms), hands the lines recorded since to one writer
  thread, which renders them (the same JSON object, or the same console line, that structlog would have written)
  and writes them through the process's `LineSink`. Every other log line of the process (structlog's warnings
  and errors) goes through the same sink and its lock, so lines never interleave; the sink writes at most
  `PIPE_BUF` bytes at a time, cut at line ends, so lines of several ``--workers`` sharing one pipe do not
  interleave either.
* **Bounded**: at most `MAX_BUFFERED` lines wait (about 16 MB at worst). A line recorded while that many wait
  (the sink is slower than the traffic, or blocked) is dropped and counted: `dropped`, the metric
  ``cams_proxy_access_log_dropped_total``, ``/admin/status`` and, at most every `DROP_REPORT_INTERVAL_S`, a
  warning line. Never silent.
* **Shutdown**: `close` writes what is buffered (the gateway calls it after the last request); an ``atexit`` hook
  does the same if the process exits another way.

Not guaranteed: a process killed by SIGKILL loses up to one flush interval of lines; a line's place relative to
structlog's warnings and errors is up to one flush interval off (each line carries its own timestamp, taken when
the request was answered).
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

from proxy.secret import REDACTED

FLUSH_INTERVAL_S: Final = 0.05
MAX_BUFFERED: Final = 32_768
DROP_REPORT_INTERVAL_S: Final = 10.0
PIPE_BUF: Final = 4096
SENSITIVE_MARKERS: Final = ("secret", "token", "signature", "authorization", "password")

#: One recorded request: wall-clock time answered, request id, method, path, status, duration in ms, and the
#: outcome's other fields (action, tenant, cache, code, ...).
Record = tuple[float, str, str, str, int, float, Mapping[str, Any]]


class LineSink:
    """Where every log line of the process goes: one stream (stderr), one lock, writes of whole lines.

    ``write`` is called from the event loop (structlog's lines) and from the access log's writer thread; the lock
    keeps their lines apart. A write of more than `PIPE_BUF` bytes is cut at line ends, so each ``write(2)`` of a
    pipe is atomic and processes sharing it never split each other's lines. Blocking: a write waits for the
    stream, as any synchronous logging does; the access log keeps its waits off the event loop.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def use(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        """Write ``text`` (whole lines, each ending in a newline)."""
        stream = self.stream
        with self._lock:
            for chunk in chunks(text, PIPE_BUF):
                stream.write(chunk)
                stream.flush()


def chunks(text: str, limit: int) -> list[str]:
    """``text`` cut at line ends into pieces of at most ``limit`` characters (a longer line is a piece alone)."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = start + limit
        if end >= len(text):
            pieces.append(text[start:])
            break
        cut = text.rfind("\n", start, end)
        if cut < start:
            cut = text.find("\n", end)
            if cut < 0:
                cut = len(text) - 1
        pieces.append(text[start:cut + 1])
        start = cut + 1
    return pieces


#: The process's sink; `proxy.logs.configure` routes structlog through it.
SINK: Final = LineSink()


class _Second:
    """The last whole second rendered and its ISO prefix, one tuple (rebinding it is atomic across threads)."""

    latest: tuple[int, str] = (-1, "")


_SAFE_KEYS: set[str] = set()  # field names seen not to name a credential


def _timestamp(at: float) -> str:
    """``at`` as structlog's ISO UTC timestamp (microseconds, ``Z``); the date part is rendered once a second."""
    second = int(at)
    cached = _Second.latest
    if cached[0] != second:
        cached = _Second.latest = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{min(int((at - second) * 1_000_000), 999_999):06d}Z"


def _is_sensitive(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SENSITIVE_MARKERS)


def _safe(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    if _SAFE_KEYS.issuperset(fields):
        return fields
    if any(_is_sensitive(key) for key in fields):
        return {key: REDACTED if _is_sensitive(key) else value for key, value in fields.items()}
    _SAFE_KEYS.update(fields)
    return fields


def render_json(record: Record) -> str:
    """The JSON object structlog's JSON renderer writes for the same call, on one line."""
    at, request_id, method, path, status, duration_ms, fields = record
    document = {"request_id": request_id, "method": method, "path": path, "status": status,
                "duration_ms": duration_ms, **_safe(fields), "event": "request", "level": "info",
                "timestamp": _timestamp(at)}
    return orjson.dumps(document, default=str).decode()


def render_console(record: Record) -> str:
    """The line structlog's console renderer writes for the same call (keys sorted, ``key=value``)."""
    at, request_id, method, path, status, duration_ms, fields = record
    values = {"request_id": request_id, "method": method, "path": path, "status": status,
              "duration_ms": duration_ms, **_safe(fields)}
    pairs = " ".join(f"{key}={value if isinstance(value, str) else repr(value)}"
                     for key, value in sorted(values.items()))
    return f"{_timestamp(at)} [info     ] {'request':<30} {pairs}"


class AccessLog:
    """The buffered access log of one process (see the module docstring for its guarantees)."""

    def __init__(self, json_lines: bool, sink: LineSink = SINK, max_buffered: int = MAX_BUFFERED,
                 report: Callable[[int, int], None] | None = None) -> None:
        self._render = render_json if json_lines else render_console
        self._sink = sink
        self._max = max_buffered
        self._buffer: list[Record] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="access-log")
        self._report = report
        self._reported = 0
        self._reported_at = float("-inf")
        self._flush_lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        atexit.register(self.flush_now)

    def record(self, at: float, request_id: str, method: str, path: str, status: int, duration_ms: float,
               fields: Mapping[str, Any]) -> None:
        """Keep one request's line for the next flush (or count it dropped when `max_buffered` wait)."""
        buffer = self._buffer
        if len(buffer) < self._max:
            buffer.append((at, request_id, method, path, status, duration_ms, fields))
        else:
            self.dropped += 1

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def status(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "buffered": len(self._buffer),
                "max_buffered": self._max}

    async def run(self) -> None:
        """Flush every `FLUSH_INTERVAL_S` until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()

    async def flush(self) -> None:
        """Write what is buffered, in the writer thread (the event loop only swaps the list)."""
        if self._buffer:
            batch, self._buffer = self._buffer, []
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)
        self._report_drops(asyncio.get_running_loop().time())

    def _write(self, batch: list[Record]) -> None:
        render = self._render
        text = "\n".join([render(record) for record in batch]) + "\n"
        with self._flush_lock:
            self._sink.write(text)
            self.written += len(batch)

    def _report_drops(self, now: float) -> None:
        if self.dropped > self._reported and now - self._reported_at >= DROP_REPORT_INTERVAL_S:
            if self._report is not None:
                self._report(self.dropped - self._reported, self.dropped)
            self._reported, self._reported_at = self.dropped, now

    def flush_now(self) -> None:
        """Write what is buffered, synchronously (shutdown, exit)."""
        batch, self._buffer = self._buffer, []
        if batch:
            self._write(batch)

    async def close(self) -> None:
        """The last flush: every line recorded so far is written when this returns; drops are reported."""
        await self.flush()
        self.flush_now()
        self._reported_at = float("-inf")
        self._report_drops(0.0)
        self._executor.shutdown(wait=True)
        atexit.unregister(self.flush_now)
