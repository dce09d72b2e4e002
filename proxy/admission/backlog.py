"""The arithmetic of an upstream queue's backlog (pure: no clock, no asyncio): the running estimates admission
plans with, and the re-check of queued calls against them.

The queue (`proxy.admission.queue.UpstreamQueue`) admits a call only if the calls ahead of it can be granted
before its deadline with the upstream's usual answer time still to fit. Both numbers are running averages
(`ewma`): the answer time of every call, and the spacing grants actually achieved back to back under backlog,
which is wider than ``T`` when sends anchor the next grant (`proxy.admission.send_pacing`) or the budget is
shared. `learned_spacing` bounds what one gap may teach; `late_refusals` picks, in serving order, the queued
calls that no longer fit.

Guarantees: one gap counts for at most ``BACKLOG_GAP_LIMIT`` × ``T`` × sharers, so a stall (first connections, a
quiet period) cannot make admission refuse for minutes after it; `late_refusals` keeps the order it is given,
and a refused call no longer counts as ahead of those behind it. Non-guarantees: these are estimates, not
promises: a call admitted may still be refused later (re-check) or give up at its deadline, and one that fits
the estimate may still wait longer (the estimate trails a change).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, TypeVar

T = TypeVar("T")

#: Weight of the newest sample in the running averages of spacing and answer time.
EWMA_WEIGHT: Final = 0.2
#: Assumed answer time (seconds) before the first call is observed.
INITIAL_UPSTREAM_TIME: Final = 0.25
#: Assumed spacing before any is observed, as a multiple of ``T``: send anchoring and timer granularity add a
#: few ms per slot.
SPACING_PRIOR: Final = 1.03
#: The widest one gap may count, as a multiple of the fair split's spacing (``T`` × processes sharing the budget).
BACKLOG_GAP_LIMIT: Final = 1.5


def ewma(average: float, sample: float, weight: float = EWMA_WEIGHT) -> float:
    """``average`` moved ``weight`` of the way to ``sample``."""
    return average + weight * (sample - average)


def learned_spacing(observed: float, gap: float, interval: float, sharers: int) -> float:
    """The spacing estimate after two grants ``gap`` seconds apart under backlog, at spacing ``interval`` with
    ``sharers`` processes sharing the budget: ``gap`` counts for at most what a fair split gives, x1.5."""
    return ewma(observed, min(gap, BACKLOG_GAP_LIMIT * interval * sharers))


def late_refusals(now: float, first_wait: float, interval: float,
                  queued: Iterable[tuple[T, float | None]]) -> list[tuple[T, float]]:
    """Which queued calls can no longer be granted in time, each with the wait it would have had.

    ``queued`` is every queued call in serving order with the latest moment it may be granted (None: not to be
    re-checked, it still counts as ahead); the first waits ``first_wait``, each kept one ``interval`` more."""
    refused: list[tuple[T, float]] = []
    kept = 0
    for item, grant_by in queued:
        wait = first_wait + kept * interval
        if grant_by is None or now + wait <= grant_by:
            kept += 1
            continue
        refused.append((item, wait))
    return refused
