"""The operator commands as processes with stdout and stderr pipes (no terminal, no COLUMNS), against a stand-in
gateway that records every request: output is never wrapped, and a bad CSV is refused before anything is sent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from tests.support import ROOT

ADMIN = "operator-pipes-admin-token-0123456789"
LONG_KEY = "GetChatappTemplateDetail:" + "k" * 300
LONG_ACTION = "Action" + "A" * 200


class StandIn(ThreadingHTTPServer):
    """Answers the admin API's purge and status with fixed documents; counts every request."""

    requests: list[str]

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def _answer(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path.startswith("/admin/purge"):
            document: dict[str, object] = {"Purged": 1, "Keys": [LONG_KEY], "NotCached": []}
        elif self.path.startswith("/admin/status"):
            document = {"counters": {"hits": 1, "misses": 1},
                        "queues": {LONG_ACTION: {"use": 0.5, "cap": 5, "depth": {"interactive": 3, "refresh": 2,
                                                                                  "warm": 1}, "refused": 0}},
                        "tenants": {"other": {"HIT": 1, "MISS": 1}}}
        else:
            document = {"Code": "NotFound", "Message": "stand-in"}
        body = orjson.dumps(document)
        self.send_response(200 if "Code" not in document else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout and stderr pipes and no COLUMNS (rich would assume 80 columns)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    env["PROXY_ADMIN_TOKEN"] = ADMIN
    return subprocess.run([sys.executable, "-m", "proxy", *args], check=False, capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)


def test_piped_output_is_never_wrapped(stand_in: StandIn, tmp_path: Path) -> None:
    purged = piped("purge", "--gateway", stand_in.url, "--key", LONG_KEY)
    assert purged.returncode == 0, purged.stderr
    assert f"  {LONG_KEY}" in purged.stdout.splitlines()  # the whole key on one line, to copy in one piece

    status = piped("status", "--once", "--gateway", stand_in.url)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert any(LONG_ACTION in line for line in lines) and "\x1b" not in status.stdout
    header = "\n".join(line for line in lines if "queued" in line or "interactive" in line)
    assert all(label in header for label in ("queued", "interactive", "refresh", "warm"))
    row = next(line for line in lines if LONG_ACTION in line)
    assert [cell.strip() for cell in row.split("│")[4:7]] == ["3", "2", "1"]  # under interactive, refresh, warm

    bad = tmp_path / ("a-long-folder-name-" + "d" * 80) / "keys.csv"
    bad.parent.mkdir()
    bad.write_text("Action,CustSpaceId\nFoo,7800\n")
    refused = piped("warm", "--file", str(bad), "--gateway", stand_in.url)
    assert refused.returncode == 1
    message = (f"cams-proxy warm: {bad} line 2: Action 'Foo' is not one of GetChatappTemplateDetail, "
               "QueryChatappBindWaba")
    assert len(message) > 160 and message in refused.stderr.splitlines()
    assert stand_in.requests == ["POST /admin/purge", "GET /admin/status"]  # and nothing for the bad CSV


@pytest.mark.parametrize(("text", "expected"), [
    ("CustSpaceId,TemplateCode\n7700,0abc\n", "keys.csv: no Action column (header: CustSpaceId, TemplateCode)"),
    ("Action,CustSpaceId,Langauge\nQueryChatappBindWaba,7800,\n",
     "keys.csv: unknown column 'Langauge' (did you mean Language? the actions take: "),
    ("Action,CustSpaceId,Language\nQueryChatappBindWaba,7800,\nFoo,7800,\n",
     "keys.csv line 3: Action 'Foo' is not one of GetChatappTemplateDetail, QueryChatappBindWaba"),
    ("Action,CustSpaceId,Language\nQueryChatappBindWaba,7800,\nGetChatappTemplateDetail,7700,en_US\n",
     "keys.csv line 3: one of TemplateCode or TemplateName is required by GetChatappTemplateDetail"),
])
def test_a_bad_csv_is_refused_before_anything_is_sent(stand_in: StandIn, tmp_path: Path, text: str,
                                                      expected: str) -> None:
    (tmp_path / "keys.csv").write_text(text)
    process = subprocess.run([sys.executable, "-m", "proxy", "warm", "--file", "keys.csv", "--gateway", stand_in.url],
                             check=False, capture_output=True, text=True, cwd=tmp_path, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.returncode == 1 and process.stdout == ""
    assert process.stderr.startswith(f"cams-proxy warm: {expected}"), process.stderr
    assert "x-acs-action" not in process.stderr
    assert stand_in.requests == []  # not one request: every row is checked before the first call
