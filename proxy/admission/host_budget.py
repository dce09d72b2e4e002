"""The host budget: one upstream budget shared by the ``--workers`` processes of one host, without Redis.

The supervisor (``cams-proxy serve --workers N``) owns it and serves it on a Unix domain socket in a
private folder (``0700``, socket ``0600``); each worker reserves its slots there (`proxy.admission.host`).
The decision is the one `proxy.admission.shared` makes in Redis, GCRA with no burst, per action::

    slot = max(TAT, now);  wait = slot - now
    if wait > max_wait:  answer "no" with wait
    else:                TAT = slot + T; answer "yes" with the slot time

Guarantee: consecutive slots of one action are at least ``T = (1 s + δ) / cap`` apart on **one** clock,
whichever workers take them, so any ``cap + 1`` of them span ``cap·T = 1 s + δ``. Assumptions:

* one host: the clock is ``time.monotonic()`` (``CLOCK_MONOTONIC``, system-wide on Linux), which is also
  what every worker's asyncio ``loop.time()`` reads, so a slot is answered as an *absolute* time that the
  worker sleeps until: no clock offset and no round-trip lateness enters the spacing;
* workers measure their own margin δ (`proxy.admission.margin`), so they may ask with different ``T``: the
  widest ``T`` asked for an action in the last `WIDEST_MEMORY_S` is used (as the Redis script does). A worker
  still learning its path asks with the ceiling's ``T`` marked ``"learning": true``: its own slots get that
  spacing after them, but it is not remembered for the others (a guess must not slow every worker for 10 s);
* the supervisor is the single point of decision: if it dies, workers get no more slots and spend
  nothing (they refuse misses; hits keep flowing).

Wire protocol: newline-delimited JSON, one request and one reply per line, in order per connection::

    -> {"id": 7, "action": "GetChatappTemplateDetail", "interval": 0.204, "by": 12345.6, "learning": false}
    <- {"id": 7, "granted": true, "at": 12345.1, "wait": 0.08}      (or granted false: the slot is after "by")
    <- {"id": 7, "error": "..."}                                    (a malformed request; nothing reserved)

``by`` is the latest slot the worker can use (its ``grant_by``, on the shared clock): ``max_wait = by - now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import orjson

from proxy.logs import get_logger

log = get_logger("proxy.admission")

#: Environment variable that carries the socket path from the supervisor to its workers.
BUDGET_SOCKET_ENV: Final = "CAMS_PROXY_BUDGET_SOCKET"
#: Distinct actions one budget keeps (the registry has two; a bound, so a bad client cannot grow it).
MAX_ACTIONS: Final = 64
#: How long the widest spacing asked for stays in force after its last request, seconds.
WIDEST_MEMORY_S: Final = 10.0
#: Longest request line accepted (bytes).
MAX_LINE_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Decision:
    """``granted``: the slot at ``at`` (absolute, on the budget's clock) is reserved for the caller.
    Otherwise nothing was reserved and the next free slot is ``wait_s`` away."""

    granted: bool
    at: float
    wait_s: float


class HostGcra:
    """GCRA with no burst per action, on times given by the caller (pure: no clock, no I/O)."""

    def __init__(self, max_actions: int = MAX_ACTIONS) -> None:
        self._tat: dict[str, float] = {}
        self._interval: dict[str, float] = {}
        self._widest_at: dict[str, float] = {}
        self._max_actions = max_actions
        self.granted = 0
        self.refused = 0

    def interval(self, action: str) -> float | None:
        """The spacing in force for ``action`` (the widest asked for recently), or None before its first request."""
        return self._interval.get(action)

    def reserve(self, action: str, interval_s: float, max_wait_s: float, now: float, *,
                learning: bool = False) -> Decision:
        """Reserve the next slot of ``action`` if it comes within ``max_wait_s`` of ``now``. A ``learning``
        request's interval spaces its own slot but is not remembered as the widest.

        Raises `ValueError` for a non-positive or non-finite interval, a non-finite wait, or one action too many.
        """
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval must be a positive number of seconds, not {interval_s!r}")
        if not math.isfinite(max_wait_s):
            raise ValueError(f"max_wait must be a finite number of seconds, not {max_wait_s!r}")
        known = self._interval.get(action)
        if known is None and len(self._interval) >= self._max_actions:
            raise ValueError(f"too many actions (at most {self._max_actions})")
        expired = known is None or now - self._widest_at.get(action, now) > WIDEST_MEMORY_S
        if learning:
            interval = interval_s if expired or known is None else max(interval_s, known)
        elif expired or known is None or interval_s >= known:
            self._interval[action] = interval = interval_s
            self._widest_at[action] = now
        else:
            interval = known
        slot = max(self._tat.get(action, now), now)
        wait = slot - now
        if wait > max_wait_s:
            self.refused += 1
            return Decision(False, slot, wait)
        self._tat[action] = slot + interval
        self.granted += 1
        return Decision(True, slot, wait)


class BadRequest(ValueError):
    """A request line the server cannot decide on (answered with an error; nothing reserved)."""


def decide(gcra: HostGcra, line: bytes, now: float) -> bytes:
    """One request line in, one reply line out (pure but for ``gcra``'s state)."""
    request_id: object = None
    try:
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise BadRequest("a request is a JSON object")
        request_id = request.get("id")
        action, interval, by = request.get("action"), request.get("interval"), request.get("by")
        if not isinstance(action, str) or not action:
            raise BadRequest("action must be a non-empty string")
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise BadRequest("interval must be a number of seconds")
        if isinstance(by, bool) or not isinstance(by, int | float):
            raise BadRequest("by must be a monotonic time in seconds")
        learning = request.get("learning", False)
        if not isinstance(learning, bool):
            raise BadRequest("learning must be true or false")
        decision = gcra.reserve(action, float(interval), float(by) - now, now, learning=learning)
    except ValueError as exc:
        return orjson.dumps({"id": request_id, "error": str(exc)}) + b"\n"
    return orjson.dumps({"id": request_id, "granted": decision.granted, "at": decision.at,
                         "wait": decision.wait_s}) + b"\n"


class HostBudgetServer:
    """The asyncio side: serve one `HostGcra` on a Unix domain socket, each line decided at once.

    Decisions never await anything, so one connection's requests are answered in order and the GCRA
    needs no lock (one event loop).
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.gcra = HostGcra()
        self._clock = clock
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        #: Slots granted per client process (``pid:N``, from ``SO_PEERCRED``): which workers spend.
        self.granted_by_peer: dict[str, int] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE_BYTES)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        peer = _peer_name(writer)
        try:
            while line := await reader.readline():
                before = self.gcra.granted
                writer.write(decide(self.gcra, line, self._clock()))
                if self.gcra.granted > before:
                    self.granted_by_peer[peer] = self.granted_by_peer.get(peer, 0) + 1
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError) as exc:  # a line over the limit, a reset
            log.debug("host budget connection closed", error=repr(exc))
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _peer_name(writer: asyncio.StreamWriter) -> str:
    """``pid:N`` of the process at the other end of a Unix socket (Linux ``SO_PEERCRED``), else ``fd:N``."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return "unknown"
    try:
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except (AttributeError, OSError):
        return f"fd:{sock.fileno()}"
    return f"pid:{pid}"


class HostBudgetThread:
    """`HostBudgetServer` on its own event loop in a daemon thread, for the synchronous supervisor.

    `start` returns once the socket listens (or raises the `OSError` that prevented it); `stop` closes
    the server and joins the thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._server: HostBudgetServer | None = None
        self._thread = threading.Thread(target=self._run, name="host-budget", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise OSError(f"the host budget did not start listening on {self.path} within {timeout_s}s")
        if self._error is not None:
            raise self._error

    def stop(self, timeout_s: float = 5.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended in between
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """The server thread still runs (False once it stopped, or if it failed)."""
        return self._thread.is_alive()

    def status(self) -> dict[str, object]:
        """Counts so far (read from another thread: plain ints and a copied dict, good enough for a log line)."""
        server = self._server
        if server is None:
            return {"socket": self.path, "granted": 0, "refused": 0, "granted_by_worker": {}}
        return {"socket": self.path, "granted": server.gcra.granted, "refused": server.gcra.refused,
                "granted_by_worker": dict(server.granted_by_peer)}

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = HostBudgetServer(self.path)
        try:
            await server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await server.close()
