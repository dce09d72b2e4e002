"""The fill lease held through a fill (`proxy.replica.flight.LeasedFlights`), on virtual time: renewed every third of
its TTL until the fill ends, no more renewals once one finds Redis down, always released, the result told to every
replica; and a waiter whose holder vanished takes the lease over after its TTL.

Leases and bus are in-test objects recording what the flight does with them (the leases' own rules are in
tests/unit/test_leases.py, the bus's in tests/unit/test_bus.py); the fill is a coroutine that takes the time the test
says, standing in for the queue and the upstream.
"""

from __future__ import annotations

import asyncio
import math
from typing import cast

import orjson
import pytest

from proxy.cache.base import Entry
from proxy.cache.memory import MemoryCache
from proxy.errors import GatewayError, Overloaded
from proxy.fill import Fill
from proxy.flights import RunFill
from proxy.freshness import Lifetimes
from proxy.replica.bus import Bus, Notice
from proxy.replica.flight import LeasedFlights
from proxy.replica.leases import Leases, LeaseUnavailable
from proxy.tasks import TaskOwner
from proxy.upstream.errors import Outcome
from tests.unit.fake_loop import START, loop, run

KEY = "GetChatappTemplateDetail|k"
ACTION = "GetChatappTemplateDetail"
WALL = 1_700_000_000.0
TTL = 0.9
ENTRY = Entry(200, b'{"Code":"OK"}', WALL, "application/json", WALL + 300, WALL + 900)


class FakeLeases:
    """Records when each call came (loop time); ``acquire`` answers from ``free`` (True: taken), ``renew`` raises
    `LeaseUnavailable` from the ``fail_from``-th renewal on, or answers ``ours``."""

    def __init__(self, *free: bool) -> None:
        self.ttl_s = TTL
        self.free = list(free) or [True]
        self.acquires: list[float] = []
        self.renewals: list[float] = []
        self.releases: list[float] = []
        self.fail_from: int | None = None
        self.ours = True

    async def acquire(self, key: str) -> bool:
        self.acquires.append(loop().time())
        return self.free.pop(0) if len(self.free) > 1 else self.free[0]

    async def renew(self, key: str) -> bool:
        self.renewals.append(loop().time())
        if self.fail_from is not None and len(self.renewals) >= self.fail_from:
            raise LeaseUnavailable("redis lease renew failed: ConnectionError: reset")
        return self.ours

    async def release(self, key: str) -> None:
        self.releases.append(loop().time())


class FakeBus:
    replica_id = "replica-a"

    def __init__(self) -> None:
        self.published: list[Notice] = []
        self.waiting: dict[str, list[asyncio.Future[Notice]]] = {}

    def expect(self, key: str) -> asyncio.Future[Notice]:
        future: asyncio.Future[Notice] = loop().create_future()
        self.waiting.setdefault(key, []).append(future)
        return future

    def forget(self, key: str, future: asyncio.Future[Notice]) -> None:
        if future in self.waiting.get(key, []):
            self.waiting[key].remove(future)

    async def publish(self, notice: Notice) -> None:
        self.published.append(notice)


def flights(leases: FakeLeases, bus: FakeBus) -> LeasedFlights:
    return LeasedFlights(cast(Leases, leases), cast(Bus, bus), cache=MemoryCache(), lifetimes=Lifetimes(),
                         wall=lambda: WALL, owner=TaskOwner("test"))


def upstream(seconds: float, fails: GatewayError | None = None) -> tuple[list[float], RunFill]:
    """A fill that takes ``seconds`` (then answers ``ENTRY``, or raises ``fails``); the list gets its end time."""
    ended: list[float] = []

    async def fill() -> Fill:
        await asyncio.sleep(seconds)
        ended.append(loop().time())
        if fails is not None:
            raise fails
        return Fill(ENTRY, Outcome.SUCCESS, "OK", 1, 0.0, seconds, True)

    return ended, fill


def renewal_offsets(leases: FakeLeases) -> list[float]:
    return [round(at - START, 6) for at in leases.renewals]


def test_the_holder_renews_every_third_of_the_ttl_until_the_fill_ends_then_releases_and_tells_every_replica() -> None:
    async def scenario() -> None:
        leases, bus = FakeLeases(True), FakeBus()
        ended, fill = upstream(2.5)
        got = await flights(leases, bus).fill(KEY, fill, START + 10, ACTION)
        assert got.entry == ENTRY and not got.shared
        assert renewal_offsets(leases) == [0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.1, 2.4]
        assert leases.releases == ended == [START + 2.5]
        await asyncio.sleep(5)
        assert len(leases.renewals) == 8  # nothing renews a lease after its fill
        (notice,) = bus.published
        assert (notice.kind, notice.key, notice.origin, notice.body, notice.fresh_until) == (
            "fill", KEY, "replica-a", ENTRY.body, ENTRY.fresh_until)

    run(scenario())


