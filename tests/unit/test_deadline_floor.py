"""A deadline too short for any miss (issue 15), and one wait per refusal (pure, plus a read-through with a stub
upstream and a fake wall clock; no timing assertions)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping
from typing import Any, cast

import pytest

from proxy.actions import ACTIONS
from proxy.admission.queue import UpstreamQueue
from proxy.admission.spacing import deadline_floor
from proxy.answer import CacheStatus
from proxy.cache import Entry, MemoryCache
from proxy.errors import DeadlineExceeded, DeadlineTooShort, Overloaded, RequestRejected, retry_after_ms
from proxy.readthrough import ReadThrough
from proxy.replica.flight import failure_from_notice, failure_notice
from proxy.tasks import TaskOwner
from proxy.upstream.client import UpstreamClient, UpstreamResponse

TEMPLATE = "GetChatappTemplateDetail"
RETRY_IN = re.compile(r"retry in (\d+(?:\.\d+)?)s\.$")


def assert_one_wait(error: Overloaded) -> int:
    """The message's number, ``x-acs-retry-after`` (ms) and ``Retry-After`` (whole seconds, rounded up, >= 1) are
    one value; returns it in ms."""
    found = RETRY_IN.search(error.message)
    assert found is not None, error.message
    wait_ms = int(error.headers["x-acs-retry-after"])
    assert round(float(found.group(1)) * 1000) == wait_ms and wait_ms > 0
    assert int(error.headers["Retry-After"]) == max(1, math.ceil(wait_ms / 1000))
    assert error.message.count("retry in") == 1 and "retry in 0.0s" not in error.message
    return wait_ms


@pytest.mark.parametrize(("wait_s", "ms", "retry_after"), [
    (0.0, 100, "1"), (-1.0, 100, "1"), (0.0004, 100, "1"), (0.1, 100, "1"), (0.1001, 200, "1"), (0.95, 1000, "1"),
    (1.0, 1000, "1"), (1.01, 1100, "2"), (2.3, 2300, "3"), (2.349, 2400, "3"), (59.99, 60000, "60"),
])
def test_every_refusal_announces_one_wait(wait_s: float, ms: int, retry_after: str) -> None:
    assert retry_after_ms(wait_s) == ms
    error = Overloaded("The upstream queue for A is full for tenant t (3 waiting).", wait_s)
    assert error.headers == {"Retry-After": retry_after, "x-acs-retry-after": str(ms)}
    assert assert_one_wait(error) == ms and error.retry_after_s == ms / 1000
    assert error.message == f"The upstream queue for A is full for tenant t (3 waiting); retry in {ms / 1000:.1f}s."


def test_a_relayed_refusal_keeps_its_message_and_wait() -> None:
    refused = Overloaded("The upstream queue for A cannot serve this request before its deadline", 1.234)
    relayed = failure_from_notice(failure_notice("k", "replica-a", refused))
    assert isinstance(relayed, Overloaded) and relayed.message == refused.message  # not "retry in" twice
    assert relayed.headers == refused.headers == {"Retry-After": "2", "x-acs-retry-after": "1300"}


def test_the_floor_is_the_answer_time_and_the_advice_one_slot_more() -> None:
    floor = deadline_floor(0.25, 0.2)
    assert (floor.fastest_s, floor.advised_s) == (0.25, pytest.approx(0.45))
    assert floor.refuses(0.05) and floor.refuses(0.2499) and not floor.refuses(0.25) and not floor.refuses(10.0)
    assert not deadline_floor(0.0, 0.2).refuses(0.001)


def test_a_deadline_below_the_floor_is_its_own_400_without_retry_headers() -> None:
    queue = UpstreamQueue(TEMPLATE, rate_per_second=5, margin=0.02, bound=10)  # answers assumed to take 250 ms
    with pytest.raises(DeadlineTooShort) as caught:
        queue.check_deadline(0.05, "X-Request-Timeout-Ms 50")
    error = caught.value
    assert isinstance(error, RequestRejected) and not isinstance(error, Overloaded)
    assert (error.status, error.code, error.headers) == (400, "InvalidParameter.RequestTimeoutTooShort", {})
    advised = math.ceil((0.25 + queue.effective_interval) * 100) * 10
    assert error.message == (
        f"X-Request-Timeout-Ms 50 is shorter than the fastest possible miss of {TEMPLATE} (about 250 ms, the "
        f"upstream's recent answer time), even with nothing queued: it was not queued or sent. Raise it to at "
        f"least {advised} ms (the answer time and one slot of the action's spacing).")
    assert (error.fastest_ms, error.advised_ms) == (250, advised) and queue.stats.refused_too_short == 1
    queue.check_deadline(0.25, "X-Request-Timeout-Ms 250")  # the floor itself is enough
    for _ in range(30):  # the upstream turns out to answer in 20 ms: the floor follows
        queue.observe_upstream_time(0.02)
    queue.check_deadline(0.05, "X-Request-Timeout-Ms 50")
    assert queue.stats.refused_too_short == 1


def test_shadow_mode_refuses_no_deadline() -> None:
    queue = UpstreamQueue(TEMPLATE, rate_per_second=5, margin=0.02, bound=10, shadow=True)
    queue.check_deadline(0.001, "X-Request-Timeout-Ms 1")
    assert queue.stats.refused_too_short == 0


async def test_the_floor_agrees_with_admission_on_an_empty_queue() -> None:
    """What `check_deadline` lets through, an empty queue grants; what it refuses, `acquire` would refuse too
    (without a retry time): the two use one answer time."""
    queue = UpstreamQueue(TEMPLATE, rate_per_second=5, margin=0.02, bound=10)
    loop = asyncio.get_running_loop()
    floor = queue.deadline_floor()
    queue.check_deadline(floor.fastest_s + 0.5, "ok")
    (await queue.acquire(loop.time() + floor.fastest_s + 0.5)).release()
    with pytest.raises(DeadlineTooShort):
        queue.check_deadline(floor.fastest_s - 0.1, "short")
    with pytest.raises(DeadlineExceeded) as caught:
        await queue.acquire(loop.time() + floor.fastest_s - 0.1)
    assert caught.value.headers == {}


class StubUpstream:
    """What `ReadThrough` uses of `UpstreamClient`: an endpoint and ``call``, which answers when ``release`` is set."""

    endpoint = "http://upstream.invalid"

    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def call(self, action: str, params: Mapping[str, str], **_: Any) -> UpstreamResponse:
        self.calls += 1
        self.called.set()
        await self.release.wait()
        return UpstreamResponse(200, b'{"Code":"OK","Data":{}}', "application/json;charset=utf-8", "r", None, 0.001)


def readthrough(upstream: StubUpstream, owner: TaskOwner, cache: MemoryCache, now: float) -> ReadThrough:
    queues = {name: UpstreamQueue(name, rate_per_second=5, margin=0.02, bound=10) for name in ACTIONS}
    for queue in queues.values():
        queue._upstream_time = 1.0  # a slow upstream: a 500 ms deadline is too short, with room to spare
    return ReadThrough(cache=cache, client=cast(UpstreamClient, upstream), queues=queues, ttl=lambda name: 60.0,
                       attempts=1, access_key_id=lambda: "AK", owner=owner, wall_clock=lambda: now)


async def test_a_miss_too_short_for_any_fill_is_refused_before_the_flight() -> None:
    upstream, owner, now = StubUpstream(), TaskOwner("t"), 1_000_000.0
    flow = readthrough(upstream, owner, MemoryCache(), now)
    spec, loop = ACTIONS[TEMPLATE], asyncio.get_running_loop()
    with pytest.raises(DeadlineTooShort, match=r"^X-Request-Timeout-Ms 500 is shorter"):
        await flow.fetch(spec, {"TemplateCode": "a"}, loop.time() + 0.5, asked="X-Request-Timeout-Ms 500")
    with pytest.raises(DeadlineTooShort, match=r"^This request's deadline \(\d+ ms\)"):
        await flow.fetch(spec, {"TemplateCode": "a"}, loop.time() + 0.5)
    assert upstream.calls == 0 and len(owner) == 0 and flow.counters.deadline_too_short == 2
    assert flow.counters.misses == 0 and flow._queues[TEMPLATE].stats.refused_too_short == 2
    # The whole budget decides: 2 s asked, of which only 0.5 s is left (a slow cache lookup ate the rest), is not
    # the caller's mistake. The flight starts, and the queue answers that too little is left (504, nothing sent).
    with pytest.raises(DeadlineExceeded, match="Too little of the request's deadline is left"):
        await flow.fetch(spec, {"TemplateCode": "a"}, loop.time() + 0.5, budget_s=2.0, asked="X-Request-Timeout-Ms 2")
    assert upstream.calls == 0 and flow.counters.deadline_too_short == 2 and flow.counters.misses == 1
    await owner.close()


async def test_a_short_deadline_gets_a_stale_entry_or_joins_a_flight_under_way() -> None:
    upstream, owner, now = StubUpstream(), TaskOwner("t"), 1_000_000.0
    cache = MemoryCache()
    flow = readthrough(upstream, owner, cache, now)
    spec, loop = ACTIONS[TEMPLATE], asyncio.get_running_loop()
    stale = {"TemplateCode": "stale"}
    old = Entry(200, b'{"Code":"OK"}', now - 500, fresh_until=now - 400, stale_until=now + 200)  # past swr
    await cache.set(flow.key_for(spec, stale), old, 600)
    answer = await flow.fetch(spec, stale, loop.time() + 0.5, asked="X-Request-Timeout-Ms 500")
    assert answer.cache is CacheStatus.STALE and answer.stale_reason == "stale-if-error" and answer.entry is old
    assert answer.failed_status == 400 and upstream.calls == 0

    params = {"TemplateCode": "b"}
    leader = asyncio.create_task(flow.fetch(spec, params, loop.time() + 30))
    await upstream.called.wait()
    joiner = asyncio.create_task(flow.fetch(spec, params, loop.time() + 0.5, asked="X-Request-Timeout-Ms 500"))
    await asyncio.sleep(0)
    upstream.release.set()
    assert (await joiner).cache is CacheStatus.COALESCED and (await leader).cache is CacheStatus.MISS
    assert upstream.calls == 1 and flow.counters.deadline_too_short == 1
    await owner.close()
