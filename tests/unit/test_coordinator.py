"""The coordinator (`proxy.admission.coordinator`) on a fake clock: the rules its docstring states, one by one.

Redis is a small in-test stand-in for what the coordinator calls on its budget: `FakeRedis` decides reservations the
way the reserve script does (GCRA with no burst on Redis's own clock, ``OFFSET`` ahead of the loop's; the slot no
sooner than ``lead`` after Redis's now; refused past ``max_wait``; spacing widened for what is held back, nothing
given while the whole cap is). Each replica reaches it over a `Link` with its own one-way delays, so its estimate
of Redis's clock can be off the way a real path makes it. The heartbeat is a plain holder of what the coordinator
reads from it (the lease, the clock estimate, the live count, the replica id). Everything runs on
`tests.unit.fake_loop`: virtual time, no sleeping, no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, cast

import pytest

from proxy.admission.coordinator import Coordinator, Reserved, SlotMissed
from proxy.admission.margin import CEILING_S, AdaptiveMargin
from proxy.admission.safe_capacity import STALE_S, WINDOW_S, LocalLease
from proxy.admission.shared import BudgetUnavailable, RedisBudget, Reservation
from proxy.admission.spacing import spacing_interval
from proxy.errors import Overloaded
from proxy.replica.breaker import CircuitBreaker
from proxy.replica.clock import RedisClock
from proxy.replica.heartbeat import Heartbeat
from tests.unit.fake_loop import START, loop, run

T = "GetChatappTemplateDetail"
CAP = 5
MARGIN = 0.02
GUARD = 0.005  # the margin's send guard (min(floor, 5 ms)): the coordinator's default late guard
OFFSET = 5_000.0  # Redis's clock minus the loop's
INTERVAL = spacing_interval(CAP, MARGIN)


@dataclass
class Ask:
    at: float
    kind: str
    args: dict[str, Any] = field(default_factory=dict)


class FakeRedis:
    """The shared budget's state and decisions, on Redis's clock (the loop's plus ``OFFSET``)."""

    def __init__(self) -> None:
        self.tat: dict[str, float] = {}
        self.held: dict[str, int] = {}
        self.down = False

    def now(self) -> float:
        return loop().time() + OFFSET

    def reserve(self, action: str, interval: float, max_wait: float, lead: float, cap: int) -> Reservation:
        now, held = self.now(), self.held.get(action, 0)
        if held >= cap:
            return Reservation(False, 1.0, now, held)
        interval *= cap / (cap - held)
        slot = max(self.tat.get(action, 0.0), now + lead)
        if slot - now > max_wait:
            return Reservation(False, slot - now, now, held)
        self.tat[action] = slot + interval
        return Reservation(True, slot - now, now, held)


class Link:
    """One replica's budget (`RedisBudget`'s three calls) over a path with these one-way delays; every call is
    recorded with the loop time it was asked at."""

    def __init__(self, redis: FakeRedis, up: float = 0.001, down: float = 0.001) -> None:
        self.redis = redis
        self.up = up
        self.down = down
        self.asks: list[Ask] = []
        #: Extra delay of the next replies' down legs, one per reply (a reply held up on the way).
        self.slow_replies: list[float] = []

    async def _trip(self, kind: str, decide: Any, **args: Any) -> Any:
        self.asks.append(Ask(loop().time(), kind, args))
        if self.redis.down:
            raise BudgetUnavailable(f"redis {kind} failed: ConnectionError: refused")
        await asyncio.sleep(self.up)
        answer = decide()
        await asyncio.sleep(self.down + (self.slow_replies.pop(0) if self.slow_replies else 0.0))
        return answer

    async def probe(self) -> None:
        await self._trip("probe", lambda: None)

    async def redis_time(self) -> float:
        return cast(float, await self._trip("time", self.redis.now))

    async def reserve(self, action: str, interval_s: float, max_wait_s: float, lead_s: float = 0.0, *,
                      cap: int, replica: str = "", learning: bool = False) -> Reservation:
        return cast(Reservation, await self._trip(
            "reserve", lambda: self.redis.reserve(action, interval_s, max_wait_s, lead_s, cap),
            action=action, interval_s=interval_s, max_wait_s=max_wait_s, lead_s=lead_s, cap=cap, replica=replica,
            learning=learning))

    def reserves(self) -> list[Ask]:
        return [ask for ask in self.asks if ask.kind == "reserve"]


@dataclass
class FakeHeartbeat:
    """What the coordinator reads from its heartbeat."""

    lease: LocalLease
    clock: RedisClock
    live: int = 1
    replica_id: str = "replica-a"


def coordinator(link: Link, *, lease: LocalLease | None = None, live: int = 1, name: str = "replica-a",
                margin: float | AdaptiveMargin = MARGIN, seeded: bool = True, horizon_s: float = 1.0) -> Coordinator:
    """A coordinator on ``link``; ``seeded``: its clock estimate already has one exact sample (rtt 2 ms)."""
    clock = RedisClock()
    if seeded:
        now = loop().time()
        clock.observe(now - 0.002, now, now - 0.001 + OFFSET)
    heartbeat = FakeHeartbeat(lease or LocalLease(30.0), clock, live, name)
    return Coordinator(cast(RedisBudget, link), cast(Heartbeat, heartbeat), CircuitBreaker(cooldown=1.0), margin,
                       horizon_s=horizon_s)


def granted(shares: dict[str, int], lease_s: float = 30.0, renewed_at: float = START,
            may_land_after: float = 0.25) -> LocalLease:
    """A lease renewed at ``renewed_at`` (a renewal that could have landed until ``may_land_after`` later)."""
    lease = LocalLease(lease_s)
    lease.attempt(renewed_at + may_land_after)
    lease.renewed(renewed_at, shares)
    return lease


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - loop().time()))


