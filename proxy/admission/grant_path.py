"""The way from the turn to the moment a granted call may be written, for one action's queue in one process.

The upstream queue (`proxy.admission.queue.UpstreamQueue`) picks who goes next; the waiter holding the turn then
goes through `GrantPath.take`, in this order:

1. an upstream connection in hand (`ConnectionSource.connection`: a warm one, or one opened now, TLS handshake
   included), and one more kept warm while others wait (`prewarm`), so nothing after the slot waits on the
   network;
2. the grant gate: at most one grant per ``T`` (the turn holder alone passes it, so it needs no lock), ``T``
   re-read at each pass;
3. the shared slot, if the budget is shared (`SlotSource`), and the send slot: one granted call at a time, paced
   from the previous send (`proxy.admission.send_pacing.SendPacing`). With replicas (the Redis `Coordinator`) the
   slot is reserved first and the turn passed on before waiting for it, so the next call's reservation (a Redis
   round trip) overlaps this one's wait; with ``--workers`` (`proxy.admission.host`) the slot comes after the
   send slot's pacing.

Guarantees: the send slot is held from `take`'s return until the `Grant` made with it is sent or released; if
`take` raises (cancelled at the deadline, refused by the shared budget, a connection that could not be opened),
the send slot is freed and the connection given back before the error leaves it. Non-guarantees: the shared slot's
window (``send_by``) is returned, not enforced: the caller checks that its write came before it; the deadline is
the caller's (a timeout scope around `take`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.admission.coordinator import Coordinator
from proxy.admission.grant import Grant
from proxy.admission.send_pacing import SendPacing
from proxy.admission.sources import ConnectionSource, SlotSource

#: What `GrantPath.take` hands back: (send_by: the shared slot's window or None, the connection or None,
#: send_at: the moment the call was aimed at).
Taken = tuple[float | None, object | None, float]


class GrantPath:
    """The grant gate, the shared slot and the send slot of one queue; the issuer of its grants."""

    def __init__(self, action: str, cap: int, interval: Callable[[], float], guard_s: float,
                 record_send_delay: Callable[[float], None], coordinator: SlotSource | None = None,
                 connections: ConnectionSource | None = None) -> None:
        self.action = action
        self.cap = cap
        self.coordinator = coordinator
        self.connections = connections
        self._interval = interval  # T now
        self._record_send_delay = record_send_delay
        self._next_grant = 0.0  # the grant gate: no grant before this loop time
        #: The send slot's schedule: sends paced from the last one, late by at most the guard (δ/4).
        self.pacing = SendPacing(guard_s)
        self._send_slot = asyncio.Lock()

    async def take(self, loop: asyncio.AbstractEventLoop, grant_by: Callable[[], float],
                   end_turn: Callable[[], None], others_waiting: Callable[[], bool]) -> Taken:
        """Go from the turn to the send moment (the caller holds the turn, and a timeout scope for its deadline).
        ``grant_by`` is read when a shared slot is asked for (a flight's deadline may have grown); ``end_turn``
        passes the turn on early (replicas); ``others_waiting`` says whether to keep one more connection warm."""
        holding = False
        send_by: float | None = None
        send_at = 0.0
        connection: object | None = None
        try:
            if self.connections is not None:
                # The connection first, so nothing after the slot waits on the network.
                connection = await self.connections.connection()
                if others_waiting():
                    self.connections.prewarm(1)  # the next turn finds one in hand
            await self._grant_gate(loop)
            if isinstance(self.coordinator, Coordinator):
                # Replicas: reserve the shared slot, then pass the turn on before waiting for it, so the
                # next call's reservation (a Redis round trip) overlaps this one's wait.
                reserved = await self.coordinator.reserve(self.action, self.cap, self._interval(), grant_by())
                end_turn()
                await self._send_slot.acquire()
                holding = True
                send_by = await self.coordinator.wait(reserved)
                send_at = self.earliest_send(loop.time())  # and the spacing of this process's own sends
                if reserved.at is not None:
                    send_at = max(send_at, reserved.at)
                if send_at > loop.time():
                    await asyncio.sleep(send_at - loop.time())  # past the send window: not sent (send_by)
            else:
                await self._send_slot.acquire()
                holding = True
                send_at = self.earliest_send(loop.time())
                if send_at > loop.time():
                    await asyncio.sleep(send_at - loop.time())
                if self.coordinator is not None:
                    send_by = await self.coordinator.slot(self.action, self.cap, self._interval(), grant_by())
        except BaseException:
            if holding:
                self._send_slot.release()
            self.give_back(connection)
            raise
        return send_by, connection, send_at

    async def _grant_gate(self, loop: asyncio.AbstractEventLoop) -> None:
        """At most one grant per ``T`` (the turn holder alone passes here, so no lock is needed)."""
        wait = self._next_grant - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_grant = loop.time() + self._interval()

    def earliest_send(self, now: float) -> float:
        """When the next call may leave (`SendPacing.earliest` at the spacing of the moment)."""
        return self.pacing.earliest(now, self._interval())

    def on_sent(self, grant: Grant, at: float) -> None:
        self.pacing.sent(grant.aimed_at, at)
        self._record_send_delay(at - grant.granted_at)
        self._send_slot.release()

    def on_released(self) -> None:
        self._send_slot.release()

    def give_back(self, connection: object | None) -> None:
        if connection is not None and self.connections is not None:
            self.connections.give_back(connection)
