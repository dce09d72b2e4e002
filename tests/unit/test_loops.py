"""--loop: uvloop where asked or installed, asyncio where asked, a clear refusal when uvloop is asked and missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from proxy.loops import LoopUnavailable, loop_factory, run


def test_asyncio_is_the_standard_loop() -> None:
    assert loop_factory("asyncio") == ("asyncio", None)


def test_auto_and_uvloop_take_uvloop_where_it_is_installed() -> None:
    import uvloop

    assert loop_factory("auto") == ("uvloop", uvloop.new_event_loop)
    assert loop_factory("uvloop")[0] == "uvloop"

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(which(), "uvloop").startswith("uvloop")
    assert run(which(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") == ("asyncio", None)
    with pytest.raises(LoopUnavailable, match="uvloop is not installed"):
        loop_factory("uvloop")
