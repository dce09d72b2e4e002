"""Owned background tasks: created through a `TaskOwner`, kept in a set, cancelled and awaited on
shutdown. No fire-and-forget: an exception in a task is logged, never lost.

A task spawned ``long_running`` (the heartbeat, the bus, refresh-ahead, the metrics sampler, credentials) is meant
to run until shutdown: if it ends before, with an error or without, that is logged at error level and kept in
`TaskOwner.died`, which ``/readyz`` reports as a degraded reason. Short tasks (fills, refreshes) that fail are
awaited by whoever asked for them, so their errors are only logged at debug level here."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from proxy.logs import get_logger

T = TypeVar("T")
log = get_logger("proxy.tasks")


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

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
