"""Single flight per key within one process: concurrent misses for one key share one fill.

The first caller (the leader) starts the fill as an owned task; later callers join it. Everyone,
the leader included, waits through `asyncio.shield`, so a caller whose own deadline passes leaves
without cancelling the fill the others wait on, and the fill still completes (and fills the cache).
A failure is shared the same way: every waiter gets the same exception; nothing is cached by this
module. Waiting is a future, never polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from proxy.tasks import TaskOwner

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, owner: TaskOwner) -> None:
        self._owner = owner
        self._flights: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def has(self, key: str) -> bool:
        return key in self._flights

    def join(self, key: str, start: Callable[[], Coroutine[Any, Any, T]]) -> tuple[asyncio.Task[T], bool]:
        """The flight for ``key`` and whether this caller started it."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        flight = self._owner.spawn(start(), name=f"fill:{key}")
        self._flights[key] = flight
        flight.add_done_callback(lambda _task: self._flights.pop(key, None))
        return flight, True

    @staticmethod
    async def wait(flight: asyncio.Task[T], deadline: float) -> T:
        """The flight's result, waiting at most until ``deadline`` (loop time) without cancelling it.

        Raises TimeoutError when the deadline passes first."""
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(flight)
