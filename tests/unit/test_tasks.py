"""TaskOwner: a long-running task that ends early is reported (error log and `died`), never silently lost."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from proxy.tasks import TaskOwner, raise_if_cancelled


async def test_a_long_running_task_that_dies_is_kept_and_logged_at_error_level() -> None:
    owner = TaskOwner("test")

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("redis went away")

    async def finished() -> None:
        return None

    with capture_logs() as logs:
        owner.spawn(broken(), name="heartbeat", long_running=True)
        owner.spawn(finished(), name="sampler", long_running=True)
        owner.spawn(broken(), name="fill:k1")  # a short task: its caller awaits it, so only debug here
        await asyncio.sleep(0.01)
    assert owner.died == {"heartbeat": "ConnectionError: redis went away", "sampler": "it returned"}
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert sorted(entry["task"] for entry in errors) == ["heartbeat", "sampler"]
    await owner.close()


async def test_tasks_cancelled_at_shutdown_are_not_deaths() -> None:
    owner = TaskOwner("test")
    owner.spawn(asyncio.Event().wait(), name="bus", long_running=True)
    await asyncio.sleep(0)
    await owner.close()
    assert owner.died == {}


async def test_close_cancels_again_a_task_that_swallowed_the_first_cancellation() -> None:
    """redis-py's asyncio client swallows most cancellations that reach a command in flight: a loop around it
    then goes back to sleep as if nothing happened. `close` cancels again, so the task still ends."""
    owner = TaskOwner("test")
    swallowed = 0

    async def heartbeat_like() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)  # stands in for a Redis call that swallows the cancellation
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # the first one is lost, as redis-py loses it
            await asyncio.sleep(3600)  # back to the loop's sleep; only a second cancellation ends it

    task = owner.spawn(heartbeat_like(), name="heartbeat", long_running=True)
    await asyncio.sleep(0)
    await owner.close(patience_s=30, recancel_s=0.05)
    assert swallowed == 1
    assert task.cancelled()
    assert owner.died == {}


async def test_close_gives_up_on_a_task_that_ignores_every_cancellation_and_says_which() -> None:
    owner = TaskOwner("test")
    stop = asyncio.Event()
    ignored = 0

    async def stubborn() -> None:
        nonlocal ignored
        while not stop.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                ignored += 1

    task = owner.spawn(stubborn(), name="stubborn", long_running=True)
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await owner.close(patience_s=0.5, recancel_s=0.05)  # returns although the task never ends
    assert not task.done()
    assert ignored >= 2  # cancelled again while it waited, not once
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert errors and errors[0]["tasks"] == ["stubborn"], logs
    stop.set()
    task.cancel()
    await asyncio.wait([task], timeout=1)
    assert task.done()


async def test_raise_if_cancelled_ends_a_loop_whose_awaits_swallow_the_cancellation() -> None:
    rounds = 0

    async def swallowing_call() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return  # what redis-py does: the command "completes"

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await swallowing_call()
            raise_if_cancelled()

    task = asyncio.get_running_loop().create_task(loop())
    await asyncio.sleep(0)
    task.cancel()  # once: no second cancellation comes
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
    assert rounds == 1
