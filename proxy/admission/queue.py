"""One action's upstream queue in one process: grants spaced `spacing_interval` apart, bounded,
with deadlines.

Built on aiolimiter as ``AsyncLimiter(1, T)``: a bucket of one, so there is no initial burst and
consecutive grants are at least ``T`` apart (aiolimiter checks the level synchronously before each
grant, so no interleaving can break the spacing). Waiters are served roughly in arrival order.

Guarantees:

* a miss that finds the queue full, or that the queue ahead of it cannot serve before its deadline,
  is refused at once with `Overloaded` and an honest retry time: how long the queue now ahead takes
  to drain;
* a miss whose deadline passes while queued leaves the queue (`DeadlineExceeded`) and is never sent;
* nothing is dropped silently: every `acquire` returns a grant or raises.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiolimiter import AsyncLimiter

from proxy.admission.spacing import estimated_wait, spacing_interval
from proxy.errors import DeadlineExceeded, Overloaded


@dataclass
class QueueStats:
    granted: int = 0
    refused_full: int = 0
    refused_deadline: int = 0
    expired: int = 0
    max_send_delay: float = 0.0
    send_delays: list[float] = field(default_factory=list)

    def record_send_delay(self, delay: float) -> None:
        self.max_send_delay = max(self.max_send_delay, delay)
        self.send_delays.append(delay)
        if len(self.send_delays) > 4096:
            del self.send_delays[:2048]


class UpstreamQueue:
    def __init__(self, action: str, rate_per_second: int, margin_s: float, bound: int) -> None:
        self.action = action
        self.rate = rate_per_second
        self.interval = spacing_interval(rate_per_second, margin_s)
        self.bound = bound
        self.stats = QueueStats()
        self._limiter = AsyncLimiter(1, self.interval)
        self._waiting = 0
        self._last_grant: float | None = None

    @property
    def waiting(self) -> int:
        return self._waiting

    def estimated_wait(self, now: float) -> float:
        return estimated_wait(now, self._last_grant, self._waiting, self.interval)

    async def acquire(self, deadline: float) -> float:
        """Wait for an upstream slot; return the loop time of the grant.

        ``deadline`` is in event-loop time. Raises `Overloaded` (refused at once) or
        `DeadlineExceeded` (gave up while queued).
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        wait = self.estimated_wait(now)
        if self._waiting >= self.bound:
            self.stats.refused_full += 1
            raise Overloaded(f"The upstream queue for {self.action} is full ({self.bound} waiting); "
                             f"retry in {wait:.1f}s.", wait)
        if now + wait > deadline:
            self.stats.refused_deadline += 1
            raise Overloaded(f"The upstream queue for {self.action} cannot serve this request before its "
                             f"deadline (about {wait:.1f}s of calls ahead at {self.rate}/s); retry in {wait:.1f}s.",
                             wait)
        self._waiting += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._limiter.acquire()
        except TimeoutError as exc:
            self.stats.expired += 1
            raise DeadlineExceeded(f"The request's deadline passed while it waited for an upstream slot for "
                                   f"{self.action}; it was not sent.") from exc
        finally:
            self._waiting -= 1
        granted = loop.time()
        self._last_grant = granted
        self.stats.granted += 1
        return granted
