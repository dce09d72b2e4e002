"""The budget's arithmetic (pure): grant spacing and the wait a newcomer faces.

The upstream counts calls *at arrival* in any 1-second window. Grants spaced ``T = (1 + δ) / R``
apart, with no burst, put any ``R + 1`` consecutive grants ``R·T = 1 + δ`` seconds apart, so no
closed 1-second window can hold ``R + 1`` arrivals as long as the spread between a grant and its
arrival upstream stays under δ. A token bucket or aiolimiter's ``AsyncLimiter(R, 1)`` would admit a
burst of R and then drip, letting ``2R - 1`` into one window.
"""

from __future__ import annotations

from dataclasses import dataclass


def spacing_interval(rate_per_second: float, margin_s: float) -> float:
    """Seconds between two grants: ``(1 s + δ) / R``."""
    if not rate_per_second > 0:
        raise ValueError("rate must be > 0 per second")
    if margin_s < 0:
        raise ValueError("margin must be >= 0")
    return (1.0 + margin_s) / rate_per_second


def utilisation(margin_s: float) -> float:
    """Share of the cap used under a backlog: ``1 / (1 + δ)``."""
    return 1.0 / (1.0 + margin_s)


def estimated_wait(now: float, last_grant: float | None, waiting: int, interval: float) -> float:
    """Seconds until a newcomer behind ``waiting`` queued misses would be granted."""
    next_free = now if last_grant is None else max(now, last_grant + interval)
    return (next_free - now) + waiting * interval


@dataclass(frozen=True, slots=True)
class DeadlineFloor:
    """The shortest deadline a miss can have, however empty the queue.

    Admission grants a call only if the upstream's usual answer time still fits before its deadline, so a budget
    below ``fastest_s`` (that answer time) is refused even with nothing queued: retrying cannot help.
    ``advised_s`` adds one slot of the spacing, the wait after a call of the action that has just left."""

    fastest_s: float
    advised_s: float

    def refuses(self, budget_s: float) -> bool:
        return budget_s < self.fastest_s


def deadline_floor(answer_time_s: float, interval_s: float) -> DeadlineFloor:
    """The floor for an action whose calls take ``answer_time_s`` and are spaced ``interval_s`` apart."""
    return DeadlineFloor(max(0.0, answer_time_s), max(0.0, answer_time_s) + max(0.0, interval_s))
