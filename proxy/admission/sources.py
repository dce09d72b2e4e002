"""What an upstream queue (`proxy.admission.queue.UpstreamQueue`) draws on besides its own spacing: slots of a
budget shared with other processes, and upstream connections taken before the slot.

Interfaces only (structural `Protocol`s, nothing runs here); the implementations are named on each.
"""

from __future__ import annotations

from typing import Protocol


class SlotSource(Protocol):
    """Where a slot comes from besides this queue's own spacing: the budget shared by replicas through Redis
    (`proxy.admission.coordinator.Coordinator`) or by ``--workers`` on one host (`proxy.admission.host`)."""

    async def slot(self, action: str, cap: int, interval: float, grant_by: float) -> float | None:
        """Sleep until this process may send one call; return the loop time by which the call must have been
        written (None: no window). Raise `Overloaded` if no slot can come before ``grant_by``."""
        ...

    def missed(self) -> None:
        """A slot returned by `slot` was not used: the call could not be written within its window."""
        ...

    def status(self) -> dict[str, object]:
        ...


class ConnectionSource(Protocol):
    """Upstream connections taken before the slot (`proxy.upstream.client.UpstreamClient`)."""

    async def connection(self) -> object:
        """A connection in hand (may open one). Raises `proxy.upstream.errors.UpstreamError`."""
        ...

    def give_back(self, connection: object) -> None:
        """A connection from `connection` that was not used."""
        ...

    def prewarm(self, count: int) -> None:
        """Keep ``count`` connections idle or opening."""
        ...