def gaps(moments: Sequence[float]) -> list[float]:
    return [b - a for a, b in pairwise(moments)]


def failed() -> BudgetUnavailable:
    return BudgetUnavailable("redis budget reserve failed: ConnectionError: refused")


# --- Redis healthy: the shared budget ----------------------------------------------------------------------


def test_a_healthy_slot_is_one_reservation_then_a_sleep_until_the_slot_on_the_local_clock() -> None:
    async def scenario() -> None:
        link = Link(FakeRedis())
        c = coordinator(link)
        asked = loop().time()
        send_by = await c.slot(T, CAP, INTERVAL, grant_by=asked + 5)
        (reserve,) = link.reserves()
        # The slot is Redis's now at the script (1 ms up) plus the lead (the slowest trip seen: 2 ms), on Redis's
        # clock; the coordinator sends at that moment of its own clock, with the send window of the late guard.
        assert reserve.args["lead_s"] == pytest.approx(0.002)
        assert loop().time() == pytest.approx(asked + 0.003)
        assert send_by == pytest.approx(asked + 0.003 + GUARD)
        assert (c.mode, c.stats.shared_slots, c.stats.local_slots) == ("shared", 1, 0)
        assert reserve.args["replica"] == "replica-a" and reserve.args["cap"] == CAP

    run(scenario())


def test_reservations_look_no_further_ahead_than_the_horizon_nor_past_the_callers_deadline() -> None:
    async def scenario() -> None:
        link = Link(FakeRedis())
        c = coordinator(link, horizon_s=1.0)
        now = loop().time()
        await c.reserve(T, CAP, INTERVAL, grant_by=now + 30)
        await c.reserve(T, CAP, INTERVAL, grant_by=loop().time() + 0.3)
        with pytest.raises(Overloaded):
            await c.reserve(T, CAP, INTERVAL, grant_by=loop().time() - 1)  # no time left: nothing can be granted
        assert [ask.args["max_wait_s"] for ask in link.reserves()] == [1.0, pytest.approx(0.3), 0.0]

    run(scenario())