def test_a_renewal_that_finds_redis_down_stops_the_renewals_the_fill_goes_on_and_the_lease_is_still_released(
        ) -> None:
    async def scenario() -> None:
        leases, bus = FakeLeases(True), FakeBus()
        leases.fail_from = 2
        _, fill = upstream(2.5)
        got = await flights(leases, bus).fill(KEY, fill, START + 10, ACTION)
        assert got.entry == ENTRY
        assert renewal_offsets(leases) == [0.3, 0.6]  # the second one failed: no third
        assert leases.releases == [START + 2.5]
        assert [n.kind for n in bus.published] == ["fill"]

    run(scenario())


def test_a_lease_found_lost_on_renewal_does_not_stop_the_fill_nor_its_release() -> None:
    """A holder slower than the TTL may have lost its lease (the budget, not the lease, keeps the cap); the
    release is a compare-and-delete, so releasing is still right."""

    async def scenario() -> None:
        leases, bus = FakeLeases(True), FakeBus()
        leases.ours = False
        _, fill = upstream(1.0)
        got = await flights(leases, bus).fill(KEY, fill, START + 10, ACTION)
        assert got.entry == ENTRY and leases.releases == [START + 1.0]
        assert [n.kind for n in bus.published] == ["fill"]

    run(scenario())


def test_a_failed_fill_is_released_and_told_as_a_fail_notice_with_its_retry_after() -> None:
    async def scenario() -> None:
        leases, bus = FakeLeases(True), FakeBus()
        _, fill = upstream(1.0, fails=Overloaded("The queue is full", 2.5))
        with pytest.raises(Overloaded):
            await flights(leases, bus).fill(KEY, fill, START + 10, ACTION)
        assert leases.releases == [START + 1.0] and renewal_offsets(leases) == [0.3, 0.6, 0.9]
        (notice,) = bus.published
        assert notice.kind == "fail" and notice.status == 503
        assert orjson.loads(notice.body)["RetryAfterS"] == 2.5
        await asyncio.sleep(2)
        assert len(leases.renewals) == 3

    run(scenario())


def test_a_fill_cancelled_midway_still_releases_its_lease_and_stops_renewing() -> None:
    async def scenario() -> None:
        leases, bus = FakeLeases(True), FakeBus()
        _, fill = upstream(10.0)
        task = asyncio.ensure_future(flights(leases, bus).fill(KEY, fill, START + 30, ACTION))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert leases.releases == [START + 1.0]
        await asyncio.sleep(5)
        assert renewal_offsets(leases) == [0.3, 0.6, 0.9]
        assert bus.published == []

    run(scenario())


def test_a_refresh_holding_the_lease_renews_it_the_same_way() -> None:
    async def scenario() -> None:
        leases, bus = FakeLeases(True), FakeBus()
        _, fill = upstream(1.0)
        assert await flights(leases, bus).refresh(KEY, fill, stale_before=WALL) is True
        assert renewal_offsets(leases) == [0.3, 0.6, 0.9] and leases.releases == [START + 1.0]

    run(scenario())


def test_a_waiter_whose_holder_vanished_takes_the_lease_over_after_its_ttl_and_fills() -> None:
    async def scenario() -> None:
        leases, bus = FakeLeases(False, True), FakeBus()  # held by another replica, which dies without a notice
        ended, fill = upstream(0.5)
        got = await flights(leases, bus).fill(KEY, fill, START + 10, ACTION)
        assert leases.acquires == [START, START + TTL]
        assert got.entry == ENTRY and ended == [START + TTL + 0.5]
        assert bus.waiting[KEY] == []  # each wait's future was forgotten

    run(scenario())


def test_a_waiter_answers_with_the_holders_fill_from_its_notice() -> None:
    async def scenario() -> None:
        leases, bus = FakeLeases(False), FakeBus()
        _, fill = upstream(0.5)
        waiter = asyncio.ensure_future(flights(leases, bus).fill(KEY, fill, START + 10, ACTION))
        await asyncio.sleep(0.2)
        (future,) = bus.waiting[KEY]
        future.set_result(Notice("fill", KEY, "replica-b", 200, ENTRY.body, ENTRY.content_type, ENTRY.fresh_until,
                                 math.inf))
        got = await waiter
        assert got.shared and got.entry.body == ENTRY.body and got.entry.stale_until == math.inf
        assert leases.acquires == [START] and leases.releases == []

    run(scenario())
