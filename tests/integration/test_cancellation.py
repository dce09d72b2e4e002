"""A cancelled Redis call on a real redis-server: redis-py's asyncio client often swallows the cancellation (the
command returns normally), so the gateway's loops must not rely on it (`proxy.tasks.raise_if_cancelled`).

Counted, never timed: how many of the cancelled tasks saw their command return normally, and that every one of
them still ended as cancelled because the loop checks after each call.
"""

from __future__ import annotations

import asyncio

from proxy.replica.redis_clients import RedisClient, redis_call
from proxy.tasks import raise_if_cancelled

TASKS = 200


async def test_every_cancelled_loop_of_redis_calls_ends_though_redis_py_swallows_cancellations(
        client: RedisClient) -> None:
    await client.ping()
    script = client.register_script("return redis.call('TIME')")
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            await redis_call(script(keys=["cams:test:clock"]), "clock")
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                swallowed += 1
            raise_if_cancelled()

    loop_ = asyncio.get_running_loop()
    for index in range(TASKS):
        task = loop_.create_task(loop())
        for _ in range(1 + index % 7):  # cancel at different points of the command's round trip
            await asyncio.sleep(0)
        task.cancel()
        done, _pending = await asyncio.wait([task], timeout=5)
        assert done and task.cancelled(), f"task {index} did not end on its cancellation"
    print(f"\n{swallowed} of {TASKS} cancellations swallowed by redis-py (the loop ended anyway)")
