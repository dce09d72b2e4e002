"""Safe capacity: the part of each cap a replica may spend without Redis, held back for it by the shared budget
(youtube/doorman's leases and safe capacity, for a GCRA kept in Redis). This module is the replica's side, pure
(times are given by the caller, on the local event-loop clock); the two Redis scripts are in
`proxy.replica.heartbeat` (grants) and `proxy.admission.shared` (holding back).

**Grants** (the heartbeat script, every second while Redis is healthy). A replica renews its lease and is
granted, per action, ``min(target, cap − Σ shares the other lease holders hold)``, where ``target`` is
``floor(cap / n)`` plus one for the first ``cap mod n`` of the ``n`` live replicas (by id): so when ``n > cap``
the first ``cap`` replicas get 1 and the others 0, and the shares add up to the cap once they have converged.
Redis records what the replica *holds*, ``max(grant, the share it says it believes)``: a reply lost on the way
never leaves a replica believing more than Redis accounts for. Invariant: per action, Σ held ≤ cap.

**Held back** (the reserve script). A lease holder whose renewals stopped (its last one older than `STALE_S`)
may be spending its share locally, so until its hold ends (its last renewal + lease + `WINDOW_S`) every shared
slot is spaced for ``cap − Σ such shares``. A replica that left (graceful shutdown) is dropped at once.

**Spent locally** (`LocalLease`, here). Without Redis a replica spends only what it was granted, and only

* from `local_from`: `STALE_S` + the reservation horizon + `WINDOW_S` after the later of (a) the last moment a
  renewal of its could have reached Redis (a renewal carries an accept-by time on Redis's clock: one that
  arrives later is void) and (b) the failure (its last shared slot is at most the horizon after it). So every
  1-second window that holds a local send starts after the others' shared slots are held back for its share;
* until `lease_until`: `lease_s` after the *send* of its last acknowledged renewal (so before Redis's hold of
  that renewal ends, and `WINDOW_S` before it: the last local send's window is covered too);
* never if it has not been granted anything since it started (it has never reached Redis, or its lease ran
  out): misses are refused with ``Retry-After``; hits and stale entries still flow.

After spending locally it renews only `WINDOW_S` after its last local send (a renewal ends the holding back).

**The guarantee**: per action, the shared slots and every replica's local sends together put at most the cap into
any 1-second window, for any set of replicas cut from Redis, at any moment, for any time. **Its one assumption**:
Redis's ``TIME`` and every replica's monotonic clock advance at the same rate during a lease (no step of Redis's
clock; NTP slews at most 500 ppm, i.e. 15 ms over the default 30 s lease, inside `WINDOW_S`'s quarter second of slack).
On top of it the network assumptions of the shared budget hold as before (the spread of one-way jitter within
δ). **The floor of a full outage**: every replica spends its share, Σ = the cap once the shares have converged
(``floor(cap / n)`` each, rounded up for some), from about 5 s after the failure until `lease_s` after its last
renewal; then misses are refused until Redis is back. **The cost**: a replica that crashes keeps its share held
back from the others for up to ``lease_s + WINDOW_S``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

#: A lease holder whose last renewal is older than this is treated as possibly spending locally, seconds.
STALE_S: Final = 2.5
#: The 1-second window of the upstream plus the widest margin (0.25 s) and slack for clock rate and wake-ups.
WINDOW_S: Final = 1.5
#: Lease length by default, seconds: how long a replica cut from Redis may go on spending its share.
LEASE_S: Final = 30.0


@dataclass
class LocalLease:
    """One replica's shares and the bounds of its local spending (loop times)."""

    lease_s: float = LEASE_S
    horizon_s: float = 1.0
    shares: dict[str, int] = field(default_factory=dict)
    #: Send time of the last acknowledged renewal; None: never granted since start (or ran out).
    renewed_at: float | None = None
    #: Latest moment a renewal of this replica may have been accepted by Redis (its accept-by, on this clock).
    may_land_until: float = float("-inf")
    #: When this replica last sent a call on its local share.
    last_local_send: float = float("-inf")
    granted_at_least_once: bool = False

    def attempt(self, accept_by_local: float) -> None:
        """A renewal is about to be sent, void if Redis reads it after ``accept_by_local`` (this clock, with the
        clock estimate's error already added)."""
        self.may_land_until = max(self.may_land_until, accept_by_local)

    def renewed(self, sent_at: float, shares: Mapping[str, int]) -> None:
        """Redis acknowledged the renewal sent at ``sent_at`` with these grants."""
        self.renewed_at = sent_at
        self.shares = dict(shares)
        self.granted_at_least_once = self.granted_at_least_once or any(shares.values())

    def lease_until(self) -> float:
        return float("-inf") if self.renewed_at is None else self.renewed_at + self.lease_s

    def beliefs(self, now: float) -> dict[str, int]:
        """The shares to report with the next renewal: what this replica may still spend (0 once it ran out)."""
        if now >= self.lease_until():
            return {action: 0 for action in self.shares}
        return dict(self.shares)

    def local_from(self, failed_at: float) -> float:
        """The first moment local spending may start after a Redis failure at ``failed_at``."""
        return max(self.may_land_until + STALE_S, failed_at) + self.horizon_s + WINDOW_S

    def share(self, action: str, now: float) -> int:
        """Calls per second this replica may make alone for ``action`` at ``now`` (0 past the lease)."""
        if now >= self.lease_until():
            return 0
        return self.shares.get(action, 0)

    def why_none(self, action: str, now: float) -> str:
        """Why `share` is 0, for the refusal's message."""
        if self.renewed_at is None:
            return "this replica has not reached Redis since it started, so it holds no share of the cap"
        if now >= self.lease_until():
            return (f"this replica's lease on a share of the cap ran out {now - self.lease_until():.0f}s ago "
                    f"({self.lease_s:.0f}s after its last renewal)")
        return f"this replica's share of the {action} cap is 0 (the other replicas hold all of it)"

    def spent_locally(self, at: float) -> None:
        self.last_local_send = max(self.last_local_send, at)

    def renew_after(self) -> float:
        """No renewal before this: a renewal ends the holding back of this replica's share, so its last local
        send must be a window older."""
        return self.last_local_send + WINDOW_S

    def status(self, now: float) -> dict[str, object]:
        until = self.lease_until()
        return {"shares": dict(self.shares), "lease_s": self.lease_s,
                "lease_left_s": round(max(0.0, until - now), 3) if self.renewed_at is not None else 0.0,
                "granted": self.granted_at_least_once}
