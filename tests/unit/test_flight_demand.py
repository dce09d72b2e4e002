"""A flight's demand follows everyone who joined it, and a failed fill on another replica is answered as an error
of the waiter's own (pure)."""

from __future__ import annotations

from proxy.admission.demand import Demand
from proxy.admission.fair import Priority
from proxy.errors import DeadlineExceeded, Overloaded, UpstreamFailed
from proxy.replica.flight import failure_from_notice, failure_notice


def test_demand_keeps_the_longest_deadline_and_the_highest_priority() -> None:
    demand = Demand("leader", Priority.WARM, deadline=10.3)
    changes: list[tuple[str, Priority, float]] = []
    unwatch = demand.watch(lambda: changes.append((demand.tenant, demand.priority, demand.deadline)))
    demand.join("later", Priority.WARM, 10.1)  # shorter, same tier: nothing changes
    demand.join("joiner", Priority.INTERACTIVE, 20.0)
    demand.join("third", Priority.REFRESH, 15.0)  # lower priority, shorter: nothing
    assert changes == [("joiner", Priority.INTERACTIVE, 20.0)]
    unwatch()
    demand.join("fourth", Priority.INTERACTIVE, 30.0)
    assert len(changes) == 1 and demand.deadline == 30.0


def test_a_refusal_travels_with_its_retry_after() -> None:
    notice = failure_notice("k", "replica-a", Overloaded("The upstream queue is full", 2.5))
    error = failure_from_notice(notice)
    assert isinstance(error, Overloaded) and error.status == 503 and error.code == "Throttling.Proxy"
    assert error.headers == {"Retry-After": "3", "x-acs-retry-after": "2500"}
    assert b"RequestId" not in notice.body  # each waiter answers with its own request id


def test_other_failures_keep_their_code_and_status() -> None:
    error = failure_from_notice(failure_notice("k", "a", UpstreamFailed("no answer", code="Proxy.UpstreamTimeout",
                                                                        status=504)))
    assert (error.code, error.status, error.message) == ("Proxy.UpstreamTimeout", 504, "no answer")
    assert failure_from_notice(failure_notice("k", "a", DeadlineExceeded("late"))).code == "Proxy.DeadlineExceeded"
