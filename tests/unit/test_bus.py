"""The notice bus (`proxy.replica.bus`) over an in-test pub/sub, on virtual time: notices routed to the waiters of
their key, the hooks for other replicas' notices, publishing, and the reader's reconnects.

The client is injected (`Bus` takes it), so the fake is just what the bus calls: ``publish``, and ``pubsub()`` whose
object has ``subscribe``, ``get_message(timeout=...)`` and ``aclose``. What the test feeds it is what redis-py hands
over: ``{"type": "subscribe"}`` when Redis confirms the subscription, ``{"type": "message", "data": ...}`` per
notice, or an exception when the connection fails.
"""

from __future__ import annotations

import asyncio
import math
from itertools import pairwise
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.replica.bus import CHANNEL, Bus, Notice
from proxy.replica.redis_clients import RedisClient
from tests.unit.fake_loop import loop, run

ME, OTHER = "replica-a", "replica-b"
CONFIRMED: dict[str, Any] = {"type": "subscribe", "channel": CHANNEL.encode(), "data": 1}


def message(notice: Notice | bytes) -> dict[str, Any]:
    data = notice if isinstance(notice, bytes) else notice.encode()
    return {"type": "message", "channel": CHANNEL.encode(), "data": data}


class FakePubSub:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.subscribed: list[str] = []
        self.closed = False

    async def subscribe(self, channel: str) -> None:
        self.client.subscribes.append(loop().time())
        if self.client.refuse_subscribes > 0:
            self.client.refuse_subscribes -= 1
            raise RedisConnectionError("Connection refused")
        self.subscribed.append(channel)

    async def get_message(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109 (redis-py's signature)
        try:
            item = await asyncio.wait_for(self.client.feed.get(), timeout)
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return cast(dict[str, Any], item)

    async def aclose(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self) -> None:
        self.feed: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self.pubsubs: list[FakePubSub] = []
        self.subscribes: list[float] = []
        self.refuse_subscribes = 0
        self.published: list[tuple[str, bytes]] = []
        self.publish_fails = False

    def pubsub(self) -> FakePubSub:
        self.pubsubs.append(FakePubSub(self))
        return self.pubsubs[-1]

    async def publish(self, channel: str, data: bytes) -> int:
        if self.publish_fails:
            raise RedisConnectionError("Connection reset by peer")
        self.published.append((channel, data))
        return 1


class Heard:
    """What the hooks were told."""

    def __init__(self, bus: Bus) -> None:
        self.invalidated: list[str] = []
        self.throttled: list[str] = []
        self.reconnects = 0
        bus.on_invalidate = self.invalidated.append
        bus.on_throttle = self.throttled.append
        bus.on_reconnect = self._reconnected

    def _reconnected(self) -> None:
        self.reconnects += 1


async def settle() -> None:
    """Let the reader take everything fed so far (virtual time: costs nothing)."""
    await asyncio.sleep(0.01)


async def started() -> tuple[FakeClient, Bus, asyncio.Task[None], Heard]:
    client = FakeClient()
    bus = Bus(cast(RedisClient, client), ME)
    heard = Heard(bus)
    reader = asyncio.ensure_future(bus.run())
    client.feed.put_nowait(CONFIRMED)
    await settle()
    assert bus.connected.is_set()
    return client, bus, reader, heard


async def stop(reader: asyncio.Task[None]) -> None:
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader


def fill(key: str, origin: str = OTHER, body: bytes = b'{"Code":"OK"}') -> Notice:
    return Notice("fill", key, origin, 200, body, "application/json", 1_800_000_000.5, math.inf)


# --- notices routed to waiters -----------------------------------------------------------------------------


def test_a_fill_notice_resolves_every_waiter_of_its_key_and_no_other() -> None:
    async def scenario() -> None:
        client, bus, reader, _ = await started()
        first, second, elsewhere = bus.expect("k"), bus.expect("k"), bus.expect("other")
        client.feed.put_nowait(message(fill("k")))
        await settle()
        assert first.result() == second.result() == fill("k")
        assert not elsewhere.done()
        await stop(reader)

    run(scenario())


def test_a_fail_notice_resolves_the_waiters_too() -> None:
    async def scenario() -> None:
        client, bus, reader, heard = await started()
        waiter = bus.expect("k")
        failed = Notice("fail", "k", OTHER, 503, b'{"Code":"Throttling.Proxy"}', "application/json")
        client.feed.put_nowait(message(failed))
        await settle()
        assert waiter.result() == failed
        assert heard.invalidated == []  # a failure changes nothing in the cache
        await stop(reader)

    run(scenario())


def test_only_waiters_registered_before_a_notice_get_it() -> None:
    async def scenario() -> None:
        client, bus, reader, _ = await started()
        client.feed.put_nowait(message(fill("k")))
        await settle()
        late = bus.expect("k")  # nothing is kept: this one waits for the next notice
        await settle()
        assert not late.done()
        client.feed.put_nowait(message(fill("k", body=b"second")))
        await settle()
        assert late.result().body == b"second"
        await stop(reader)

    run(scenario())


def test_a_forgotten_waiter_is_not_resolved_and_the_others_still_are() -> None:
    async def scenario() -> None:
        client, bus, reader, _ = await started()
        forgotten, kept = bus.expect("k"), bus.expect("k")
        bus.forget("k", forgotten)
        bus.forget("k", forgotten)  # twice: harmless
        bus.forget("never-expected", forgotten)
        client.feed.put_nowait(message(fill("k")))
        await settle()
        assert not forgotten.done() and kept.done()
        await stop(reader)

    run(scenario())


def test_a_waiter_that_gave_up_does_not_stop_the_others_from_being_resolved() -> None:
    async def scenario() -> None:
        client, bus, reader, _ = await started()
        waiters = [bus.expect("k") for _ in range(3)]
        waiters[1].cancel()  # its request's deadline passed before it could forget
        client.feed.put_nowait(message(fill("k")))
        await settle()
        assert waiters[0].done() and waiters[2].done() and waiters[1].cancelled()
        assert not reader.done()  # the reader went on
        await stop(reader)

    run(scenario())


# --- hooks: what other replicas changed --------------------------------------------------------------------


def test_fills_and_invalidations_of_other_replicas_drop_the_key_from_l1_this_replicas_own_do_not() -> None:
    async def scenario() -> None:
        client, bus, reader, heard = await started()
        waiter = bus.expect("b")
        for notice in (fill("a"), fill("mine", origin=ME), Notice("invalidate", "b", OTHER),
                       Notice("invalidate", "mine-too", ME)):
            client.feed.put_nowait(message(notice))
        await settle()
        assert heard.invalidated == ["a", "b"]
        assert not waiter.done()  # an invalidation is no fill: the waiter goes on waiting
        assert bus.received == 4
        await stop(reader)

    run(scenario())


def test_a_throttle_notice_of_another_replica_reaches_the_adaptive_rate_with_its_action() -> None:
    async def scenario() -> None:
        client, _, reader, heard = await started()
        client.feed.put_nowait(message(Notice("throttle", "GetChatappTemplateDetail", OTHER)))
        client.feed.put_nowait(message(Notice("throttle", "QueryChatappBindWaba", ME)))
        await settle()
        assert heard.throttled == ["GetChatappTemplateDetail"] and heard.invalidated == []
        await stop(reader)

    run(scenario())


@pytest.mark.parametrize("raw", [b"not json", b'{"kind": "fill"}', b'{"kind": "fill", "key": "k", "origin": "b", '
                                 b'"status": "two hundred"}', b'{"kind":"fill","key":"k","origin":"b","body":"abc"}'],
                         ids=["not-json", "no-key", "bad-status", "bad-base64"])
def test_an_unreadable_message_is_skipped_and_the_reader_goes_on(raw: bytes) -> None:
    async def scenario() -> None:
        client, bus, reader, _ = await started()
        waiter = bus.expect("k")
        client.feed.put_nowait(message(raw))
        client.feed.put_nowait(message(fill("k")))
        await settle()
        assert bus.received == 1 and waiter.result() == fill("k")
        await stop(reader)

    run(scenario())


# --- publishing --------------------------------------------------------------------------------------------


def test_publish_sends_the_encoded_notice_on_the_one_channel_and_it_decodes_to_the_same_notice() -> None:
    async def scenario() -> None:
        client = FakeClient()
        bus = Bus(cast(RedisClient, client), ME)
        notice = Notice("fill", "k", ME, 404, bytes(range(256)), "text/plain", 1.5, math.inf)
        await bus.publish(notice)
        ((channel, data),) = client.published
        assert channel == CHANNEL == "cams:events"
        assert Notice.decode(data) == notice  # the body in base64, an endless lifetime as null
        assert b'"stale_until":null' in data

    run(scenario())


def test_a_publish_that_fails_is_dropped_not_raised() -> None:
    async def scenario() -> None:
        client = FakeClient()
        client.publish_fails = True
        await Bus(cast(RedisClient, client), ME).publish(Notice("invalidate", "k", ME))

    run(scenario())


# --- the reader: subscription confirmed, lost, reconnected -------------------------------------------------


def test_a_lost_subscription_is_reconnected_and_l1_cleared_only_once_redis_confirms_the_new_one() -> None:
    async def scenario() -> None:
        client, bus, reader, heard = await started()
        assert heard.reconnects == 0  # the first confirmation is no reconnect
        client.feed.put_nowait(RedisConnectionError("Connection closed by server."))
        await settle()
        assert not bus.connected.is_set()
        await asyncio.sleep(5)  # resubscribed (SUBSCRIBE written) but never confirmed: L1 is all there is
        assert len(client.pubsubs) == 2 and client.pubsubs[1].subscribed == [CHANNEL]
        assert client.pubsubs[0].closed  # the dead subscription is closed (after the backoff)
        assert heard.reconnects == 0 and not bus.connected.is_set()
        client.feed.put_nowait(CONFIRMED)
        await settle()
        assert heard.reconnects == 1 and bus.connected.is_set()
        waiter = bus.expect("k")
        client.feed.put_nowait(message(fill("k")))
        await settle()
        assert waiter.done()
        await stop(reader)

    run(scenario())


def test_reconnects_back_off_doubling_to_two_seconds_and_start_over_after_a_confirmation() -> None:
    async def scenario() -> None:
        client, _, reader, heard = await started()
        client.refuse_subscribes = 7
        lost = loop().time()
        client.feed.put_nowait(RedisConnectionError("Connection reset by peer"))
        await asyncio.sleep(20)
        tries = [at - lost for at in client.subscribes[1:]]
        assert [b - a for a, b in pairwise([0.0, *tries])] == pytest.approx(
            [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
        client.feed.put_nowait(CONFIRMED)
        await settle()
        assert heard.reconnects == 1
        lost = loop().time()
        client.feed.put_nowait(RedisConnectionError("Connection reset by peer"))
        await asyncio.sleep(1)
        assert client.subscribes[-1] - lost == pytest.approx(0.1)  # the backoff started over
        await stop(reader)

    run(scenario())


def test_a_bug_in_the_reader_is_logged_and_reconnected_from_so_l1_coherence_never_stops() -> None:
    async def scenario() -> None:
        client, bus, reader, heard = await started()
        client.feed.put_nowait(TypeError("a bug"))
        await asyncio.sleep(1)
        assert not reader.done() and len(client.pubsubs) == 2
        client.feed.put_nowait(CONFIRMED)
        waiter = bus.expect("k")
        client.feed.put_nowait(message(fill("k")))
        await settle()
        assert waiter.done() and heard.reconnects == 1
        await stop(reader)

    run(scenario())


def test_cancelling_the_reader_closes_its_subscription() -> None:
    async def scenario() -> None:
        client, _, reader, _ = await started()
        await stop(reader)
        assert client.pubsubs[-1].closed

    run(scenario())
