"""A worker's slot source under ``--workers N`` without Redis: the host budget kept by the supervisor.

`HostBudget` has the queue's slot-source contract (``slot``, ``missed``, ``status``, as `Coordinator`):
each upstream call of every worker reserves its slot from one GCRA in the supervisor
(`proxy.admission.host_budget`), so the N workers together never pass the cap, whatever N is.

Guarantee, and what it assumes:

* the supervisor answers each reservation with an **absolute** slot time on ``CLOCK_MONOTONIC``, the
  clock asyncio's ``loop.time()`` reads in every process of the host; the worker sleeps until that time
  and must have sent by ``slot + late_guard`` (``late_guard = δ/2``). Slots are ``T = (1 s + δ) / cap``
  apart, so any ``cap + 1`` sends span at least ``cap·T - late_guard = 1 s + δ/2``;
* a reply read later than ``slot + late_guard`` (a busy event loop), or a wake-up that late, does not use
  the slot: it stays empty and the worker asks again (`late_slots`);
* a worker that cannot reach the supervisor (not started by it, the supervisor gone, no answer within
  ``reply_timeout``) spends **nothing**: the miss is refused with `Overloaded` (503 ``Throttling.Proxy``,
  ``Retry-After``), hits keep flowing, and the next miss tries to connect again.

One connection per worker; requests on it are serialised by a lock (a round trip on a local socket
is short, and each action's queue asks for one slot at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import orjson

from proxy.admission.host_budget import BUDGET_SOCKET_ENV, MAX_LINE_BYTES
from proxy.admission.margin import GUARD_S, AdaptiveMargin
from proxy.errors import Overloaded
from proxy.logs import get_logger

log = get_logger("proxy.admission")

#: Seconds a refused miss is told to wait when the supervisor cannot be reached.
UNREACHABLE_RETRY_AFTER_S: Final = 1.0


class HostBudgetUnavailable(Exception):
    """The supervisor's budget did not answer (or answered nonsense): nothing may be sent."""


@dataclass
class HostBudgetStats:
    slots: int = 0
    late_slots: int = 0
    refused: int = 0
    unreachable: int = 0


@dataclass(frozen=True, slots=True)
class _Reply:
    granted: bool
    at: float
    wait_s: float


