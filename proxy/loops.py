"""Which asyncio event loop the gateway runs on: ``--loop uvloop|asyncio|auto``.

uvloop (libuv, a dependency on Linux) serves the same aiohttp app with less CPU per request; ``auto`` takes it
when it imports and plain asyncio otherwise; ``uvloop`` refuses to start without it (``ConfigError``, one line);
``asyncio`` is the standard library's loop. The choice changes speed only: every guarantee of the gateway holds
on either loop, and the suite runs the gateway on both (`docs/benchmarks.md` compares them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class LoopUnavailable(Exception):
    """``--loop uvloop`` where uvloop is not installed."""


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop ``choice`` names, as (its name, a factory for ``asyncio.Runner``; None means asyncio's own)."""
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise LoopUnavailable("--loop uvloop: uvloop is not installed (pip install uvloop, or --loop auto)") \
                from exc
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Any, choice: str) -> Any:
    """``asyncio.run(main)`` on the chosen loop."""
    _, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