def test_a_slot_beyond_the_horizon_is_asked_for_again_a_horizon_before_it_and_granted_then() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        link = Link(redis)
        c = coordinator(link, horizon_s=1.0)
        start = loop().time()
        redis.tat[T] = redis.now() + 3.0  # the next free slot is 3 s away (others reserved up to there)
        reserved = await c.reserve(T, CAP, INTERVAL, grant_by=start + 10)
        first, second = link.reserves()
        assert second.at == pytest.approx(first.at + 0.002 + 3.0 - 0.001 - 1.0, abs=1e-6)  # wait − horizon later
        assert reserved.at is not None and reserved.at - second.at <= 1.0  # never held further than the horizon
        assert reserved.at == pytest.approx(redis.tat[T] - OFFSET - INTERVAL * (1 + c.clock_allowance_s))

    run(scenario())


def test_a_refusal_whose_next_slot_is_past_the_deadline_is_overloaded_with_that_wait() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        c = coordinator(Link(redis))
        redis.tat[T] = redis.now() + 4.0
        with pytest.raises(Overloaded, match="no slot before this request's deadline") as caught:
            await c.reserve(T, CAP, INTERVAL, grant_by=loop().time() + 2.0)
        assert caught.value.retry_after_s == pytest.approx(4.0, abs=0.1)

    run(scenario())


def test_a_budget_held_back_in_full_for_cut_replicas_is_overloaded_for_a_quarter_lease() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        c = coordinator(Link(redis), lease=LocalLease(20.0))
        redis.held[T] = CAP
        with pytest.raises(Overloaded, match="held back in full") as caught:
            await c.reserve(T, CAP, INTERVAL, grant_by=loop().time() + 10)
        assert caught.value.retry_after_s == 5.0
        safe_capacity = cast(dict[str, Any], c.status()["safe_capacity"])
        assert safe_capacity["held_back_for_others"] == {T: CAP}

    run(scenario())


def test_shared_slots_are_spaced_by_the_interval_widened_by_the_clock_allowance_before_any_sample_the_ceiling(
        ) -> None:
    async def scenario() -> None:
        link = Link(FakeRedis())
        c = coordinator(link, seeded=False)
        assert c.clock_allowance_s == CEILING_S
        await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 5)
        assert c.clock_allowance_s == pytest.approx(0.002)  # twice the error bound: half the 2 ms round trip
        await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 5)
        first, second = link.reserves()
        assert first.args["interval_s"] == pytest.approx(INTERVAL * (1 + CEILING_S))
        assert second.args["interval_s"] == pytest.approx(INTERVAL * 1.002)

    run(scenario())


def test_a_margin_still_learning_asks_as_learning_so_its_guess_is_not_remembered_for_everyone() -> None:
    async def scenario() -> None:
        link = Link(FakeRedis())
        await coordinator(link, margin=AdaptiveMargin(MARGIN, learning=True)).slot(T, CAP, INTERVAL,
                                                                                    loop().time() + 5)
        await coordinator(link).slot(T, CAP, INTERVAL, loop().time() + 5)
        assert [ask.args["learning"] for ask in link.reserves()] == [True, False]

    run(scenario())


