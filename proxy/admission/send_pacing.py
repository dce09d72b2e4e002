"""When the next granted call may leave (pure: times are given by the caller).

Spacing grants is not enough: the upstream counts *arrivals*, and under load the time between a grant and the
request leaving the socket varies (a busy event loop, a new connection). So a grant of the upstream queue
(`proxy.admission.queue.UpstreamQueue`) is also a *send slot*: the next grant waits until the previous granted
request has been written (or has failed to be), and then until `SendPacing.earliest`: ``T`` after the moment the
last send was aimed at, or ``T − guard`` after it actually left if that is later (guard = δ/4,
`proxy.admission.margin.AdaptiveMargin.guard_s`), so a few ms of event-loop lateness per send do not accumulate
into lost quota.

Guarantees: consecutive sends leave at least ``T − guard`` apart, measured when their bytes were written, and any
``cap + 1`` consecutive ones at least ``cap·T − guard = 1 s + δ − guard`` apart, whatever happened between grant
and send; a send later than its aimed moment shifts the schedule only by what it was late beyond the guard.
Non-guarantees: the network's own jitter between the write and the upstream's arrival count is not seen here (the
rest of δ must cover it); ``T`` is the caller's, read at each call (it may change between sends).
"""

from __future__ import annotations


class SendPacing:
    """The last send of one queue and the moment it was aimed at; `earliest` says when the next may leave."""

    __slots__ = ("guard_s", "last_aimed", "last_sent")

    def __init__(self, guard_s: float) -> None:
        #: How late a send may be against its aimed moment without pushing the next one back (δ/4): sends k and
        #: k + cap are then at least cap·T − guard = 1 s + δ − guard apart, and lateness does not accumulate.
        self.guard_s = guard_s
        self.last_sent: float | None = None  # when the latest send was written
        self.last_aimed: float | None = None  # when the last sent call was meant to leave

    def earliest(self, now: float, interval: float) -> float:
        """When the next call may leave: ``T`` (``interval``) after the moment the last one was aimed at, and never
        less than ``T − guard`` after it actually left (a late send shifts the schedule only beyond the guard);
        ``now`` before any send."""
        if self.last_sent is None:
            return now
        aimed = self.last_aimed if self.last_aimed is not None else self.last_sent
        return max(aimed + interval, self.last_sent + interval - self.guard_s)

    def sent(self, aimed_at: float, at: float) -> None:
        """A call aimed at ``aimed_at`` (0: unknown, taken as ``at``) was written at ``at``. A send reported out of
        order (earlier than the latest one) does not move the schedule back."""
        if self.last_sent is None or at >= self.last_sent:
            self.last_aimed = min(aimed_at, at) if aimed_at else at
        self.last_sent = at if self.last_sent is None else max(self.last_sent, at)
