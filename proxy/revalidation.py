"""Background revalidation: the one refresh of a stale entry (stale-while-revalidate, and refresh-ahead).

Guarantees: at most one refresh per key runs in this process, none while a miss of the key is in flight here,
and (through the flights seam) at most one across replicas while Redis answers; at most ``max_refreshes`` run at
once (more are skipped and counted: the stale entry keeps being served until one gets through); each runs at the
refresh priority (below every tenant) under its own deadline. A refresh that fails leaves the stale entry in place.
Non-guarantee: a refresh skipped because the bound is full is not retried by this module; the next stale hit
asks again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from proxy.actions import ActionSpec
from proxy.admission.fair import Priority
from proxy.admission.queue import Demand
from proxy.errors import GatewayError
from proxy.fill import Counters, Fill
from proxy.flights import Flights
from proxy.logs import get_logger
from proxy.tasks import TaskOwner

log = get_logger("proxy.readthrough")
#: The queue tenant of background refreshes (their tier is above tenants anyway).
REFRESH_TENANT: Final = "(refresh)"

StartFill = Callable[[ActionSpec, dict[str, str], str, Demand], Awaitable[Fill]]


class Revalidator:
    def __init__(self, *, fill: StartFill, flights: Flights, owner: TaskOwner, counters: Counters,
                 deadline_s: float, max_refreshes: int) -> None:
        self._fill = fill
        self._flights = flights
        self._owner = owner
        self._counters = counters
        self._deadline_s = deadline_s
        self._max = max_refreshes
        self._running: dict[str, asyncio.Task[None]] = {}

    def running(self, key: str) -> asyncio.Task[None] | None:
        """The refresh of ``key`` under way in this process, if any."""
        return self._running.get(key)

    def start(self, spec: ActionSpec, params: Mapping[str, str], key: str,
              stale_before: float) -> asyncio.Task[None] | None:
        """Start one background refresh of ``key`` (an entry fresh until ``stale_before``) unless one is already
        under way here or the bound is full; the caller checks that no miss of the key is in flight. None when
        skipped."""
        if key in self._running:
            return None
        if len(self._running) >= self._max:
            self._counters.refreshes_skipped += 1
            return None
        try:
            task = self._owner.spawn(self._refresh(spec, dict(params), key, stale_before), name=f"refresh:{key}")
        except RuntimeError:  # shutting down: the stale answer stands, no refresh starts
            return None
        self._running[key] = task
        task.add_done_callback(lambda _task: self._running.pop(key, None))
        return task

    async def _refresh(self, spec: ActionSpec, params: dict[str, str], key: str, stale_before: float) -> None:
        deadline = asyncio.get_running_loop().time() + self._deadline_s
        demand = Demand(REFRESH_TENANT, Priority.REFRESH, deadline)
        try:
            ran = await self._flights.refresh(key, lambda: self._fill(spec, params, key, demand), stale_before)
        except GatewayError as exc:
            self._counters.refresh_failures += 1
            log.info("background refresh failed; the stale entry stays", action=spec.name, code=exc.code)
            return
        if ran:
            self._counters.refreshes += 1
        else:
            self._counters.refreshes_skipped += 1
