"""Who a coalesced flight's one upstream call is for, and until when (pure: no clock, no asyncio).

A flight (`proxy.coalesce.SingleFlight`) sends one call for every request that joins it; the call waits in the
upstream queue (`proxy.admission.queue.UpstreamQueue.acquire`) on behalf of all of them.

Guarantees: the demand's deadline is the longest of everyone who joined, its priority the highest, and its tenant
that of the request that brought that priority (the first one, among equals); every change is told at once, in
the caller's stack, to each watcher still registered, in the order they were registered. Non-guarantees: a
demand never shrinks (a request that leaves the flight keeps its deadline and priority in it); a join that
changes nothing tells nobody.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.admission.fair import Priority


class Demand:
    """Who a call is for and until when; a coalesced flight's demand rises as requests join it.

    `join` keeps the longest deadline and the highest priority (with that request's tenant) of everyone
    waiting, and tells the watchers (the queue the call waits in)."""

    __slots__ = ("_watchers", "deadline", "priority", "tenant")

    def __init__(self, tenant: str, priority: Priority, deadline: float) -> None:
        self.tenant = tenant
        self.priority = priority
        self.deadline = deadline
        self._watchers: list[Callable[[], None]] = []

    def join(self, tenant: str, priority: Priority, deadline: float) -> None:
        changed = False
        if deadline > self.deadline:
            self.deadline, changed = deadline, True
        if priority < self.priority:
            self.priority, self.tenant, changed = priority, tenant, True
        if changed:
            for watcher in list(self._watchers):
                watcher()

    def watch(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher`` on every change until the returned function is called."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None
