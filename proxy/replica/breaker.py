"""A circuit breaker for Redis: a dead Redis costs one timeout, not one per request.

Pure: the caller passes ``now`` (any monotonic clock). States::

    CLOSED     calls go to Redis; a failure opens the breaker
    OPEN       calls skip Redis (the caller degrades) until ``cooldown`` has passed
    HALF_OPEN  one probe call may go; success closes, failure re-opens

**The probe has a lease.** `allow` hands out one probe at a time; the probe ends with `success`,
`failure` or `probe_done` (``None``: it ended without a verdict, e.g. cancelled by its caller's
deadline). A probe that reported nothing ``probe_timeout`` after it started counts as lost, and the next
`allow` lets a new probe go. `probing` wraps a probe call so that any exit without a verdict (a
cancellation, an unexpected error) releases the probe at once instead of after the lease.

Guarantees: at most one probe in flight per lease period; the breaker never stays HALF_OPEN with no
probe possible for longer than ``probe_timeout``; a late report from a lost probe still counts (Redis
did answer, or did fail) but releasing it never releases a newer probe. Non-guarantees: no thread
safety (one event loop); the breaker does not time the probe call itself (the client's timeouts do).

``recovered_at`` records when a probe last succeeded after an outage: the budget uses it to rejoin
the shared budget without a burst.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    cooldown: float = 1.0
    #: Seconds after which a probe that reported nothing is lost (set it above the probe call's worst case).
    probe_timeout: float = 5.0
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    recovered_at: float | None = None
    failures: int = 0
    #: Probes that ended without a verdict (`probe_done(None)`, a cancellation inside `probing`).
    abandoned_probes: int = 0
    #: Probes that never reported and whose lease ran out.
    lost_probes: int = 0
    _probe_started: float | None = None

    def allow(self, now: float) -> bool:
        """May a call go to Redis now? In HALF_OPEN only one probe at a time (per ``probe_timeout`` lease)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown:
            self.state = BreakerState.HALF_OPEN
            self._probe_started = None
        if self.state is not BreakerState.HALF_OPEN:
            return False
        if self._probe_started is not None:
            if now - self._probe_started < self.probe_timeout:
                return False
            self.lost_probes += 1  # its caller never reported: let another probe go
        self._probe_started = now
        return True

    @property
    def probe_in_flight(self) -> bool:
        """A probe was allowed and has not reported (it may be lost: `allow` decides with ``now``)."""
        return self._probe_started is not None

    def success(self, now: float) -> None:
        if self.state is not BreakerState.CLOSED:
            self.recovered_at = now
        self.state = BreakerState.CLOSED
        self._probe_started = None

    def failure(self, now: float) -> None:
        self.failures += 1
        self.state = BreakerState.OPEN
        self.opened_at = now
        self._probe_started = None

    def probe_done(self, ok: bool | None, now: float, *, started: float | None = None) -> None:
        """The probe ended: True closes, False re-opens, None (no verdict) only releases it, so the next
        `allow` may probe again. With ``started`` (the probe's `allow` time), a None report releases only
        that probe, never a newer one."""
        if ok is True:
            self.success(now)
        elif ok is False:
            self.failure(now)
        else:
            self._release(started)

    def _release(self, started: float | None, *, abandoned: bool = True) -> None:
        if self._probe_started is not None and (started is None or started == self._probe_started):
            self._probe_started = None
            self.abandoned_probes += abandoned

    @contextmanager
    def probing(self) -> Iterator[None]:
        """Wrap the probe call after `allow` said yes: leaving the block by any exception, cancellation
        included, releases this probe (`probe_done(None)`). The verdict (`success` / `failure`) stays the
        caller's, given inside or after the block."""
        started = self._probe_started
        try:
            yield
        except Exception:  # an error: released now; the verdict (a failure, usually) is the caller's to give
            self._release(started, abandoned=False)
            raise
        except BaseException:  # cancelled (a deadline, a shutdown): no verdict will come
            self._release(started)
            raise

    @property
    def healthy(self) -> bool:
        return self.state is BreakerState.CLOSED
