"""TaskOwner: a long-running task that ends early is reported (error log and `died`), never silently lost."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from proxy.tasks import TaskOwner


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