def test_replicas_whose_clock_estimates_err_in_opposite_directions_never_put_more_than_the_cap_in_a_second() -> None:
    """Three replicas on one budget, two of them on lopsided paths (1 ms up and 9 ms down, and the reverse): their
    estimates of Redis's clock are 4 ms off each way, so consecutive slots of theirs can land closer than the
    interval; the clock allowance makes any ``cap + 1`` consecutive sends still span at least 1 s + δ."""

    async def scenario() -> None:
        redis = FakeRedis()
        paths = {"early": (0.009, 0.001), "late": (0.001, 0.009), "even": (0.005, 0.005)}
        sends: list[tuple[float, str]] = []

        async def replica(name: str, up: float, down: float) -> None:
            c = coordinator(Link(redis, up, down), name=name, seeded=False)
            for _ in range(10):  # start-up seeds the estimate of Redis's clock
                await c.sample_clock()
            for _ in range(40):
                await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30)
                sends.append((loop().time(), name))

        await asyncio.gather(*(replica(name, *legs) for name, legs in paths.items()))
        moments = sorted(at for at, _ in sends)
        assert {name for _, name in sends} == set(paths)
        assert min(gaps(moments)) < INTERVAL  # the estimates' errors are real: some consecutive slots are closer
        spans = [moments[i + CAP] - moments[i] for i in range(len(moments) - CAP)]
        assert min(spans) >= 1 + MARGIN

    run(scenario())


# --- late replies and late wake-ups ------------------------------------------------------------------------


def test_a_reply_that_arrives_after_its_slot_gives_the_slot_up_and_asks_again() -> None:
    async def scenario() -> None:
        link = Link(FakeRedis())
        c = coordinator(link)
        link.slow_replies = [0.05]  # the first reply is held up 50 ms: past its slot by far more than the guard
        start = loop().time()
        await c.slot(T, CAP, INTERVAL, grant_by=start + 5)
        first, second = link.reserves()
        assert c.stats.late_replies == 1 and c.stats.shared_slots == 1
        assert second.at == pytest.approx(first.at + 0.052)  # asked again as soon as the late reply came
        # The slot given up stays empty (it is not reused): the one taken is at least an interval after it.
        assert loop().time() - (first.at + 0.003) >= INTERVAL

    run(scenario())


def test_a_replica_that_wakes_later_than_the_guard_after_its_shared_slot_does_not_send_on_it() -> None:
    async def scenario() -> None:
        c = coordinator(Link(FakeRedis()))
        reserved = await c.reserve(T, CAP, INTERVAL, grant_by=loop().time() + 5)
        assert reserved.at is not None
        loop().stall(reserved.at - loop().time() + GUARD + 0.001)  # the loop was blocked past the send window
        with pytest.raises(SlotMissed):
            await c.wait(reserved)
        assert (c.stats.late_slots, c.stats.shared_slots) == (1, 0)
        on_time = await c.reserve(T, CAP, INTERVAL, grant_by=loop().time() + 5)
        assert on_time.at is not None
        loop().stall(on_time.at - loop().time() + GUARD - 0.001)  # late, but within the guard: sent
        assert await c.wait(on_time) == on_time.at + GUARD
        assert (c.stats.late_slots, c.stats.shared_slots) == (1, 1)

    run(scenario())


def test_a_granted_slot_the_call_could_not_use_is_counted_as_missed() -> None:
    async def scenario() -> None:
        c = coordinator(Link(FakeRedis()))
        c.missed()
        assert c.stats.late_slots == 1

    run(scenario())


# --- Redis down: quiet, then the local share ---------------------------------------------------------------


def test_a_failure_makes_the_replica_quiet_until_local_from_then_it_sends_on_its_share_spaced() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        link = Link(redis)
        lease = granted({T: 2})  # renewed at START; that renewal could have landed until START + 0.25
        c = coordinator(link, lease=lease)
        await until(START + 0.5)
        redis.down = True
        c.record_failure(failed())
        quiet_end = START + 0.25 + STALE_S + 1.0 + WINDOW_S
        assert c.quiet_until == quiet_end == lease.local_from(START + 0.5)
        assert (c.mode, c.stats.outages, c.breaker.healthy) == ("local", 1, False)
        moments, send_bys = [], []
        for _ in range(4):
            send_bys.append(await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30))
            moments.append(loop().time())
        assert moments[0] == quiet_end  # nothing before the quiet period ends
        assert gaps(moments) == pytest.approx([(1 + MARGIN) / 2] * 3)
        assert send_bys == pytest.approx([m + GUARD for m in moments])  # a local slot has the same send window
        assert c.stats.local_slots == 4 and c.stats.shared_slots == 0
        assert all(ask.kind == "probe" for ask in link.asks)  # no shared reservation while Redis is down
        assert lease.renew_after() == pytest.approx(send_bys[-1] + WINDOW_S)

    run(scenario())


