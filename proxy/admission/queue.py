"""One action's upstream queue in one process: grants spaced `spacing_interval` apart, bounded,
with deadlines.

Built on aiolimiter as ``AsyncLimiter(1, T)``: a bucket of one, so there is no initial burst and
consecutive grants are at least ``T`` apart (aiolimiter checks the level synchronously before each
grant, so no interleaving can break the spacing). Waiters are served roughly in arrival order.

Spacing grants is not enough: the upstream counts *arrivals*, and under load the time between a grant
and the request leaving the socket varies (a busy event loop, a new connection). So a grant is also a
*send slot*: the next grant waits until the previous granted request has been written (or has failed
to be) and until ``T`` after that write. Consecutive requests therefore leave at least ``T`` apart,
measured when their headers hit the socket, whatever happened between grant and send; only the
network's own jitter remains for δ to cover.

Guarantees:

* a miss that finds the queue full, or that the queue ahead of it cannot serve before its deadline,
  is refused at once with `Overloaded` and an honest retry time: how long the queue now ahead takes
  to drain. "Served before its deadline" means granted early enough for the upstream's usual answer
  time (an average of recent calls) to fit too, and the wait is estimated with the spacing actually
  observed under backlog when that is wider than ``T`` (sends anchor the next grant, see above);
* a miss that is still queued when its grant could no longer fit leaves the queue
  (`DeadlineExceeded`) and is never sent;
* nothing is dropped silently: every `acquire` returns a grant or raises.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from aiolimiter import AsyncLimiter

from proxy.admission.coordinator import Coordinator
from proxy.admission.spacing import estimated_wait, spacing_interval
from proxy.errors import DeadlineExceeded, Overloaded

#: Weight of the newest sample in the running averages of spacing and answer time.
EWMA_WEIGHT: Final = 0.2
#: Assumed answer time (seconds) before the first call is observed.
INITIAL_UPSTREAM_TIME: Final = 0.25


@dataclass
class QueueStats:
    granted: int = 0
    refused_full: int = 0
    refused_deadline: int = 0
    expired: int = 0
    max_send_delay: float = 0.0

    def record_send_delay(self, delay: float) -> None:
        self.max_send_delay = max(self.max_send_delay, delay)


class UpstreamQueue:
    def __init__(self, action: str, rate_per_second: int, margin_s: float, bound: int,
                 coordinator: Coordinator | None = None) -> None:
        self.action = action
        self.coordinator = coordinator
        self.rate = rate_per_second
        self.interval = spacing_interval(rate_per_second, margin_s)
        self.bound = bound
        self.stats = QueueStats()
        self._limiter = AsyncLimiter(1, self.interval)
        self._waiting = 0
        self._last_grant: float | None = None
        self._last_sent: float | None = None
        self._send_slot = asyncio.Lock()
        # Priors until calls are observed: spacing 3% wider than T (send anchoring and timer granularity add
        # a few ms per slot), and an answer time typical of a CAMS call from the same region.
        self._observed_spacing = self.interval * 1.03
        self._upstream_time = INITIAL_UPSTREAM_TIME

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def effective_interval(self) -> float:
        return max(self.interval, self._observed_spacing)

    def observe_upstream_time(self, seconds: float) -> None:
        """Feed the average answer time that admission keeps free before a deadline."""
        self._upstream_time += EWMA_WEIGHT * (seconds - self._upstream_time)

    def estimated_wait(self, now: float) -> float:
        anchor = self._last_grant
        if self._last_sent is not None and (anchor is None or self._last_sent > anchor):
            anchor = self._last_sent
        return estimated_wait(now, anchor, self._waiting, self.effective_interval)

    async def acquire(self, deadline: float) -> Grant:
        """Wait for an upstream slot; the caller must send at once and then call ``grant.sent(at)``
        (or ``grant.release()`` if nothing was sent).

        ``deadline`` is in event-loop time. Raises `Overloaded` (refused at once) or
        `DeadlineExceeded` (gave up while queued).
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait = self.estimated_wait(now)
        grant_by = deadline - self._upstream_time
        if self._waiting >= self.bound:
            self.stats.refused_full += 1
            raise Overloaded(f"The upstream queue for {self.action} is full ({self.bound} waiting); "
                             f"retry in {wait:.1f}s.", wait)
        if now + wait > grant_by:
            self.stats.refused_deadline += 1
            raise Overloaded(f"The upstream queue for {self.action} cannot serve this request before its "
                             f"deadline (about {wait:.1f}s of calls ahead at {self.rate}/s); retry in {wait:.1f}s.",
                             wait)
        self._waiting += 1
        holding = False
        send_by: float | None = None
        try:
            async with asyncio.timeout_at(max(now, grant_by)):
                await self._limiter.acquire()
                await self._send_slot.acquire()
                holding = True
                if self._last_sent is not None:
                    gap = self._last_sent + self.interval - loop.time()
                    if gap > 0:
                        await asyncio.sleep(gap)
                if self.coordinator is not None:
                    # Replicas: the slot itself comes from the shared budget (or the local share).
                    send_by = await self.coordinator.slot(self.action, self.rate, self.interval, grant_by)
        except TimeoutError as exc:
            if holding:
                self._send_slot.release()
            self.stats.expired += 1
            raise DeadlineExceeded(f"The request's deadline passed while it waited for an upstream slot for "
                                   f"{self.action}; it was not sent.") from exc
        except BaseException:
            if holding:
                self._send_slot.release()
            raise
        finally:
            self._waiting -= 1
        granted = loop.time()
        if self._last_grant is not None and self._waiting > 0:
            # Back-to-back grants under backlog: learn the spacing actually achieved.
            self._observed_spacing += EWMA_WEIGHT * ((granted - self._last_grant) - self._observed_spacing)
        self._last_grant = granted
        self.stats.granted += 1
        return Grant(self, granted, send_by)

    def _sent(self, grant: Grant, at: float) -> None:
        self._last_sent = at if self._last_sent is None else max(self._last_sent, at)
        self.stats.record_send_delay(at - grant.granted_at)
        self._send_slot.release()

    def _released(self) -> None:
        self._send_slot.release()


class Grant:
    """One upstream send slot. Exactly one of `sent` or `release` frees it; later calls do nothing."""

    __slots__ = ("_done", "_queue", "granted_at", "send_by")

    def __init__(self, queue: UpstreamQueue, granted_at: float, send_by: float | None = None) -> None:
        self._queue = queue
        self.granted_at = granted_at
        #: Loop time by which the call must have left (shared slots); None: no window.
        self.send_by = send_by
        self._done = False

    def sent(self, at: float) -> None:
        """The request's headers were written at loop time ``at``."""
        if not self._done:
            self._done = True
            self._queue._sent(self, at)

    def release(self) -> None:
        """Nothing was sent (or `sent` was already called)."""
        if not self._done:
            self._done = True
            self._queue._released()
