"""``--budget-mode shadow``: what the enforced budget would have done with each call, while nothing waits (pure:
times are given by the caller).

The upstream queue (`proxy.admission.queue.UpstreamQueue`) grants every call at once in shadow mode and asks
`ShadowBudget.judge` what enforcing would have done: a virtual GCRA clock at the queue's spacing, with no burst.

Guarantees: a call is counted as *granted* (its slot was free), *delayed* (it would have waited, and the wait
fits its deadline) or *refused* (the wait would not fit); a refused call takes no slot on the virtual clock.
Non-guarantees: nothing is enforced, so the upstream may throttle (a mode for trying caps); the virtual clock
does not model the send slots, the turn or a shared budget.
"""

from __future__ import annotations

from typing import Literal

Judgement = Literal["granted", "delayed", "refused"]


class ShadowBudget:
    """The virtual clock: when the enforced budget would next grant."""

    __slots__ = ("next_slot",)

    def __init__(self) -> None:
        self.next_slot = 0.0

    def judge(self, now: float, grant_by: float, interval: float) -> Judgement:
        """What enforcing would do with a call at ``now`` that must be granted by ``grant_by``; a call that is not
        refused takes the slot, and the next comes ``interval`` later."""
        slot = max(self.next_slot, now)
        wait = slot - now
        if now + wait > grant_by:
            return "refused"
        self.next_slot = slot + interval
        return "delayed" if wait > 0 else "granted"
