"""The replica's side of safe capacity, pure: renewals, failures and local sends on times given by the test."""

from __future__ import annotations

from proxy.admission.safe_capacity import STALE_S, WINDOW_S, LocalLease

HORIZON = 1.0


def test_a_replica_that_never_renewed_holds_nothing_and_says_why() -> None:
    lease = LocalLease(lease_s=60.0, horizon_s=HORIZON)
    assert lease.share("GetChatappTemplateDetail", 0.0) == 0
    assert "has not reached Redis since it started" in lease.why_none("GetChatappTemplateDetail", 0.0)
    assert lease.beliefs(0.0) == {}


def test_the_share_lasts_the_lease_from_the_send_of_the_last_acknowledged_renewal() -> None:
    lease = LocalLease(lease_s=60.0, horizon_s=HORIZON)
    lease.attempt(10.0 + 0.25)
    lease.renewed(10.0, {"T": 2, "W": 3})
    assert lease.share("T", 69.9) == 2 and lease.share("W", 69.9) == 3
    assert lease.share("T", 70.0) == 0  # sent at 10: Redis read it at 10 or later, so its hold outlasts this
    assert "ran out" in lease.why_none("T", 75.0)
    assert lease.beliefs(69.0) == {"T": 2, "W": 3}
    assert lease.beliefs(70.0) == {"T": 0, "W": 0}  # reported as nothing once it ran out


def test_local_spending_starts_only_after_every_renewal_that_could_land_is_stale_and_the_horizon_passed() -> None:
    lease = LocalLease(lease_s=60.0, horizon_s=HORIZON)
    lease.attempt(10.25)
    lease.renewed(10.0, {"T": 2})
    lease.attempt(11.25)  # a renewal sent at 11 whose reply was lost: it may have landed until 11.25
    # Redis treats the replica as possibly spending from its last renewal + STALE_S; shared slots reserved before
    # that reach at most the horizon further; the window after them must be clear too.
    assert lease.local_from(failed_at=11.5) == 11.25 + STALE_S + HORIZON + WINDOW_S
    # A failure long after the last renewal attempt (the heartbeat stopped) waits for its own shared slots.
    assert lease.local_from(failed_at=30.0) == 30.0 + HORIZON + WINDOW_S


def test_after_local_sends_the_next_renewal_waits_a_window() -> None:
    lease = LocalLease(lease_s=60.0, horizon_s=HORIZON)
    assert lease.renew_after() == float("-inf")
    lease.spent_locally(20.0)
    lease.spent_locally(19.0)  # out of order: the latest counts
    assert lease.renew_after() == 20.0 + WINDOW_S


def test_a_lower_grant_is_adopted_at_once_and_reported_next_time() -> None:
    lease = LocalLease(lease_s=60.0, horizon_s=HORIZON)
    lease.renewed(1.0, {"T": 5})
    lease.renewed(2.0, {"T": 1})
    assert lease.share("T", 2.5) == 1 and lease.beliefs(2.5) == {"T": 1}
    assert lease.status(2.5)["granted"] is True
