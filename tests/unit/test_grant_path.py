"""A grant frees its send slot exactly once, and the way to a grant frees what it took when it fails (by
counting, with stub connection and slot sources; no timing assertions)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.admission.grant import Grant
from proxy.admission.grant_path import GrantPath
from proxy.errors import Overloaded


class Issuer:
    def __init__(self) -> None:
        self.sent: list[float] = []
        self.released = 0
        self.given_back: list[object | None] = []

    def on_sent(self, grant: Grant, at: float) -> None:
        self.sent.append(at)

    def on_released(self) -> None:
        self.released += 1

    def give_back(self, connection: object | None) -> None:
        self.given_back.append(connection)


class Connections:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.taken = 0
        self.given_back: list[object] = []
        self.prewarmed = 0

    async def connection(self) -> object:
        if self.fail:
            raise OSError("no route")
        self.taken += 1
        return f"conn{self.taken}"

    def give_back(self, connection: object) -> None:
        self.given_back.append(connection)

    def prewarm(self, count: int) -> None:
        self.prewarmed += count


class Slots:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.asked: list[float] = []

    async def slot(self, action: str, cap: int, interval: float, grant_by: float) -> float | None:
        self.asked.append(grant_by)
        if self.refuse:
            raise Overloaded("the shared budget is spent", 1.0)
        return grant_by + 1.0

    def missed(self) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {}


def test_sent_then_release_frees_the_slot_once_and_gives_back_nothing_taken() -> None:
    issuer = Issuer()
    grant = Grant(issuer, 1.0, connection="c")
    assert grant.take_connection() == "c" and grant.take_connection() is None
    grant.sent(1.5)
    grant.release()
    grant.sent(2.0)
    assert issuer.sent == [1.5] and issuer.released == 0 and issuer.given_back == [None]


def test_release_without_a_send_gives_the_connection_back_and_frees_the_slot_once() -> None:
    issuer = Issuer()
    grant = Grant(issuer, 1.0, connection="c")
    grant.release()
    grant.release()
    grant.sent(2.0)
    assert issuer.released == 1 and issuer.sent == [] and issuer.given_back == ["c", None]


def test_a_grant_that_holds_no_slot_frees_nothing() -> None:
    issuer = Issuer()
    grant = Grant(issuer, 1.0, holds_slot=False)
    grant.sent(1.5)
    grant.release()
    assert issuer.sent == [] and issuer.released == 0


def path(connections: Connections | None = None, slots: Slots | None = None) -> tuple[GrantPath, list[float]]:
    delays: list[float] = []
    return GrantPath("A", 1000, lambda: 0.001, 0.0, delays.append, slots, connections), delays


async def test_a_take_hands_over_the_connection_and_the_shared_window() -> None:
    connections, slots = Connections(), Slots()
    grants, delays = path(connections, slots)
    loop = asyncio.get_running_loop()
    ended: list[bool] = []
    send_by, connection, send_at = await grants.take(loop, lambda: 7.0, lambda: ended.append(True), lambda: True)
    assert (send_by, connection, slots.asked, connections.prewarmed) == (8.0, "conn1", [7.0], 1)
    assert ended == []  # only the Redis coordinator passes the turn on early
    grant = Grant(grants, send_at, send_by, connection, send_at)
    grant.sent(send_at + 0.5)
    assert grants.pacing.last_sent == send_at + 0.5 and delays == [pytest.approx(0.5)]
    (await grants.take(loop, lambda: 7.0, lambda: None, lambda: False))  # the send slot was freed by `sent`
    assert connections.prewarmed == 1  # nobody else waited


async def test_a_refused_shared_slot_gives_the_connection_back_and_frees_the_send_slot() -> None:
    connections = Connections()
    grants, _ = path(connections, Slots(refuse=True))
    loop = asyncio.get_running_loop()
    with pytest.raises(Overloaded):
        await grants.take(loop, lambda: 7.0, lambda: None, lambda: False)
    assert connections.given_back == ["conn1"]
    grants.coordinator = None
    _, connection, _ = await asyncio.wait_for(grants.take(loop, lambda: 7.0, lambda: None, lambda: False), 5)
    assert connection == "conn2"  # the send slot was not left held


async def test_a_connection_that_cannot_be_opened_takes_nothing() -> None:
    connections = Connections(fail=True)
    grants, _ = path(connections)
    loop = asyncio.get_running_loop()
    with pytest.raises(OSError):
        await grants.take(loop, lambda: 7.0, lambda: None, lambda: False)
    assert connections.given_back == []
    connections.fail = False
    _, connection, _ = await asyncio.wait_for(grants.take(loop, lambda: 7.0, lambda: None, lambda: False), 5)
    assert connection == "conn1"


async def test_a_cancelled_take_frees_the_send_slot() -> None:
    class SlowSlots(Slots):
        async def slot(self, action: str, cap: int, interval: float, grant_by: float) -> float | None:
            await asyncio.sleep(60)
            return None

    connections = Connections()
    grants, _ = path(connections, SlowSlots())
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await grants.take(loop, lambda: 7.0, lambda: None, lambda: False)
    assert connections.given_back == ["conn1"]
    grants.coordinator = None
    await asyncio.wait_for(grants.take(loop, lambda: 7.0, lambda: None, lambda: False), 5)
