"""The access log: one line per request, recorded on the hit path for about the cost of a list append, rendered
and written off it, in batches.

* **Recording** (`AccessLog.record`): the request's fields as one tuple appended to a list. No formatting, no
  processor chain, no I/O on the event loop.
* **Writing**: a flusher task, every `FLUSH_INTERVAL_S` (50 ms), hands the lines recorded since to one writer
  thread, which renders them (the same JSON object, or the same console line, that structlog would have written:
  each outcome's shape is rendered once and kept, see `render_json`) and writes them through the process's
  `LineSink`. Every other log line of the process (structlog's warnings and errors) goes through the same sink
  and its lock, so lines never interleave; the sink writes a batch to a regular file in one system call and to
  anything else at most `PIPE_BUF` bytes at a time, cut at line ends, so lines of several ``--workers`` sharing
  one file or pipe do not interleave either.
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
import os
import secrets
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, AnyStr, Final, TextIO

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
    keeps their lines apart. When the stream has a file descriptor, text goes to it with ``os.write`` (the GIL is
    released for the whole system call, and the stream's own buffer is flushed first, so nothing overtakes it): a
    regular file gets a batch in one system call (appends of one open file are atomic on Linux, so processes
    sharing it keep their lines whole); anything else (a pipe, a terminal, a socket) gets pieces of at most
    `PIPE_BUF` bytes cut at line ends, so each ``write(2)`` is atomic and processes sharing a pipe never split
    each other's lines. Blocking: a write waits for the descriptor, as any synchronous logging does; the access
    log keeps its waits off the event loop.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._target: tuple[TextIO, int | None, bool] | None = None  # (stream, its fd, a regular file?)

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def use(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._target = None

    def _resolve(self) -> tuple[TextIO, int | None, bool]:
        stream = self.stream
        target = self._target
        if target is None or target[0] is not stream:
            try:
                fd: int | None = stream.fileno()
            except (AttributeError, OSError, ValueError):  # io.StringIO and other streams without a descriptor
                fd = None
            regular = fd is not None and stat.S_ISREG(os.fstat(fd).st_mode)
            target = self._target = (stream, fd, regular)
        return target

    def write(self, text: str) -> None:
        """Write ``text`` (whole lines, each ending in a newline)."""
        stream, fd, regular = self._resolve()
        with self._lock:
            if fd is None:
                for chunk in chunks(text, PIPE_BUF):
                    stream.write(chunk)
                    stream.flush()
                return
            stream.flush()
            data = text.encode("utf-8", "backslashreplace")
            pieces = [data] if regular else chunks(data, PIPE_BUF)
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view):]


def chunks(text: AnyStr, limit: int) -> list[AnyStr]:
    """``text`` (or its encoded bytes) cut at line ends into pieces of at most ``limit`` characters (bytes); a
    longer line is a piece alone."""
    if len(text) <= limit:
        return [text]
    newline: Any = "\n" if isinstance(text, str) else b"\n"
    pieces: list[AnyStr] = []
    start = 0
    while start < len(text):
        end = start + limit
        if end >= len(text):
            pieces.append(text[start:])
            break
        cut = text.rfind(newline, start, end)
        if cut < start:
            cut = text.find(newline, end)
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


def _json_text(request_id: str, method: str, path: str, status: int, duration_ms: float | str,
               fields: Mapping[str, Any], timestamp: str) -> str:
    document = {"request_id": request_id, "method": method, "path": path, "status": status,
                "duration_ms": duration_ms, **_safe(fields), "event": "request", "level": "info",
                "timestamp": timestamp}
    return orjson.dumps(document, default=str).decode()


def _console_pairs(request_id: str, method: str, path: str, status: int, duration_ms: float | str,
                   fields: Mapping[str, Any]) -> str:
    values = {"request_id": request_id, "method": method, "path": path, "status": status,
              "duration_ms": duration_ms, **_safe(fields)}
    return " ".join(f"{key}={value if isinstance(value, str) else repr(value)}"
                    for key, value in sorted(values.items()))


_CONSOLE_HEAD: Final = f" [info     ] {'request':<30} "


def render_json_slowly(record: Record) -> str:
    """The JSON object structlog's JSON renderer writes for the same call, on one line (`render_json`'s answer,
    rendered from scratch)."""
    at, request_id, method, path, status, duration_ms, fields = record
    return _json_text(request_id, method, path, status, duration_ms, fields, _timestamp(at))


def render_console_slowly(record: Record) -> str:
    """The line structlog's console renderer writes for the same call (keys sorted, ``key=value``)."""
    at, request_id, method, path, status, duration_ms, fields = record
    return _timestamp(at) + _CONSOLE_HEAD + _console_pairs(request_id, method, path, status, duration_ms, fields)


