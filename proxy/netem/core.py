"""The network stand-in's decisions, pure: no I/O, no asyncio, clocks and random sources are parameters.

Three pieces, each usable with plain numbers as the clock (seconds, any origin):

- `DeliverySchedule`: when one chunk of one direction of one connection is delivered.
- `IdleClock`: when a connection counts as idle and is closed.
- `CutMachine` and `on_bytes`: what a network cut does to new and open connections.

Guarantees: within one direction of one connection chunks are delivered in arrival order, each no earlier than
it arrived and no earlier than the chunk before it (FIFO, like one TCP stream); the added latency of a chunk is
``max(0, base + U(-jitter, +jitter))`` drawn from the schedule's own `random.Random`, then raised if needed to keep
the order, so a seeded schedule fed the same arrivals returns the same times. An idle connection is never closed
before ``idle_close_s`` has passed with no byte moving either way and nothing queued.

Non-guarantees: the latency is per chunk, not per byte or per packet (a chunk is what one read returned); nothing
here models loss, bandwidth, reordering across connections or directions, or SYN drops; jitter is uniform, not a
heavy-tailed distribution.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

UP: Final = "up"  # client -> target
DOWN: Final = "down"  # target -> client


# ---------------------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class Latency:
    """One direction's latency: ``base_ms`` plus a uniform ``+/- jitter_ms``."""

    base_ms: float = 0.0
    jitter_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"latency_ms": self.base_ms, "jitter_ms": self.jitter_ms}


