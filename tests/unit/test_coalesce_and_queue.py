"""Single flight and the per-action queue, by counting (no timing assertions)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.admission.queue import UpstreamQueue
from proxy.coalesce import SingleFlight
from proxy.errors import DeadlineExceeded, Overloaded
from proxy.tasks import TaskOwner


async def test_concurrent_joins_share_one_run_and_one_error() -> None:
    owner = TaskOwner("t")
    flights: SingleFlight[int] = SingleFlight(owner)
    runs = 0
    release = asyncio.Event()

    async def fill() -> int:
        nonlocal runs
        runs += 1
        await release.wait()
        raise RuntimeError("upstream broke")

    joined = [flights.join("k", fill) for _ in range(50)]
    assert [leader for _, leader in joined].count(True) == 1 and len(flights) == 1
    loop = asyncio.get_running_loop()
    waits = [asyncio.create_task(SingleFlight.wait(flight, loop.time() + 5)) for flight, _ in joined]
    release.set()
    results = await asyncio.gather(*waits, return_exceptions=True)
    assert runs == 1 and all(isinstance(r, RuntimeError) for r in results) and len(flights) == 0
    await owner.close()


async def test_a_waiter_that_times_out_does_not_cancel_the_flight() -> None:
    owner = TaskOwner("t")
    flights: SingleFlight[str] = SingleFlight(owner)
    release = asyncio.Event()

    async def fill() -> str:
        await release.wait()
        return "answer"

    flight, _ = flights.join("k", fill)
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await SingleFlight.wait(flight, loop.time() + 0.01)
    assert not flight.cancelled()
    release.set()
    assert await SingleFlight.wait(flight, loop.time() + 5) == "answer"
    await owner.close()


async def test_owner_close_cancels_and_awaits_its_tasks() -> None:
    owner = TaskOwner("t")
    task = owner.spawn(asyncio.sleep(100))
    await owner.close()
    assert task.cancelled() and len(owner) == 0
    with pytest.raises(RuntimeError):
        owner.spawn(asyncio.sleep(0))


async def test_queue_refuses_when_full_and_releases_slots() -> None:
    queue = UpstreamQueue("A", rate_per_second=1000, margin=0.0, bound=2)
    loop = asyncio.get_running_loop()
    grant = await queue.acquire(loop.time() + 5)
    # The send slot is held until the grant is sent or released: one more holds the turn, waiting for it,
    # two queue behind it (the tenant's bound), the next is refused.
    waiters = [asyncio.create_task(queue.acquire(loop.time() + 5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert queue.waiting == 3
    with pytest.raises(Overloaded) as caught:
        await queue.acquire(loop.time() + 5)
    assert "full" in caught.value.message and queue.stats.refused_full == 1
    other_tenant = asyncio.create_task(queue.acquire(loop.time() + 5, tenant="other"))  # its own bound
    grant.sent(loop.time())
    for waiter in asyncio.as_completed((*waiters, other_tenant)):  # each grant holds the next until released
        granted = await waiter
        granted.release()
        granted.release()  # idempotent
    assert queue.stats.granted == 5 and queue.waiting == 0


async def test_queue_gives_up_at_the_deadline_without_granting() -> None:
    queue = UpstreamQueue("A", rate_per_second=1000, margin=0.0, bound=10)
    loop = asyncio.get_running_loop()
    held = await queue.acquire(loop.time() + 5)
    queue.estimated_wait = lambda *args, **kwargs: 0.0  # type: ignore[method-assign]
    queue._upstream_time = 0.0
    with pytest.raises(DeadlineExceeded):
        await queue.acquire(loop.time() + 0.02)
    assert queue.stats.expired == 1 and queue.stats.granted == 1 and queue.waiting == 0
    held.release()
    (await queue.acquire(loop.time() + 5)).release()
    assert queue.stats.granted == 2


async def test_queue_refuses_at_once_what_cannot_fit_its_deadline() -> None:
    queue = UpstreamQueue("A", rate_per_second=5, margin=0.02, bound=100)
    queue._upstream_time = 0.05  # a 100 ms deadline is long enough for an answer, not for the slot ahead (~210 ms)
    loop = asyncio.get_running_loop()
    grant = await queue.acquire(loop.time() + 5)
    grant.sent(loop.time())
    with pytest.raises(Overloaded) as caught:
        await queue.acquire(loop.time() + 0.1)
    assert caught.value.retry_after_s > 0 and queue.stats.refused_deadline == 1
    wait_ms = int(caught.value.headers["x-acs-retry-after"])
    assert caught.value.message.endswith(f"; retry in {wait_ms / 1000:.1f}s.") and wait_ms >= 100


async def test_a_call_with_less_time_left_than_an_answer_takes_is_504_at_once_without_retry_headers() -> None:
    queue = UpstreamQueue("A", rate_per_second=5, margin=0.02, bound=100)
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceeded) as caught:  # 100 ms left, answers take ~250 ms: no queue would help
        await queue.acquire(loop.time() + 0.1)
    assert caught.value.headers == {} and caught.value.status == 504 and "not sent" in caught.value.message
    assert queue.stats.refused_no_time_left == 1 and queue.stats.refused_deadline == 0 and queue.waiting == 0


async def test_queued_calls_that_a_wider_margin_no_longer_fits_are_refused_with_a_retry_time() -> None:
    """Admission planned at δ = floor; δ then widens (a very spread path): the calls at the tail that can no
    longer be granted before their deadline are told so (Overloaded, with a retry time), and are never sent."""
    from proxy.admission.margin import AdaptiveMargin
    margin = AdaptiveMargin(0.02)
    queue = UpstreamQueue("A", rate_per_second=50, margin=margin, bound=100)
    queue._upstream_time = 0.0
    loop = asyncio.get_running_loop()
    first = await queue.acquire(loop.time() + 5)
    first.sent(loop.time())
    deadline = loop.time() + 0.2  # at the floor's spacing (about 21 ms) nine calls fit; at the ceiling's they do not

    async def one() -> str:
        try:
            grant = await queue.acquire(deadline)
        except Overloaded as refused:
            assert refused.retry_after_s > 0 and "no longer" in str(refused)
            wait_ms = int(refused.headers["x-acs-retry-after"])
            assert str(refused).endswith(f"; retry in {wait_ms / 1000:.1f}s.")
            assert wait_ms == round(refused.retry_after_s * 1000)
            return "refused"
        except DeadlineExceeded:
            return "expired"
        grant.sent(loop.time())
        return "sent"

    waiters = [asyncio.create_task(one()) for _ in range(9)]
    await asyncio.sleep(0)
    assert queue.stats.refused_deadline == 0  # all nine were admitted
    for _ in range(20):
        margin.observe(0.0)
        margin.observe(0.5)  # δ goes to its ceiling
    outcomes = await asyncio.gather(*waiters)
    assert queue.stats.refused_late >= 1 and outcomes.count("refused") == queue.stats.refused_late
    assert queue.stats.granted == 1 + outcomes.count("sent")
