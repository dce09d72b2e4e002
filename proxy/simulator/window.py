"""The upstream's flow control and the referee's count, per (action, AccessKey).

`SlidingWindowLimiter` is the strictest reading of "N requests/s": a call is accepted only if fewer
than ``cap`` calls were *accepted* in the closed window ``[now - 1 s, now]``. Throttled calls do not
use the budget (the upstream does not charge for them) but they are still *received*, and the
referee counts them: ``max_in_any_1s`` is the largest number of calls received, accepted and
throttled together, in any closed 1-second window since the last reset. It exceeds ``cap`` exactly
when a client sent too many.

Pure: the caller passes ``now`` (seconds, any monotonic clock).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

WINDOW_SECONDS: Final = 1.0


@dataclass
class SlidingWindowLimiter:
    cap: int
    window: float = WINDOW_SECONDS
    _accepted: deque[float] = field(default_factory=deque)
    _received: deque[float] = field(default_factory=deque)
    max_in_any_window: int = 0

    def arrive(self, now: float, *, force_throttle: bool = False) -> bool:
        """Record one call arriving at ``now``; return True if it is accepted."""
        horizon = now - self.window
        received = self._received
        while received and received[0] < horizon:
            received.popleft()
        received.append(now)
        self.max_in_any_window = max(self.max_in_any_window, len(received))
        accepted = self._accepted
        while accepted and accepted[0] < horizon:
            accepted.popleft()
        if force_throttle or len(accepted) >= self.cap:
            return False
        accepted.append(now)
        return True


def max_in_any_window(arrivals: list[float], window: float = WINDOW_SECONDS) -> int:
    """Largest number of ``arrivals`` inside any closed window of length ``window`` (a reference)."""
    ordered = sorted(arrivals)
    best = start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] < moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best