class HostBudget:
    """The client side of the host budget: one persistent connection to the supervisor's socket.

    ``path`` None means this process should take part in a host budget but was given none (a worker
    started without the supervisor): every miss is refused, so nothing is ever sent past the cap.
    """

    def __init__(self, path: str | None, margin_s: float, *, reply_timeout_s: float = 1.0,
                 late_guard_s: float | None = None, learned: Callable[[], bool] = lambda: True) -> None:
        self.path = path
        self.margin_s = margin_s
        self.workers = 1
        self.late_guard_s = min(margin_s, GUARD_S) if late_guard_s is None else late_guard_s
        #: Whether this worker's margin is measured yet (`AdaptiveMargin.learned`): a learning worker's spacing
        #: is not remembered for the others.
        self.learned = learned
        self.reply_timeout_s = reply_timeout_s
        self.stats = HostBudgetStats()
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._last_error: str | None = None

    @classmethod
    def for_worker(cls, workers: int, margin: AdaptiveMargin, environ: Mapping[str, str]) -> HostBudget | None:
        """The host budget of a ``--workers`` worker without Redis, or None for a single process."""
        path = environ.get(BUDGET_SOCKET_ENV) or None
        if path is None and workers <= 1:
            return None
        budget = cls(path, margin.floor_s, late_guard_s=margin.guard_s, learned=lambda: margin.learned)
        budget.workers = max(1, workers)
        return budget

    def sharers(self) -> int:
        """Processes that share this budget (the ``--workers`` count)."""
        return self.workers

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def status(self) -> dict[str, object]:
        return {"mode": "host", "socket": self.path, "connected": self.connected, "host_slots": self.stats.slots,
                "late_slots": self.stats.late_slots, "refused": self.stats.refused,
                "unreachable": self.stats.unreachable, "last_error": self._last_error}

    def missed(self) -> None:
        """A granted slot was not used: the call could not leave in time."""
        self.stats.late_slots += 1

    async def run(self) -> None:
        """Owned background task: connect early (so the first miss pays no connect), close on cancel."""
        try:
            with contextlib.suppress(HostBudgetUnavailable):
                async with self._lock:
                    await self._connect()
            await asyncio.Event().wait()
        finally:
            self.close()

    def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()

    async def slot(self, action: str, cap: int, interval: float, grant_by: float) -> float | None:
        """Sleep until this worker's next host-wide slot for ``action`` and return the loop time by which
        the call must have been written. Raise `Overloaded` if no slot comes before ``grant_by`` or the
        supervisor cannot be reached (then nothing is spent)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                reply = await self._ask(action, interval, grant_by)
            except HostBudgetUnavailable as exc:
                self.stats.unreachable += 1
                if self._last_error is None:  # once per outage, not once per refused miss
                    log.warning("host budget unreachable: misses refused, hits still served", error=str(exc))
                self._last_error = str(exc)
                raise Overloaded(f"The upstream budget shared by this host's workers is unreachable ({exc}); "
                                 f"misses are refused until it answers (cached answers are still served)",
                                 UNREACHABLE_RETRY_AFTER_S) from exc
            if not reply.granted:
                self.stats.refused += 1
                raise Overloaded(f"The upstream budget for {action} shared by this host's workers has no slot "
                                 "before this request's deadline", reply.wait_s)
            delay = reply.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if loop.time() - reply.at > self.late_guard_s:  # the reply or the wake-up came too late
                self.stats.late_slots += 1
                continue
            self.stats.slots += 1
            return reply.at + self.late_guard_s

    async def _connect(self) -> None:
        if self.path is None:
            raise HostBudgetUnavailable(f"this worker was started without the supervisor's socket "
                                        f"({BUDGET_SOCKET_ENV} is not set)")
        if self.connected:
            return
        self.close()
        try:
            async with asyncio.timeout(self.reply_timeout_s):
                self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=MAX_LINE_BYTES)
        except (OSError, TimeoutError) as exc:
            raise HostBudgetUnavailable(f"cannot connect to {self.path}: {exc}") from exc
        self._last_error = None
        log.info("host budget connected", socket=self.path)

    async def _ask(self, action: str, interval: float, grant_by: float) -> _Reply:
        async with self._lock:
            await self._connect()
            reader, writer = self._reader, self._writer
            assert reader is not None and writer is not None
            request_id = next(self._ids)
            line = orjson.dumps({"id": request_id, "action": action, "interval": interval, "by": grant_by,
                                 "learning": not self.learned()})
            done = False
            try:
                async with asyncio.timeout(self.reply_timeout_s):
                    writer.write(line + b"\n")
                    await writer.drain()
                    answer = await reader.readline()
                reply = _parse(answer, request_id)
                done = True
                return reply
            except (OSError, TimeoutError, ValueError) as exc:
                raise HostBudgetUnavailable(f"no answer from {self.path}: {type(exc).__name__}: {exc}") from exc
            finally:
                if not done:  # cancelled, timed out or broken mid-request: a late reply must never be misread
                    self.close()


def _parse(answer: bytes, request_id: int) -> _Reply:
    if not answer:
        raise ValueError("the supervisor closed the connection")
    reply = orjson.loads(answer)
    if not isinstance(reply, dict) or reply.get("id") != request_id:
        raise ValueError(f"unexpected reply {answer[:200]!r}")
    if "error" in reply:
        raise ValueError(f"refused the request: {reply['error']}")
    granted, at, wait = reply.get("granted"), reply.get("at"), reply.get("wait")
    if not isinstance(granted, bool) or not isinstance(at, int | float) or not isinstance(wait, int | float):
        raise ValueError(f"malformed reply {answer[:200]!r}")
    return _Reply(granted, float(at), float(wait))
