"""An asyncio event loop on a fake clock: `asyncio.sleep`, timeouts and ``loop.time()`` run on virtual time.

When nothing is ready to run, the loop jumps its clock straight to the next timer instead of waiting for it, so a
test of 30 virtual seconds takes milliseconds and never depends on the machine's speed. Sockets are still polled
(without waiting), but the unit tests that use it do no I/O. A loop with nothing ready and no timer would wait
forever for I/O: here that is a deadlock, and raises instead of hanging the test.

``stall(seconds)`` moves the clock without running anything, the way a callback that blocks the loop would (the
late wake-ups the coordinator guards against).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
START = 1_000.0


class Deadlock(RuntimeError):
    """Nothing can ever run again: no callback is ready, no timer is set, no I/O is awaited that could come."""


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: FakeClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        assert self.loop is not None
        if timeout is None:
            raise Deadlock("the loop would wait forever: nothing is ready and no timer is set")
        self.loop.now += timeout  # straight to the next timer
        return []


class FakeClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = START

    def time(self) -> float:
        return self.now

    def stall(self, seconds: float) -> None:
        """The loop is blocked for ``seconds`` (as by a slow callback): time passes, nothing runs."""
        self.now += seconds


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new `FakeClockLoop` (its clock starts at `START`)."""
    with asyncio.Runner(loop_factory=FakeClockLoop) as runner:
        return runner.run(main)


def loop() -> FakeClockLoop:
    """The running fake-clock loop (inside `run`)."""
    running = asyncio.get_running_loop()
    assert isinstance(running, FakeClockLoop)
    return running
