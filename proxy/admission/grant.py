"""One granted upstream send slot (`Grant`), as `proxy.admission.queue.UpstreamQueue.acquire` hands it out.

Guarantees: exactly one of `Grant.sent` or `Grant.release` frees the send slot, whichever comes first; later
calls of either do nothing, so releasing in a ``finally`` after `sent` is safe. The connection taken before the
slot goes to whoever calls `Grant.take_connection` first (the upstream call); if nobody does, `Grant.release`
gives it back to the connection source. Non-guarantees: nothing frees a grant by itself: one that is neither
sent nor released holds its queue's send slot, and the queue's next grant waits for it (until that call's own
deadline). A shadow-mode grant holds no slot.
"""

from __future__ import annotations

from typing import Protocol


class GrantIssuer(Protocol):
    """What a grant reports back to: its queue's `proxy.admission.grant_path.GrantPath`."""

    def on_sent(self, grant: Grant, at: float) -> None:
        """``grant``'s request was written at loop time ``at``: the send slot is free."""
        ...

    def on_released(self) -> None:
        """Nothing was sent: the send slot is free."""
        ...

    def give_back(self, connection: object | None) -> None:
        """An untaken connection (None: nothing to give back)."""
        ...


class Grant:
    """One upstream send slot, with the connection taken for it. Exactly one of `sent` or `release` frees the
    slot; later calls do nothing. The connection goes to whoever calls `take_connection` (the upstream call);
    if nobody does, `release` gives it back."""

    __slots__ = ("_connection", "_done", "_issuer", "aimed_at", "granted_at", "send_by")

    def __init__(self, issuer: GrantIssuer, granted_at: float, send_by: float | None = None,
                 connection: object | None = None, aimed_at: float = 0.0, *, holds_slot: bool = True) -> None:
        self._issuer = issuer
        self.granted_at = granted_at
        #: The moment this call was meant to leave (its slot, or the spacing's next moment); 0: unknown.
        self.aimed_at = aimed_at
        #: Loop time by which the call must have been written (shared slots); None: no window.
        self.send_by = send_by
        self._connection = connection
        self._done = not holds_slot  # False: the send slot is still to be freed

    def take_connection(self) -> object | None:
        """The connection taken before the slot (None without a connection source); it is the caller's now."""
        connection, self._connection = self._connection, None
        return connection

    def sent(self, at: float) -> None:
        """The request's headers were written at loop time ``at``."""
        if not self._done:
            self._done = True
            self._issuer.on_sent(self, at)

    def release(self) -> None:
        """Nothing was sent (or `sent` was already called); an untaken connection goes back."""
        connection, self._connection = self._connection, None
        self._issuer.give_back(connection)
        if not self._done:
            self._done = True
            self._issuer.on_released()
