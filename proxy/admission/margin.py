"""The adaptive spacing margin δ(t) (pure: times are given by the caller).

Grants are ``T = (1 s + δ) / R`` apart, so any ``R + 1`` sends span ``1 s + δ − guard`` (the send guard, see
`proxy.admission.queue`). The upstream counts arrivals, so what is left, ``δ − guard``, must cover the spread of
one-way latency on the upstream path. A fixed δ is too small for a WAN or wastes quota on a LAN; this one is
measured::

    δ(t) = min(ceiling, max(floor, guard + spread, bump(t)))      once `MIN_SAMPLES` answers were seen
    δ(t) = ceiling                                                  before that (learning, when asked for)

* ``spread`` is the one-way jitter estimated from the answer times of recent calls (each timed from the write of
  the request on a connection already open to the read of its answer, so no handshake is in it):
  ``√6 × std(answer times) × (1 + 2/√(2(n−1)))`` over the last ``n`` answers. ``√6`` is exact when both
  directions have the same, uniform jitter ``±J``: an answer time's jitter is then the sum of two, with standard
  deviation ``J·√(2/3)``, and the one-way spread is ``2J``. The last factor is an upper confidence bound on the
  standard deviation (two standard errors of a sample std, ``σ/√(2(n−1))``): a sample of a few dozen answers
  under-estimates the spread by 10–15 % about one time in six, and δ must err wide (×1.82 at 4 answers, ×1.18
  at 64). Nothing is estimated before `MIN_SAMPLES` answers.
* **Learning** (doorman's learning mode, for the margin): until then nothing is known about the path, and a
  floor that a WAN's jitter exceeds would let the first second of a backlog over the cap on each replica
  that starts. A process's margin (``learning=True``, as the gateway builds it) is the ceiling until its
  first `MIN_SAMPLES` answers: the first few calls of a process cost at most ``1 / (1 + ceiling)`` of the
  cap, and no replica sends on a guess.
* ``bump`` is set when the upstream throttles a call: at once to 1.5× the measured δ (and at least the
  measured δ plus the floor, and twice the floor), then halving every ``half_life_s``, so a throttle widens
  δ immediately and δ decays slowly back to what is measured.
  Repeated throttles do not compound (the adaptive rate is for an upstream that keeps throttling).
* ``floor`` is ``--spacing-margin-ms``; ``guard`` is `GUARD_S` (5 ms, or the floor if that is smaller: it covers
  event-loop lateness, not the network); ``ceiling`` bounds what a burst of slow answers can cost (at most
  ``1 / (1 + ceiling)``).

Guarantee (with the send guard): no 1-second window at the upstream holds more than the cap while the one-way
jitter of the path stays within ``δ(t) − guard`` (while learning: within the ceiling minus the guard).
Non-guarantees: the estimate lags a sudden change of the path by up to the window of samples (a throttle then
widens δ at once); variation in the upstream's own processing time counts as jitter (δ errs wide); a path
whose jitter is one-sided (all of it on the request leg) is under-estimated by up to √2, which the throttle
bump and the floor cover.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Final

#: Answers the estimate is taken from (the most recent ones).
SAMPLES: Final = 64
#: Answers needed before the estimate is used (a learning process's first fraction of a second of a backlog).
MIN_SAMPLES: Final = 4
#: The send guard at most, seconds: event-loop lateness between a grant's moment and its write.
GUARD_S: Final = 0.005
#: One-way spread per standard deviation of answer time (uniform, symmetric jitter).
SPREAD_PER_STD: Final = math.sqrt(6.0)
#: Standard errors added to the sampled standard deviation (an upper bound that holds ~97 % of the time).
STD_ERRORS: Final = 2.0
#: The widest δ by default, seconds (utilisation 1 / 1.25 = 0.8 at worst).
CEILING_S: Final = 0.25
#: How long a throttle's bump takes to halve, seconds.
HALF_LIFE_S: Final = 60.0
#: A change of δ by this fraction since it was last reported is worth a log line.
REPORT_CHANGE: Final = 0.25


class AdaptiveMargin:
    """One process's δ(t), shared by its queues (the upstream path is the same for every action)."""

    def __init__(self, floor_s: float, *, ceiling_s: float = CEILING_S, half_life_s: float = HALF_LIFE_S,
                 samples: int = SAMPLES, learning: bool = False) -> None:
        if floor_s < 0:
            raise ValueError("the margin floor must be >= 0")
        self.floor_s = floor_s
        self.guard_s = min(floor_s, GUARD_S)
        self.ceiling_s = max(floor_s, ceiling_s)
        self.learning = learning
        self.half_life_s = half_life_s
        self._answers: deque[float] = deque(maxlen=max(MIN_SAMPLES, samples))
        self._spread = 0.0
        self._bump = 0.0
        self._bumped_at = 0.0
        self._reported = floor_s
        self.throttles = 0

    @property
    def learned(self) -> bool:
        """True once the path has been measured (`MIN_SAMPLES` answers), or when not learning at all."""
        return not self.learning or len(self._answers) >= MIN_SAMPLES

    @property
    def spread_s(self) -> float:
        """The one-way jitter estimated from recent answers (0 until `MIN_SAMPLES` were seen)."""
        return self._spread

    def observe(self, answer_s: float) -> None:
        """One answer time (seconds from the write of the request to the read of its answer)."""
        if not math.isfinite(answer_s) or answer_s < 0:
            return
        self._answers.append(answer_s)
        if len(self._answers) >= MIN_SAMPLES:
            count = len(self._answers)
            upper_bound = 1 + STD_ERRORS / math.sqrt(2 * (count - 1))
            self._spread = SPREAD_PER_STD * statistics.pstdev(self._answers) * upper_bound

    def throttled(self, now: float) -> None:
        """The upstream throttled a call: widen δ at once."""
        self.throttles += 1
        measured = max(self.floor_s, self.guard_s + self._spread)  # not the bump itself: throttles do not compound
        widened = max(1.5 * measured, measured + self.floor_s, 2 * self.floor_s)
        self._bump = max(self.bump(now), min(self.ceiling_s, widened))
        self._bumped_at = now

    def bump(self, now: float) -> float:
        if self._bump == 0.0 or self.half_life_s <= 0:
            return 0.0
        return self._bump * math.pow(0.5, max(0.0, now - self._bumped_at) / self.half_life_s)

    def value(self, now: float) -> float:
        """δ at ``now``, seconds."""
        if not self.learned:
            return self.ceiling_s
        return min(self.ceiling_s, max(self.floor_s, self.guard_s + self._spread, self.bump(now)))

    def changed_much(self, now: float) -> bool:
        """True once each time δ has moved by more than `REPORT_CHANGE` since it was last reported."""
        value = self.value(now)
        if abs(value - self._reported) > REPORT_CHANGE * max(self._reported, 1e-3):
            self._reported = value
            return True
        return False

    def status(self, now: float) -> dict[str, object]:
        return {"margin_ms": round(self.value(now) * 1000, 3), "floor_ms": round(self.floor_s * 1000, 3),
                "guard_ms": round(self.guard_s * 1000, 3), "spread_ms": round(self._spread * 1000, 3),
                "throttle_bump_ms": round(self.bump(now) * 1000, 3), "samples": len(self._answers),
                "throttles": self.throttles, "learning": not self.learned}