def test_the_local_share_keeps_the_accounts_spacing_times_the_live_replicas_when_that_is_wider() -> None:
    async def scenario() -> None:
        c = coordinator(Link(FakeRedis()), lease=granted({T: 2}), live=3)
        c.record_failure(failed())
        cast(Link, c.budget).redis.down = True
        moments = []
        for _ in range(3):
            await c.slot(T, CAP, 0.4, grant_by=loop().time() + 30)  # the adaptive rate asks for 0.4 s
            moments.append(loop().time())
        assert gaps(moments) == pytest.approx([1.2, 1.2])

    run(scenario())


def test_a_budget_failure_while_reserving_opens_the_breaker_and_the_call_waits_for_the_local_share() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        lease = granted({T: 1})
        c = coordinator(Link(redis), lease=lease)
        redis.down = True
        failed_at = loop().time()
        await c.slot(T, CAP, INTERVAL, grant_by=failed_at + 30)  # quiet periods make misses wait, never fail
        assert loop().time() == lease.local_from(failed_at)
        assert (c.stats.outages, c.stats.local_slots) == (1, 1)

    run(scenario())


@pytest.mark.parametrize(("shares", "renewed", "why"), [
    ({T: 0}, True, "share of the GetChatappTemplateDetail cap is 0"),
    ({}, False, "has not reached Redis since it started"),
    ({T: 2}, "long ago", "ran out"),
], ids=["share-0", "never-renewed", "lease-ran-out"])
def test_without_a_share_a_miss_is_refused_at_once_with_the_breakers_cooldown(shares: dict[str, int],
                                                                              renewed: object, why: str) -> None:
    async def scenario() -> None:
        if renewed == "long ago":
            lease = granted(shares, lease_s=30.0, renewed_at=START - 40)
        elif renewed:
            lease = granted(shares)
        else:
            lease = LocalLease(30.0)
        c = coordinator(Link(FakeRedis()), lease=lease)
        c.record_failure(failed())
        cast(Link, c.budget).redis.down = True
        before = loop().time()
        with pytest.raises(Overloaded, match=why) as caught:
            await c.slot(T, CAP, INTERVAL, grant_by=before + 30)
        assert loop().time() == before  # nothing to wait for: said at once, not after the quiet period
        assert caught.value.retry_after_s == c.breaker.cooldown
        assert c.stats.local_slots == 0

    run(scenario())


def test_local_sends_stop_when_the_lease_runs_out_and_misses_are_refused_after() -> None:
    async def scenario() -> None:
        lease = granted({T: 2}, lease_s=8.0)
        c = coordinator(Link(FakeRedis()), lease=lease)
        await until(START + 0.5)
        c.record_failure(failed())
        cast(Link, c.budget).redis.down = True
        sends, missed = [], 0
        with pytest.raises(Overloaded, match="ran out"):
            while True:
                try:
                    await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30)
                except SlotMissed:
                    missed += 1
                    continue
                sends.append(loop().time())
        assert sends and sends[0] == c.quiet_until
        assert max(sends) < lease.lease_until() == START + 8.0  # every local send inside the lease
        assert len(sends) == 6 and missed <= 1  # 5.25 s to 8 s at 0.51 s apart
        assert lease.beliefs(loop().time()) == {T: 0}

    run(scenario())


