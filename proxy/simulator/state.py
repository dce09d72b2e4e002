"""The simulator's mutable state: counters, flow-control windows, used nonces, fault plans, fixtures.

Kept apart from the HTTP handlers so the referee logic (`ActionStats`) reads on its own.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from proxy.actions import ACTIONS
from proxy.nonces import MemoryNonces
from proxy.signing import Credentials
from proxy.simulator.faults import FaultPlan
from proxy.simulator.fixtures import FixtureStore
from proxy.simulator.settings import SimulatorSettings
from proxy.simulator.window import SlidingWindowLimiter


@dataclass
class ActionStats:
    """Counters for one action. ``calls`` = ok + throttled + rejected + business_errors + faults."""

    cap: int
    calls: int = 0
    ok: int = 0
    throttled: int = 0
    rejected: int = 0
    business_errors: int = 0
    faults: int = 0
    windows: dict[str, SlidingWindowLimiter] = field(default_factory=dict)

    def window(self, access_key_id: str) -> SlidingWindowLimiter:
        limiter = self.windows.get(access_key_id)
        if limiter is None:
            limiter = self.windows[access_key_id] = SlidingWindowLimiter(self.cap)
        return limiter

    @property
    def max_in_any_1s(self) -> int:
        return max((w.max_in_any_window for w in self.windows.values()), default=0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "throttled": self.throttled,
            "rejected": self.rejected,
            "business_errors": self.business_errors,
            "faults": self.faults,
            "max_in_any_1s": self.max_in_any_1s,
            "cap": self.cap,
            "by_key": {key: {"max_in_any_1s": w.max_in_any_window} for key, w in sorted(self.windows.items())},
        }


class SimulatorState:
    def __init__(self, settings: SimulatorSettings, store: FixtureStore) -> None:
        self.settings = settings
        self.store = store
        self.credentials: dict[str, Credentials] = {c.access_key_id: c for c in settings.access_keys}
        self.rng = random.Random(settings.seed)
        self.default_plan = FaultPlan(
            latency_ms=settings.latency_ms,
            jitter_ms=settings.jitter_ms,
            error_rate=settings.error_rate,
            hang_rate=settings.hang_rate,
            hang_ms=settings.hang_ms,
            throttle_rate=settings.throttle_rate,
        )
        self.plans: dict[str, FaultPlan] = {}
        self.nonces = MemoryNonces(skew_s=settings.max_skew_s + 30)
        self.unrouted = 0
        #: The last answers by RequestId, so a test can compare a gateway's bytes with what was sent.
        self.answers: OrderedDict[str, bytes] = OrderedDict()
        self.stats: dict[str, ActionStats] = {}
        self.reset()

    def remember(self, request_id: str, body: bytes, limit: int = 2000) -> None:
        self.answers[request_id] = body
        while len(self.answers) > limit:
            self.answers.popitem(last=False)

    def plan(self, action: str) -> FaultPlan:
        return self.plans.get(action, self.default_plan)

    def reset(self, everything: bool = False) -> None:
        """Zero the counters and windows; with ``everything``, also restore fixtures and fault plans."""
        self.stats = {name: ActionStats(cap=self.settings.cap(name)) for name in ACTIONS}
        self.unrouted = 0
        if everything:
            self.store.restore()
            self.plans = {}
            self.nonces.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "actions": {name: stats.snapshot() for name, stats in self.stats.items()},
            "unrouted": self.unrouted,
        }