def _number(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number" + (" or null" if allow_none else ""))
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _pick(values: Mapping[str, float | None], specific: str, both: str, current: float) -> float:
    for name in (specific, both):
        value = values.get(name)
        if value is not None:
            return value
    return current


PROFILE_FIELDS: Final = ("latency_ms", "jitter_ms", "up_latency_ms", "up_jitter_ms", "down_latency_ms",
                         "down_jitter_ms", "handshake_ms", "idle_close_s")


@dataclass(frozen=True)
class Profile:
    """What the stand-in does to traffic. ``idle_close_s`` None: idle connections are never closed."""

    up: Latency = Latency()
    down: Latency = Latency()
    handshake_ms: float = 0.0
    idle_close_s: float | None = None

    def latency(self, direction: str) -> Latency:
        return self.up if direction == UP else self.down

    def updated(self, changes: Mapping[str, object]) -> Profile:
        """A copy with ``changes`` (the JSON of ``PUT /__net/profile``) applied: ``latency_ms``/``jitter_ms`` set
        both directions, ``up_*``/``down_*`` one (and win over the both-ways field in the same update);
        ``idle_close_s`` 0 or null turns idle closing off. Raises ValueError naming every bad field."""
        problems = [f"unknown field {name!r} (known: {', '.join(PROFILE_FIELDS)})"
                    for name in changes if name not in PROFILE_FIELDS]
        values: dict[str, float | None] = {}
        for name in PROFILE_FIELDS:
            if name in changes:
                try:
                    values[name] = _number(name, changes[name], allow_none=name == "idle_close_s")
                except ValueError as exc:
                    problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        up = Latency(_pick(values, "up_latency_ms", "latency_ms", self.up.base_ms),
                     _pick(values, "up_jitter_ms", "jitter_ms", self.up.jitter_ms))
        down = Latency(_pick(values, "down_latency_ms", "latency_ms", self.down.base_ms),
                       _pick(values, "down_jitter_ms", "jitter_ms", self.down.jitter_ms))
        handshake = _pick(values, "handshake_ms", "handshake_ms", self.handshake_ms)
        idle = values.get("idle_close_s", self.idle_close_s)
        return Profile(up, down, handshake, idle or None)

    def as_dict(self) -> dict[str, object]:
        return {"up": self.up.as_dict(), "down": self.down.as_dict(), "handshake_ms": self.handshake_ms,
                "idle_close_s": self.idle_close_s}


# --------------------------------------------------------------------------------------- schedule


class DeliverySchedule:
    """The delivery times of one direction of one connection (FIFO, never before arrival).

    Not thread-safe; one instance per direction per connection, fed arrivals in the order they were read.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._last = -math.inf

    @property
    def last(self) -> float:
        """The latest delivery time handed out (``-inf`` before the first)."""
        return self._last

    def deliver_at(self, arrival: float, latency: Latency) -> float:
        """When the chunk that arrived at ``arrival`` is delivered: ``arrival`` plus its latency, and not before
        the previous chunk's delivery."""
        jitter = self._rng.uniform(-latency.jitter_ms, latency.jitter_ms) if latency.jitter_ms > 0 else 0.0
        delay_s = max(0.0, latency.base_ms + jitter) / 1000.0
        at = max(arrival + delay_s, self._last)
        self._last = at
        return at


def connection_rng(seed: int | None, connection: int, direction: str) -> random.Random:
    """The random source of one direction of one connection: reproducible from ``seed`` (connections numbered in
    accept order), else from the OS."""
    if seed is None:
        return random.Random()
    return random.Random(f"{seed}:{connection}:{direction}")


# ------------------------------------------------------------------------------------------- idle


class IdleClock:
    """The idle-close rule of one connection: close when no byte moved in either direction (read from or
    delivered to either side) for ``idle_close_s`` and nothing is waiting for delivery."""

    def __init__(self, now: float) -> None:
        self._last = now

    @property
    def last_activity(self) -> float:
        return self._last

    def touch(self, now: float) -> None:
        """A byte moved at ``now`` (earlier times than the latest are ignored)."""
        self._last = max(self._last, now)

    def deadline(self, idle_close_s: float | None) -> float | None:
        """The earliest time the connection may be closed as idle, if nothing moves (None: never)."""
        return None if not idle_close_s else self._last + idle_close_s

    def expired(self, now: float, idle_close_s: float | None, *, pending: bool) -> bool:
        """Whether to close now. Never while bytes are queued in either direction (``pending``)."""
        deadline = self.deadline(idle_close_s)
        return deadline is not None and not pending and now >= deadline


# -------------------------------------------------------------------------------------------- cut


class CutMode(enum.StrEnum):
    """The state of the path: open, refusing (resets) or a blackhole (bytes vanish)."""

    OPEN = "open"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"


class Verdict(enum.Enum):
    """What happens to a newly accepted connection."""

    ACCEPT = "accept"  # relayed
    RESET = "reset"  # closed at once with a TCP reset
    SWALLOW = "swallow"  # held open, nothing ever forwarded either way


class Link(enum.Enum):
    """One open connection's path."""

    LIVE = "live"
    DEAD = "dead"  # blackholed: nothing crosses it any more, even after a restore


class Action(enum.Enum):
    """What to do with bytes read from one side of an open connection."""

    FORWARD = "forward"
    SWALLOW = "swallow"
    RESET = "reset"


class CutMachine:
    """The path's cut state. ``cut`` and ``restore`` return what happens to the connections already open.

    refuse: new connections are reset at once, every open one is reset (both sides). blackhole: new connections
    are accepted and held, nothing is forwarded; open ones turn `Link.DEAD`: queued and later bytes vanish, nothing
    is closed. restore: new connections are relayed again; dead links stay dead (the other end would long have
    timed out): bytes from their client then get a reset, as a real server answers a segment of a connection it
    forgot (see `on_bytes`).
    """

    def __init__(self) -> None:
        self.mode = CutMode.OPEN

    def admit(self) -> Verdict:
        return {CutMode.OPEN: Verdict.ACCEPT, CutMode.REFUSE: Verdict.RESET,
                CutMode.BLACKHOLE: Verdict.SWALLOW}[self.mode]

    def cut(self, mode: CutMode) -> Action:
        """Enter ``mode`` (refuse or blackhole); the action for every open connection: RESET or SWALLOW."""
        if mode is CutMode.OPEN:
            raise ValueError("a cut is refuse or blackhole; use restore to reopen the path")
        self.mode = mode
        return Action.RESET if mode is CutMode.REFUSE else Action.SWALLOW

    def restore(self) -> None:
        self.mode = CutMode.OPEN


def on_bytes(link: Link, mode: CutMode, direction: str) -> Action:
    """What to do with bytes read from one side: a live link forwards; a dead link swallows, except bytes from the
    client once the path is restored, which reset the connection."""
    if link is Link.LIVE:
        return Action.FORWARD
    if direction == UP and mode is CutMode.OPEN:
        return Action.RESET
    return Action.SWALLOW