def test_a_local_slot_woken_later_than_the_guard_is_not_used_and_the_spacing_is_kept() -> None:
    async def scenario() -> None:
        c = coordinator(Link(FakeRedis()), lease=granted({T: 1}))
        c.record_failure(failed())
        cast(Link, c.budget).redis.down = True
        await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30)
        first = loop().time()
        due = first + 1 + MARGIN
        loop().call_at(due - 0.001, loop().stall, 0.05)  # a callback blocks the loop across the next slot
        with pytest.raises(SlotMissed):
            await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30)
        assert c.stats.late_slots == 1 and c.stats.local_slots == 1
        woke = loop().time()
        await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30)
        assert loop().time() >= woke >= due  # the next send is no earlier than the slot not used
        assert c.stats.local_slots == 2

    run(scenario())


def test_a_second_failure_during_an_outage_neither_counts_an_outage_nor_moves_the_quiet_period() -> None:
    async def scenario() -> None:
        c = coordinator(Link(FakeRedis()), lease=granted({T: 2}))
        c.record_failure(failed())
        quiet = c.quiet_until
        await until(START + 3.0)
        c.record_failure(failed())
        assert (c.stats.outages, c.quiet_until) == (1, quiet)
        assert c.breaker.opened_at == START + 3.0  # but the breaker's cooldown starts again

    run(scenario())


# --- recovery ----------------------------------------------------------------------------------------------


def test_recovery_without_local_sends_rejoins_the_shared_budget_at_once() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        link = Link(redis)
        c = coordinator(link, lease=granted({T: 2}))
        c.record_failure(failed())
        redis.down = True
        await until(START + 0.5)
        await c.probe_if_due()  # within the cooldown: not even asked
        assert link.asks == []
        await until(START + 1.0)
        await c.probe_if_due()  # due, but Redis still down: the breaker opens again
        assert (c.breaker.healthy, c.stats.recoveries, len(link.asks)) == (False, 0, 1)
        redis.down = False
        await until(START + 2.0)
        await c.probe_if_due()
        assert (c.mode, c.stats.recoveries) == ("shared", 1)
        assert c.quiet_until == pytest.approx(START + 2.002)  # the probe's round trip: no quiet period left
        await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 5)
        assert c.stats.shared_slots == 1 and c.stats.local_slots == 0
        assert link.reserves()[0].at == pytest.approx(START + 2.002)  # at once, not after the quiet period

    run(scenario())


def test_recovery_after_local_sends_takes_no_shared_slot_until_a_window_after_the_last_local_send() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        link = Link(redis)
        lease = granted({T: 2})
        c = coordinator(link, lease=lease)
        c.record_failure(failed())
        redis.down = True
        last_send_by = 0.0
        for _ in range(3):
            last_send_by = await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30) or 0.0
        redis.down = False
        await until(c.breaker.opened_at + c.breaker.cooldown)
        await c.probe_if_due()
        assert c.breaker.healthy and c.quiet_until == pytest.approx(last_send_by + WINDOW_S)
        await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30)
        assert link.reserves()[0].at >= last_send_by + WINDOW_S
        assert c.stats.shared_slots == 1 and c.stats.local_slots == 3

    run(scenario())


def test_a_local_slot_waiting_while_redis_comes_back_is_not_sent_locally() -> None:
    async def scenario() -> None:
        redis = FakeRedis()
        c = coordinator(Link(redis), lease=granted({T: 1}))
        c.record_failure(failed())
        redis.down = True
        await c.slot(T, CAP, INTERVAL, grant_by=loop().time() + 30)
        reserved = await c.reserve(T, CAP, INTERVAL, grant_by=loop().time() + 30)
        assert reserved == Reserved(T, CAP, None, INTERVAL)  # the local share: its slot is 1.02 s away
        waiting = asyncio.ensure_future(c.wait(reserved))
        redis.down = False
        await until(c.breaker.opened_at + c.breaker.cooldown)
        await c.probe_if_due()  # Redis is back while the local slot waits
        with pytest.raises(SlotMissed, match="Redis is back"):
            await waiting
        assert c.stats.local_slots == 1

    run(scenario())
