"""The network stand-in's pure core: delivery schedule, idle rule, cut states, profile updates (plain numbers as
the clock, no sockets)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.netem.core import (
    DOWN,
    UP,
    Action,
    CutMachine,
    CutMode,
    DeliverySchedule,
    IdleClock,
    Latency,
    Link,
    Profile,
    Verdict,
    connection_rng,
    on_bytes,
)

arrivals = st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=200).map(sorted)
latencies = st.builds(Latency, st.floats(min_value=0, max_value=500), st.floats(min_value=0, max_value=500))


@given(arrivals, latencies, st.integers())
def test_deliveries_never_reorder_and_never_precede_arrival(times: list[float], latency: Latency, seed: int) -> None:
    schedule = DeliverySchedule(random.Random(seed))
    delivered = [schedule.deliver_at(t, latency) for t in times]
    assert delivered == sorted(delivered)
    assert all(at >= t for at, t in zip(delivered, times, strict=True))


@given(arrivals, latencies, st.integers())
def test_each_delay_is_within_the_jitter_band_unless_held_by_the_chunk_before(
        times: list[float], latency: Latency, seed: int) -> None:
    schedule = DeliverySchedule(random.Random(seed))
    upper = (latency.base_ms + latency.jitter_ms) / 1000
    lower = max(0.0, latency.base_ms - latency.jitter_ms) / 1000
    previous = float("-inf")
    for t in times:
        at = schedule.deliver_at(t, latency)
        if at > previous:  # not held back: its own draw decided
            assert lower - 1e-9 <= at - t <= upper + 1e-9
        previous = at


def test_a_large_jitter_holds_later_chunks_back_instead_of_reordering() -> None:
    schedule = DeliverySchedule(random.Random(3))
    latency = Latency(base_ms=50, jitter_ms=50)
    times = [schedule.deliver_at(i * 0.001, latency) for i in range(200)]
    assert times == sorted(times)
    assert any(b == a for a, b in itertools.pairwise(times)), "some chunk was held by its predecessor"


def test_no_jitter_is_exactly_the_base_latency_and_zero_is_immediate() -> None:
    schedule = DeliverySchedule(random.Random(1))
    assert schedule.deliver_at(10.0, Latency(40, 0)) == pytest.approx(10.04)
    assert DeliverySchedule(random.Random(1)).deliver_at(5.0, Latency()) == 5.0


def test_latency_never_goes_negative() -> None:
    schedule = DeliverySchedule(random.Random(9))
    for i in range(1000):
        arrival = float(i)  # far apart: nothing is held by the chunk before
        assert schedule.deliver_at(arrival, Latency(base_ms=1, jitter_ms=100)) >= arrival


def test_a_seed_makes_the_schedule_reproducible_per_connection_and_direction() -> None:
    def run(seed: int | None, connection: int, direction: str) -> list[float]:
        schedule = DeliverySchedule(connection_rng(seed, connection, direction))
        return [schedule.deliver_at(t * 0.1, Latency(40, 10)) for t in range(50)]

    assert run(7, 0, UP) == run(7, 0, UP)
    assert run(7, 0, UP) != run(7, 0, DOWN)
    assert run(7, 0, UP) != run(7, 1, UP)
    assert run(7, 0, UP) != run(8, 0, UP)


def test_idle_rule_closes_only_after_the_full_quiet_period_and_never_with_bytes_queued() -> None:
    clock = IdleClock(now=100.0)
    assert not clock.expired(104.9, 5.0, pending=False)
    assert clock.expired(105.0, 5.0, pending=False)
    assert not clock.expired(200.0, 5.0, pending=True)
    clock.touch(103.0)
    assert clock.deadline(5.0) == 108.0
    assert not clock.expired(107.9, 5.0, pending=False)
    clock.touch(50.0)  # an older time never moves the clock back
    assert clock.last_activity == 103.0
    assert clock.deadline(None) is None and not clock.expired(1e9, None, pending=False)


def test_cut_states() -> None:
    machine = CutMachine()
    assert machine.mode is CutMode.OPEN and machine.admit() is Verdict.ACCEPT
    assert machine.cut(CutMode.REFUSE) is Action.RESET
    assert machine.admit() is Verdict.RESET
    assert machine.cut(CutMode.BLACKHOLE) is Action.SWALLOW
    assert machine.admit() is Verdict.SWALLOW
    machine.restore()
    assert machine.mode is CutMode.OPEN and machine.admit() is Verdict.ACCEPT
    with pytest.raises(ValueError, match="restore"):
        machine.cut(CutMode.OPEN)


def test_a_dead_link_stays_dead_after_restore_and_the_clients_next_bytes_reset_it() -> None:
    assert on_bytes(Link.LIVE, CutMode.OPEN, UP) is Action.FORWARD
    assert on_bytes(Link.DEAD, CutMode.BLACKHOLE, UP) is Action.SWALLOW
    assert on_bytes(Link.DEAD, CutMode.BLACKHOLE, DOWN) is Action.SWALLOW
    assert on_bytes(Link.DEAD, CutMode.OPEN, DOWN) is Action.SWALLOW
    assert on_bytes(Link.DEAD, CutMode.OPEN, UP) is Action.RESET


def test_profile_updates_are_partial_and_per_direction_overrides_win() -> None:
    profile = Profile(Latency(40, 10), Latency(40, 10), handshake_ms=60, idle_close_s=5)
    both = profile.updated({"latency_ms": 100})
    assert both.up == Latency(100, 10) and both.down == Latency(100, 10) and both.handshake_ms == 60
    split = profile.updated({"latency_ms": 100, "down_latency_ms": 7, "up_jitter_ms": 0})
    assert split.up == Latency(100, 0) and split.down == Latency(7, 10)
    assert profile.updated({"idle_close_s": None}).idle_close_s is None
    assert profile.updated({"idle_close_s": 0}).idle_close_s is None
    assert profile.updated({"idle_close_s": 2.5, "handshake_ms": 0}).as_dict()["idle_close_s"] == 2.5
    assert profile.updated({}) == profile


@pytest.mark.parametrize(("changes", "message"), [
    ({"latency_ms": -1}, "latency_ms must be a finite number >= 0"),
    ({"jitter_ms": "fast"}, "jitter_ms must be a number"),
    ({"handshake_ms": None}, "handshake_ms must be a number"),
    ({"up_latency_ms": True}, "up_latency_ms must be a number"),
    ({"latency_ms": float("inf")}, "latency_ms must be a finite number"),
    ({"bandwidth": 3}, "unknown field 'bandwidth'"),
])
def test_bad_profile_updates_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Profile().updated(changes)


def test_every_bad_field_is_reported_together() -> None:
    with pytest.raises(ValueError) as caught:
        Profile().updated({"latency_ms": -1, "jitter_ms": "x", "nope": 1})
    assert str(caught.value).count(";") == 2
