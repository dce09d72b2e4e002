"""Latency and fault injection, per action: what happens to an accepted call before it is answered.

A `FaultPlan` is data (settable at start-up and through ``/__sim/faults``); `decide` turns it and a
random source into one `Fault` for one call, so the choice is reproducible under ``--seed``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any


class Fault(Enum):
    NONE = "none"
    THROTTLE = "throttle"  # System.LimitControl although under the cap (a throttling storm)
    ERROR_503 = "error_503"
    ERROR_500 = "error_500"
    HANG = "hang"  # sleep hang_ms, then 504 GatewayTimeout
    # A misbehaving upstream (or something in front of it): an HTTP 200 that is not a CAMS answer.
    HTML = "html"  # a maintenance page
    TRUNCATED = "truncated"  # the first half of the real JSON answer
    HUGE = "huge"  # huge_bytes of bytes


#: The faults that answer 200 with a body that is not a CAMS answer.
BROKEN = frozenset({Fault.HTML, Fault.TRUNCATED, Fault.HUGE})


@dataclass(frozen=True)
class FaultPlan:
    latency_ms: float = 80.0
    jitter_ms: float = 20.0
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_ms: float = 30_000.0
    throttle_rate: float = 0.0
    html_rate: float = 0.0
    truncated_rate: float = 0.0
    huge_rate: float = 0.0
    huge_bytes: float = 10 * 1024 * 1024

    def updated(self, changes: dict[str, Any]) -> FaultPlan:
        """A copy with ``changes`` applied; raises ValueError naming a bad field or value."""
        known = {f.name for f in fields(self)}
        checked: dict[str, float] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}; known: {', '.join(sorted(known))}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
            if name.endswith("_rate") and value > 1:
                raise ValueError(f"{name} must be between 0 and 1")
            checked[name] = float(value)
        return replace(self, **checked)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def decide(plan: FaultPlan, rng: random.Random) -> Fault:
    """One call's fate. Rates are checked in a fixed order so they do not overlap."""
    draw = rng.random()
    for fault, rate in (
        (Fault.THROTTLE, plan.throttle_rate),
        (Fault.HANG, plan.hang_rate),
        (Fault.ERROR_503, plan.error_rate / 2),
        (Fault.ERROR_500, plan.error_rate / 2),
        (Fault.HTML, plan.html_rate),
        (Fault.TRUNCATED, plan.truncated_rate),
        (Fault.HUGE, plan.huge_rate),
    ):
        if draw < rate:
            return fault
        draw -= rate
    return Fault.NONE


def latency_seconds(plan: FaultPlan, rng: random.Random) -> float:
    jitter = rng.uniform(-plan.jitter_ms, plan.jitter_ms) if plan.jitter_ms else 0.0
    return max(0.0, plan.latency_ms + jitter) / 1000.0


#: What the HTML fault answers (with 200 and text/html).
MAINTENANCE_PAGE = (b"<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head>"
                    b"<body><h1>Down for maintenance</h1><p>Please try again later.</p></body></html>")


def broken_body(fault: Fault, plan: FaultPlan, real: bytes) -> bytes:
    """The body of a broken 200 (`Fault.HTML`, `TRUNCATED` or `HUGE`)."""
    if fault is Fault.HTML:
        return MAINTENANCE_PAGE
    if fault is Fault.TRUNCATED:
        return real[: max(1, len(real) // 2)]
    return b"x" * int(plan.huge_bytes)
