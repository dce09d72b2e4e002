"""The gateway on either event loop, through the real CLI: it says which it runs, serves a miss and a hit, writes
their access lines; ``--loop uvloop`` is what ``auto`` picks here (uvloop is a dependency on Linux)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.integration.test_wan import ENV
from tests.support import SEED_SPACE, start_cli, wait_for_log


@pytest.mark.parametrize(("choice", "expected"), [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")])
def test_the_gateway_serves_on_the_loop_it_was_given(choice: str, expected: str, sim_url: str,
                                                     tmp_path: Path) -> None:
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url, "--loop", choice], tmp_path / "gateway.log",
                        env=ENV, ready_text="gateway ready")
    try:
        assert f"loop={expected}" in gateway.log.read_text()
        url = f"{gateway.url}/v1/QueryChatappBindWaba?CustSpaceId={SEED_SPACE}"
        first, second = requests.get(url, timeout=10), requests.get(url, timeout=10)
        assert (first.status_code, first.headers["X-Cache"]) == (200, "MISS")
        assert (second.status_code, second.headers["X-Cache"]) == (200, "HIT")
        log = wait_for_log(gateway, second.headers["X-Request-Id"])
        assert "cache=MISS" in log and "cache=HIT" in log
    finally:
        gateway.stop()
    assert gateway.proc.returncode == 0
