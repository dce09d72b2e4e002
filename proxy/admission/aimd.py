"""The adaptive rate (pure: times are given by the caller): AIMD below the documented cap when someone else
spends the account.

The caps are per Alibaba Cloud account, per region and API, so a cron job or a legacy service calling CAMS
directly with any AccessKey of the account makes the upstream throttle the gateway *below* its cap. Sending
on at the cap then keeps being throttled. This controller lowers the rate the queue spaces its grants by::

    rate(t) ∈ [floor, cap]            (floor = FLOOR_SHARE × cap; the cap is never exceeded)

* **Cut** (multiplicative): a throttle while already below the cap, or a second throttle within `WINDOW_S`
  at the cap, sets ``rate ← max(floor, CUT × rate)``; at most one cut per `CUT_EVERY_S` (the calls already in
  flight when the rate was cut are throttled too, and must not cut it again). A single throttle at the cap
  does not cut: that is the adaptive margin's business (`proxy.admission.margin`, jitter on the path). The
  rate at a cut is remembered as the *known-bad* level.
* **Probe** (additive): after `QUIET_S` without a throttle (or a change of rate) the rate rises by
  ``STEP_SHARE × cap``, up to one step below the known-bad level; past it only after the *long quiet*
  (`LONG_QUIET_S`, doubled each time a probe past the known-bad level is cut, halved back when one holds,
  at most `LONG_QUIET_MAX_S`). A probe past it that holds for `QUIET_S` forgets the known-bad level and the
  fast steps resume up to the cap.

So with another client spending part of the account, the gateway settles one step under the rate that was
throttled and tests it again ever more rarely: the throttled count stops growing (up to one per long
quiet); when the other client stops, the next probe holds and the rate climbs back to the cap within about
``long quiet + (cap / step) × QUIET_S``.

Shared across replicas: every replica's throttles reach every other replica (a ``throttle`` notice on the
bus, `proxy.replica.bus`), so their controllers see the same events, and the Redis budget spaces every replica's
slots by the widest interval any replica asked for in the last 10 s (`proxy.admission.shared`), so the
lowest rate governs the account. ``--workers`` on one host share it the same way through the host budget.
Non-guarantees: the other client's spending is inferred from throttles alone (nothing tells the gateway how
much it spends); a throttle caused by jitter beyond the margin is indistinguishable from one caused by another
client, so two of them within 10 s also cut (the rate then probes back).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

CUT: Final = 0.5
STEP_SHARE: Final = 0.1
FLOOR_SHARE: Final = 0.1
WINDOW_S: Final = 10.0
CUT_EVERY_S: Final = 2.0
QUIET_S: Final = 2.0
LONG_QUIET_S: Final = 8.0
LONG_QUIET_MAX_S: Final = 120.0
_EPSILON: Final = 1e-9


class AdaptiveRate:
    """One action's rate in one process (its controller is fed with every throttle the account's calls get)."""

    def __init__(self, cap: float, *, start: float = 0.0) -> None:
        if cap <= 0:
            raise ValueError("the cap must be > 0")
        self.cap = float(cap)
        self.step = STEP_SHARE * self.cap
        self.floor = FLOOR_SHARE * self.cap
        self._rate = self.cap
        self._anchor = start  # when the rate last changed
        self._known_bad: float | None = None
        self._long_quiet = LONG_QUIET_S
        self._last_cut = -math.inf
        self._throttles: deque[float] = deque()
        self.cuts = 0
        self.throttles = 0
        self.why = ""

    def rate(self, now: float) -> float:
        """Requests per second to space grants by at ``now`` (≤ cap)."""
        self._advance(now)
        return self._rate

    @property
    def known_bad(self) -> float | None:
        return self._known_bad

    @property
    def long_quiet_s(self) -> float:
        return self._long_quiet

    def throttled(self, now: float) -> bool:
        """A call of this account was throttled at ``now`` (here or on another replica). True if the rate was cut."""
        self._advance(now)
        self.throttles += 1
        while self._throttles and self._throttles[0] <= now - WINDOW_S:
            self._throttles.popleft()
        repeated = bool(self._throttles)
        self._throttles.append(now)
        if self._rate < self.cap - _EPSILON:
            self._anchor = max(self._anchor, now)  # probes come only after a quiet spell without throttles
        if now - self._last_cut < CUT_EVERY_S:
            return False  # calls sent before the last cut
        below_cap = self._rate < self.cap - _EPSILON
        if not (below_cap or repeated):
            return False
        if self._known_bad is not None and self._rate >= self._known_bad - _EPSILON:
            self._long_quiet = min(LONG_QUIET_MAX_S, 2 * self._long_quiet)  # the probe past it failed again
        before = self._rate
        self._known_bad = before
        self._rate = max(self.floor, CUT * before)
        self._anchor = self._last_cut = now
        self.cuts += 1
        reason = "below the cap" if below_cap else f"twice within {WINDOW_S:.0f} s"
        self.why = f"throttled {reason} at {before:.2f}/s: cut to {self._rate:.2f}/s"
        return True

    def _advance(self, now: float) -> None:
        """Apply the probes due by ``now`` (lazily: nothing runs between calls)."""
        while self._rate < self.cap - _EPSILON:
            bad = self._known_bad
            if bad is not None and self._rate >= bad - _EPSILON and now >= self._anchor + QUIET_S:
                self._known_bad = None  # a probe past the known-bad level held: the other spender has gone
                self._long_quiet = max(LONG_QUIET_S, self._long_quiet / 2)
                self.why = f"a probe at {self._rate:.2f}/s held"
                continue
            below_plateau = bad is None or self._rate < bad - self.step - _EPSILON
            due = self._anchor + (QUIET_S if below_plateau else self._long_quiet)
            if now < due:
                return
            if below_plateau:
                ceiling = self.cap if bad is None else bad - self.step
                self._rate = min(self.cap, ceiling, self._rate + self.step)
            else:
                self._rate = min(self.cap, self._rate + self.step)
            self._anchor = due
        self._rate = self.cap
        self._known_bad = None

    def status(self, now: float) -> dict[str, object]:
        rate = self.rate(now)
        return {"rate": round(rate, 3), "cap": self.cap, "known_bad": self._known_bad,
                "long_quiet_s": self._long_quiet, "cuts": self.cuts, "throttles": self.throttles,
                "why": self.why}
