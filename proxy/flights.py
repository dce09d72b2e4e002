"""The flights seam: who runs the fill of a key. The read-through flow coalesces the misses of one process
itself (`proxy.coalesce.SingleFlight`); a `Flights` decides, for the one flight of this process, whether this
process runs the fill or waits for the one another replica runs.

* `LocalFlights` (no Redis): this process always fills.
* `proxy.replica.flight.LeasedFlights` (Redis): one fill per key across replicas, by fill lease and notice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from proxy.fill import Fill

RunFill = Callable[[], Awaitable[Fill]]


class Flights(Protocol):
    async def fill(self, key: str, run: RunFill, deadline: float, action: str) -> Fill:
        """The fill of ``key``: ``run()`` here, or the one another replica ran (before ``deadline``, loop
        time); raises `GatewayError` when there is none to give."""
        ...

    async def refresh(self, key: str, run: RunFill, stale_before: float) -> bool:
        """A background refresh of an entry fresh until ``stale_before``: ``run()`` here unless another replica
        is filling the key or has refreshed it meanwhile. False when skipped."""
        ...

    def throttled(self, action: str) -> None:
        """An upstream throttle of ``action`` seen here: every replica's adaptive rate hears of it."""
        ...


class LocalFlights:
    """One process alone: every flight is filled here."""

    async def fill(self, key: str, run: RunFill, deadline: float, action: str) -> Fill:
        return await run()

    async def refresh(self, key: str, run: RunFill, stale_before: float) -> bool:
        await run()
        return True

    def throttled(self, action: str) -> None:
        return None
