"""Redis's clock as this replica sees it (pure): the offset between Redis ``TIME`` and the local event-loop
clock, estimated the way NTP's clock filter does, from the fastest recent round trip.

Every script that reads ``TIME`` (the budget reservation, the heartbeat, a clock sample) gives one sample::

    asked   local time the command was written        replied   local time the reply was read
    redis   Redis's TIME inside the script

    offset  = redis - (asked + replied) / 2            error = (up leg - down leg) / 2, |error| <= rtt / 2

The estimate is the sample with the smallest round trip among those of the last ``window_s``: a slow or
jittery path does not move it, only a fast (hence nearly symmetric) round trip does. A shared slot, a
moment on Redis's clock, becomes a local moment as ``redis_time - offset``: consecutive slots keep their
spacing on the local clock up to the estimate's error, whatever the jitter of each reply.

Guarantee (the one assumption the budget states about the Redis path): the error of the estimate is half
the difference between the two legs of the fastest round trip in the window, so it is at most
``best_rtt / 2`` and near 0 when that trip's legs were about equal. Non-guarantee: a path whose fastest trips
are lopsided (say 5 ms up and 60 ms down, every time) biases the estimate by up to half that difference.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

#: How long a sample may serve as the estimate (clocks drift apart slowly: NTP slews at most 500 ppm).
WINDOW_S: Final = 60.0
#: Round trips remembered for the reservation lead (how far ahead a reply has to arrive).
RECENT_TRIPS: Final = 32


@dataclass(frozen=True, slots=True)
class Sample:
    asked: float
    replied: float
    redis: float

    @property
    def rtt(self) -> float:
        return self.replied - self.asked

    @property
    def offset(self) -> float:
        return self.redis - (self.asked + self.replied) / 2


class RedisClock:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[Sample] = deque()
        self._best: Sample | None = None
        self._trips: deque[float] = deque(maxlen=RECENT_TRIPS)
        self.observed = 0

    def observe(self, asked: float, replied: float, redis_time: float) -> None:
        """One round trip (local loop times) and the Redis ``TIME`` read inside it (seconds)."""
        if replied < asked:
            return
        sample = Sample(asked, replied, redis_time)
        self.observed += 1
        self._trips.append(sample.rtt)
        self._samples.append(sample)
        self._expire(replied)
        if self._best is None or sample.rtt <= self._best.rtt:
            self._best = sample

    def _expire(self, now: float) -> None:
        expired = False
        while self._samples and now - self._samples[0].replied > self.window_s:
            self._samples.popleft()
            expired = True
        if expired:
            self._best = min(self._samples, key=lambda sample: sample.rtt, default=None)

    @property
    def known(self) -> bool:
        return self._best is not None

    @property
    def offset(self) -> float:
        """Redis time minus local time, per the best sample (0 before any)."""
        return self._best.offset if self._best is not None else 0.0

    @property
    def best_rtt(self) -> float | None:
        return self._best.rtt if self._best is not None else None

    @property
    def uncertainty(self) -> float:
        """The largest error of `offset` (half the best round trip); infinite before any sample."""
        return self._best.rtt / 2 if self._best is not None else float("inf")

    def to_local(self, redis_time: float) -> float:
        return redis_time - self.offset

    def lead(self, cap: float) -> float:
        """How far ahead of Redis's now a slot should be, so its reply arrives before it: the slowest recent
        round trip (an upper bound on the reply leg), at most ``cap``."""
        return min(cap, max(self._trips, default=0.0))
