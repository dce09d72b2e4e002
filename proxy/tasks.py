"""Owned background tasks: created through a `TaskOwner`, kept in a set, cancelled and awaited on
shutdown. No fire-and-forget: an exception in a task is logged, never lost.

A task spawned ``long_running`` (the heartbeat, the bus, refresh-ahead, the metrics sampler, credentials) is meant
to run until shutdown: if it ends before, with an error or without, that is logged at error level and kept in
`TaskOwner.died`, which ``/readyz`` reports as a degraded reason. Short tasks (fills, refreshes) that fail are
awaited by whoever asked for them, so their errors are only logged at debug level here.

Cancellation is not taken on trust. redis-py's asyncio client swallows most cancellations that reach a command
in flight (measured with redis-py 8.1: of 1,000 tasks cancelled mid-command, 680–910 saw the command return
normally, on asyncio and on uvloop): a loop around Redis calls would then go on forever, and a gateway could
ignore SIGTERM until killed. So loops check `raise_if_cancelled` each round, and `TaskOwner.close` cancels again
every `RECANCEL_S` what has not ended, for at most `CLOSE_PATIENCE_S`; a task still running then is logged at
error level (with its name) and left behind, so shutdown goes on. Guarantee: `close` returns within
`CLOSE_PATIENCE_S` (plus one loop turn) whatever its tasks do with a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from proxy.logs import get_logger

T = TypeVar("T")
log = get_logger("proxy.tasks")

#: How often `TaskOwner.close` cancels again a task that has not ended, seconds: long enough for a cleanup after
#: the first cancellation (a fill lease released over a slow Redis path) not to be cut short by the next one.
RECANCEL_S: Final = 1.0
#: How long `TaskOwner.close` waits for its tasks in all, seconds (inside the shutdown grace's budget).
CLOSE_PATIENCE_S: Final = 5.0


def raise_if_cancelled() -> None:
    """Raise `asyncio.CancelledError` if the current task has been asked to stop, even though the await that the
    request reached returned normally (a library swallowed it): long-running loops call this every round."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class TaskOwner:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Long-running tasks that ended before shutdown: name -> why.
        self.died: dict[str, str] = {}

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None,
              long_running: bool = False) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name} is shutting down")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended_early if long_running else self._done)
        return task

    def _ended_early(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._closed or task.cancelled():
            return
        error = task.exception()
        why = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        self.died[task.get_name()] = why
        log.error("background task died", task=task.get_name(), error=why)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here so asyncio never reports it as lost; the awaiting side handles it.
            log.debug("task ended with an error", task=task.get_name(), error=repr(task.exception()))

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, patience_s: float = CLOSE_PATIENCE_S, recancel_s: float = RECANCEL_S) -> None:
        """Cancel every task and wait for them; cancel again every ``recancel_s`` those that swallowed it; after
        ``patience_s``, log the ones still running and return without them."""
        self._closed = True
        pending = set(self._tasks)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + patience_s
        while pending:
            for task in pending:
                task.cancel()
            left = give_up_at - loop.time()
            if left <= 0:
                log.error("background tasks ignored cancellation; shutdown goes on without them",
                          owner=self.name, tasks=sorted(task.get_name() for task in pending))
                return
            _done, pending = await asyncio.wait(pending, timeout=min(recancel_s, left))
