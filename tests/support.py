"""Helpers shared by the tests: real processes on free ports, signed requests with full control."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from proxy.secret import Secret
from proxy.settings import GatewaySettings
from proxy.signing import Credentials, format_date, sign_v3
from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET

ROOT = Path(__file__).resolve().parent.parent
#: Test vectors kept in the repository (the suite reads nothing outside it).
VECTORS = ROOT / "tests" / "vectors"
DEMO = Credentials(DEMO_ACCESS_KEY_ID, Secret(DEMO_ACCESS_KEY_SECRET))
SEED_SPACE = "28251486512358"
SEED_TEMPLATE = "744c4b5c79c9432497a075bdfca36bf5"
URL_LINE = re.compile(r"\burl(?:=|\":\")(http://[^\s\"]+)")  # console (url=...) or JSON ("url":"...")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    proc: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_cli(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
              ready_text: str = "listening", timeout: float = 20.0) -> Process:
    """Start ``python -m proxy ARGS`` and wait for the log line that carries its URL."""
    handle = log.open("w")
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", *args], stdout=handle, stderr=subprocess.STDOUT,
                            env=full_env, text=True, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if ready_text in text:
            match = URL_LINE.search(text)
            if match:
                return Process(proc, match.group(1).rstrip("/"), log)
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early ({proc.returncode}):\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"process not ready after {timeout}s:\n{log.read_text()}")


def wait_for_log(process: Process, *needles: str, within_s: float = 10.0) -> str:
    """The process's log once it holds every one of ``needles`` (access lines are written in batches, every
    50 ms, so a line may follow its answer by that much)."""
    deadline = time.monotonic() + within_s
    while True:
        text = process.log.read_text()
        if all(needle in text for needle in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def signed_headers(host: str, action: str, query: Mapping[str, str], *, credentials: Credentials = DEMO,
                   date: datetime | None = None, nonce: str | None = None, version: str = "2020-06-06",
                   method: str = "POST", body: bytes = b"",
                   extra: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    return dict(sign_v3(credentials=credentials, host=host, action=action, version=version, query=query,
                        date=format_date(date or datetime.now(UTC)), nonce=nonce or uuid.uuid4().hex,
                        method=method, body=body, extra_headers=extra))


def wire_query(query: Mapping[str, str]) -> str:
    """The query as the SDK puts it on the wire (``quote_plus``)."""
    return urlencode(sorted(query.items()))


def gateway_settings(upstream: str, **overrides: object) -> GatewaySettings:
    """Gateway settings in front of ``upstream`` with the demo key (what `make run` uses)."""


    values: dict[str, object] = {"upstream": upstream, "access_key_id": DEMO_ACCESS_KEY_ID,
                                 "access_key_secret": Secret(DEMO_ACCESS_KEY_SECRET), "log_format": "json"}
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


def many_templates(count: int, space: str = "77000000000001") -> dict[str, object]:
    """A fixture document with ``count`` distinct templates in one space (for backlog tests)."""
    templates = [{"TemplateCode": f"{i:032x}", "Name": f"bulk_{i}", "Language": "en_US", "Category": "UTILITY",
                  "TemplateType": "WHATSAPP", "AuditStatus": "pass", "Components": [{"Type": "BODY", "Text": f"t{i}"}]}
                 for i in range(count)]
    spaces = [{"CustSpaceId": space, "IsvCode": None, "Subscribed": True,
               "Waba": {"Id": "990000000000001", "Name": "Bulk"}, "Templates": templates}]
    spaces += [{"CustSpaceId": f"78{i:012d}", "IsvCode": None, "Subscribed": True,
                "Waba": {"Id": f"98{i:013d}", "Name": f"Bulk WABA {i}"}, "Templates": []} for i in range(count)]
    return {"spaces": spaces}
