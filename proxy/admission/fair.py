"""Who gets the next upstream slot (pure): strict priority tiers, and within a tier deficit round robin
over per-tenant queues, by weight.

Priorities: interactive misses, then background refreshes, then warm-up. A lower tier is served only
when every higher tier is empty, so a refresh or warm-up call can delay an interactive miss by at most
the one slot it already holds.

Tenants: deficit round robin (DRR) with unit cost per call. Each visit adds ``weight`` to a tenant's
deficit; the tenant is served while its deficit holds a whole call. Among backlogged tenants this
converges to max-min fair shares by weight (youtube/doorman's FAIR_SHARE algorithm): a
tenant that wants less than its share gets all it wants, the rest split the remainder by weight. A
tenant flooding the queue only lengthens its own queue; each tenant's queue has its own bound.

No clocks and no asyncio here: the queue (`proxy.admission.queue`) holds the waiters' futures.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Priority(IntEnum):
    INTERACTIVE = 0
    REFRESH = 1
    WARM = 2


class TenantQueueFull(Exception):
    """This tenant already has ``bound`` calls waiting at this priority."""


@dataclass
class _Tier(Generic[T]):
    queues: dict[str, deque[T]] = field(default_factory=dict)
    active: deque[str] = field(default_factory=deque)  # round-robin order of tenants with waiters
    deficit: dict[str, float] = field(default_factory=dict)
    fresh_visit: bool = True  # the tenant at the head has not received this visit's quantum yet


class FairQueue(Generic[T]):
    def __init__(self, weight: Callable[[str], float] = lambda tenant: 1.0, bound: int = 200) -> None:
        self._weight = weight
        self.bound = bound
        self._tiers: dict[Priority, _Tier[T]] = {priority: _Tier() for priority in Priority}
        self._where: dict[T, tuple[Priority, str]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item: T) -> bool:
        return item in self._where

    def depth(self, priority: Priority) -> int:
        """Calls queued at ``priority``, all tenants."""
        return sum(len(queue) for queue in self._tiers[priority].queues.values())

    def waiting(self, tenant: str, priority: Priority = Priority.INTERACTIVE) -> int:
        queue = self._tiers[priority].queues.get(tenant)
        return len(queue) if queue else 0

    def push(self, item: T, tenant: str, priority: Priority = Priority.INTERACTIVE) -> None:
        """Queue ``item`` last among ``tenant``'s calls; raises `TenantQueueFull`."""
        tier = self._tiers[priority]
        queue = tier.queues.get(tenant)
        if queue is None:
            queue = tier.queues[tenant] = deque()
            tier.active.append(tenant)
            tier.deficit[tenant] = 0.0
        if len(queue) >= self.bound:
            raise TenantQueueFull(tenant)
        queue.append(item)
        self._where[item] = (priority, tenant)

    def remove(self, item: T) -> bool:
        """Take ``item`` out (its waiter gave up); False if it is not queued."""
        where = self._where.pop(item, None)
        if where is None:
            return False
        priority, tenant = where
        tier = self._tiers[priority]
        queue = tier.queues[tenant]
        queue.remove(item)
        if not queue:
            self._drop_tenant(tier, tenant)
        return True

    def promote(self, item: T, tenant: str, priority: Priority) -> bool:
        """Move a queued ``item`` to ``tenant``'s queue at ``priority`` if that serves it sooner (a higher tier,
        or the same tier for a tenant with fewer calls ahead); it goes last there. False if it was not queued,
        would not gain, or that queue is full (then it stays where it was)."""
        where = self._where.get(item)
        if where is None:
            return False
        current_priority, current_tenant = where
        if priority > current_priority or (priority == current_priority and (
                tenant == current_tenant or self.waiting(tenant, priority) >= self.waiting(current_tenant, priority))):
            return False
        if self.waiting(tenant, priority) >= self.bound:
            return False
        self.remove(item)
        self.push(item, tenant, priority)
        return True

    def pop(self) -> T | None:
        """The next item to serve, or None when nothing waits."""
        for priority in Priority:
            tier = self._tiers[priority]
            if tier.active:
                return self._pop_from(tier)
        return None

    def _pop_from(self, tier: _Tier[T]) -> T:
        while True:
            tenant = tier.active[0]
            if tier.fresh_visit:
                tier.deficit[tenant] += self._weight(tenant)
                tier.fresh_visit = False
            if tier.deficit[tenant] >= 1.0:
                tier.deficit[tenant] -= 1.0
                queue = tier.queues[tenant]
                item = queue.popleft()
                del self._where[item]
                if not queue:
                    self._drop_tenant(tier, tenant)
                return item
            tier.active.rotate(-1)  # this visit is spent: the next tenant's turn
            tier.fresh_visit = True

    def _drop_tenant(self, tier: _Tier[T], tenant: str) -> None:
        """A tenant whose queue empties leaves the round and forfeits its deficit (standard DRR)."""
        was_head = bool(tier.active) and tier.active[0] == tenant
        del tier.queues[tenant]
        del tier.deficit[tenant]
        tier.active.remove(tenant)
        if was_head:
            tier.fresh_visit = True

    def order(self) -> list[T]:
        """Every queued item in the order `pop` would serve them now (nothing is changed)."""
        served: list[T] = []
        for priority in Priority:
            tier = self._tiers[priority]
            left = {tenant: len(queue) for tenant, queue in tier.queues.items()}
            taken = dict.fromkeys(left, 0)
            deficit = dict(tier.deficit)
            active = deque(tier.active)
            fresh = tier.fresh_visit
            while active:
                tenant = active[0]
                if fresh:
                    deficit[tenant] += self._weight(tenant)
                    fresh = False
                if deficit[tenant] >= 1.0:
                    deficit[tenant] -= 1.0
                    served.append(tier.queues[tenant][taken[tenant]])
                    taken[tenant] += 1
                    if taken[tenant] == left[tenant]:
                        active.popleft()
                        fresh = True
                    continue
                active.rotate(-1)
                fresh = True
        return served

    def ahead_of(self, tenant: str, priority: Priority = Priority.INTERACTIVE) -> int:
        """About how many queued calls a new call from ``tenant`` at ``priority`` would wait behind: every
        call of a higher tier, and in its own tier each tenant's calls up to its weighted share of the
        rounds this tenant needs."""
        ahead = sum(len(self._tiers[p].queues.get(t, ())) for p in Priority if p < priority
                    for t in self._tiers[p].queues)
        tier = self._tiers[priority]
        own_weight = max(self._weight(tenant), 1e-9)
        rounds = (self.waiting(tenant, priority) + 1) / own_weight
        for other, queue in tier.queues.items():
            if other == tenant:
                ahead += len(queue)
            else:
                ahead += min(len(queue), math.ceil(rounds * self._weight(other)))
        return ahead
