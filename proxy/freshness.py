"""How long an answer is kept and how it may be served: pure functions of an entry and ``now``.

Each stored entry carries ``fresh_until`` and ``stale_until`` (wall-clock seconds, set by the replica that
filled it; replicas are assumed NTP-synchronised, as the upstream's 15-minute signature window already
requires). Between them the entry is *stale*:

    now < fresh_until                          FRESH   a hit
    fresh_until <= now < fresh_until + swr     STALE   served at once; one background refresh
    fresh_until + swr <= now < stale_until     EXPIRED fetched like a miss; served only if that fails
                                                       (stale-if-error)
    stale_until <= now                         gone    the backend has dropped it

Which answers are kept, and for how long, is one table (`RULES`) over the upstream outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from proxy.actions import ACTIONS
from proxy.upstream.errors import Outcome


class Freshness(Enum):
    FRESH = "fresh"
    STALE = "stale"  # within stale-while-revalidate
    EXPIRED = "expired"  # past it, kept only for stale-if-error


class Keep(Enum):
    TTL = "the action's TTL"
    NEGATIVE = "the negative TTL"
    NEVER = "never cached"


#: What the cache does with each upstream outcome (tests walk this table).
RULES: Final[dict[Outcome, Keep]] = {
    Outcome.SUCCESS: Keep.TTL,
    Outcome.NOT_FOUND: Keep.NEGATIVE,
    Outcome.DENIED: Keep.NEGATIVE,
    Outcome.BUSINESS_ERROR: Keep.NEVER,
    Outcome.THROTTLED: Keep.NEVER,
    Outcome.AUTH_ERROR: Keep.NEVER,
    Outcome.FAULT: Keep.NEVER,
}


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """The freshness settings: ``swr`` and ``max_stale`` are seconds past ``fresh_until``."""

    negative_ttl: float = 30.0
    swr: float = 60.0
    max_stale: float = 600.0

    def windows(self, outcome: Outcome, action_ttl: float, now: float) -> tuple[float, float] | None:
        """(fresh_until, stale_until) for an answer with ``outcome`` fetched at ``now``; None: do not store.
        Only successes are served stale: a negative answer simply expires."""
        keep = RULES[outcome]
        if keep is Keep.NEVER:
            return None
        if keep is Keep.NEGATIVE:
            return now + self.negative_ttl, now + self.negative_ttl
        fresh_until = now + action_ttl
        return fresh_until, fresh_until + max(self.swr, self.max_stale)

    def freshness(self, fresh_until: float, stale_until: float, now: float) -> Freshness:
        if now < fresh_until:
            return Freshness.FRESH
        if now < min(fresh_until + self.swr, stale_until):
            return Freshness.STALE
        return Freshness.EXPIRED

    def servable_on_error(self, stale_until: float, now: float) -> bool:
        """Stale-if-error: may an entry be served because the upstream failed?"""
        return now < stale_until


def store_seconds(stale_until: float, now: float) -> float:
    """How long a backend keeps an entry: until ``stale_until`` (at least a millisecond)."""
    return max(0.001, stale_until - now)


def action_ttl(action: str, overrides: Mapping[str, float] | None = None) -> float:
    """Seconds a successful answer of ``action`` stays fresh: its override (``--ttl``), else its documented TTL."""
    return float((overrides or {}).get(action, ACTIONS[action].ttl_seconds))
