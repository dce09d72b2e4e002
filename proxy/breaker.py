"""A circuit breaker for Redis: a dead Redis costs one timeout, not one per request.

Pure: the caller passes ``now`` (any monotonic clock). States::

    CLOSED     calls go to Redis; a failure opens the breaker
    OPEN       calls skip Redis (the caller degrades) until ``cooldown`` has passed
    HALF_OPEN  one probe call may go; success closes, failure re-opens

``recovered_at`` records when a probe last succeeded after an outage: the budget uses it to rejoin
the shared budget without a burst.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    cooldown: float = 1.0
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    recovered_at: float | None = None
    failures: int = 0
    _probing: bool = False

    def allow(self, now: float) -> bool:
        """May a call go to Redis now? In HALF_OPEN only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self, now: float) -> None:
        if self.state is not BreakerState.CLOSED:
            self.recovered_at = now
        self.state = BreakerState.CLOSED
        self._probing = False

    def failure(self, now: float) -> None:
        self.failures += 1
        self.state = BreakerState.OPEN
        self.opened_at = now
        self._probing = False

    @property
    def healthy(self) -> bool:
        return self.state is BreakerState.CLOSED