#: Stand-ins for a line's three varying values while its shape is rendered: random per process, so no real
#: value can be one (a shape whose rendering does not show all three exactly once is not kept).
_MARK: Final = secrets.token_hex(8)
_REQUEST_ID, _DURATION, _TIME = f"\x00{_MARK}r", f"\x00{_MARK}d", f"\x00{_MARK}t"
#: Shapes kept per renderer; the table is emptied when full (about 1 KB a shape: at most about 4 MB).
MAX_SHAPES: Final = 4096
Shape = tuple[str, ...]
ShapeKey = tuple[Any, ...]


def _split(text: str, *marks: str) -> Shape | None:
    """``text`` cut at each of ``marks`` in turn, or None when one is not there exactly once."""
    parts: list[str] = []
    for mark in marks:
        if text.count(mark) != 1:
            return None
        head, text = text.split(mark)
        parts.append(head)
    return (*parts, text)


#: The stand-ins as they appear in a JSON shape (JSON strings: the duration's quotes go, the others' stay).
_JSON_MARKS: Final = (orjson.dumps(_REQUEST_ID).decode()[1:-1], orjson.dumps(_DURATION).decode(),
                      orjson.dumps(_TIME).decode()[1:-1])


def _json_shape(method: str, path: str, status: int, fields: Mapping[str, Any]) -> Shape | None:
    return _split(_json_text(_REQUEST_ID, method, path, status, _DURATION, fields, _TIME), *_JSON_MARKS)


def _console_shape(method: str, path: str, status: int, fields: Mapping[str, Any]) -> Shape | None:
    return _split(_CONSOLE_HEAD + _console_pairs(_REQUEST_ID, method, path, status, _DURATION, fields),
                  _DURATION, _REQUEST_ID)  # keys are sorted: duration_ms comes before request_id


def _shape(shapes: dict[ShapeKey, Shape | None], build: Callable[..., Shape | None], record: Record) -> Shape | None:
    _at, _request_id, method, path, status, _duration_ms, fields = record
    try:
        key: ShapeKey = (method, path, status, *fields.items())
        return shapes[key]
    except KeyError:
        if len(shapes) >= MAX_SHAPES:
            shapes.clear()
        shape = shapes[key] = build(method, path, status, fields)
        return shape
    except TypeError:  # a field value that cannot be a key: this line alone is rendered from scratch
        return None


_JSON_SHAPES: dict[ShapeKey, Shape | None] = {}
_CONSOLE_SHAPES: dict[ShapeKey, Shape | None] = {}


def render_json(record: Record) -> str:
    """`render_json_slowly`'s line, from the record's shape rendered once (method, path, status and fields) and
    its request id, duration and timestamp put in. The request id is written as it is: it must be one the gateway
    gives or accepts (``proxy.web.rendering.REQUEST_ID``: letters, digits, ``.``, ``_``, ``-``), as the handler's
    always is. Outside `--memory-max-bytes`: the kept shapes are bounded on their own (`MAX_SHAPES`)."""
    shape = _shape(_JSON_SHAPES, _json_shape, record)
    if shape is None or not -1e15 < record[5] < 1e15:  # repr and orjson write other floats differently
        return render_json_slowly(record)
    return shape[0] + record[1] + shape[1] + repr(record[5]) + shape[2] + _timestamp(record[0]) + shape[3]


def render_console(record: Record) -> str:
    """`render_console_slowly`'s line, from the record's shape rendered once."""
    shape = _shape(_CONSOLE_SHAPES, _console_shape, record)
    if shape is None:
        return render_console_slowly(record)
    return _timestamp(record[0]) + shape[0] + repr(record[5]) + shape[1] + record[1] + shape[2]


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
