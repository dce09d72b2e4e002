"""What the read-through flow answers: the entry, how the cache served it, and the fill behind it, if any."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from proxy.cache.base import Entry
from proxy.fill import Fill
from proxy.upstream.errors import Outcome


class CacheStatus(Enum):
    HIT = "HIT"
    STALE = "STALE"
    MISS = "MISS"
    COALESCED = "COALESCED"


#: Outcomes after which a stale entry is served instead (stale-if-error).
FAILED: Final = frozenset({Outcome.THROTTLED, Outcome.FAULT})


@dataclass(frozen=True, slots=True)
class Answer:
    entry: Entry
    cache: CacheStatus
    fill: Fill | None = None
    #: For STALE: why ("stale-while-revalidate" or "stale-if-error"), and the failed upstream status if any.
    stale_reason: str = ""
    failed_status: int = 0
    #: A miss that went upstream with a stale entry in hand (Cache-Status ``fwd=stale``).
    had_stale: bool = False
