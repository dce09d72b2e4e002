"""A network stand-in (``cams-proxy netem``) as a real process, for any test that wants a WAN in front of a target.

    netem = start_netem(f"127.0.0.1:{sim_port}", tmp_path, latency_ms=40, jitter_ms=10, tls=True)
    try:
        ...  # connect to netem.listen (host:port); trust netem.ca with TLS
        netem.cut("blackhole"); netem.restore(); netem.set_profile(latency_ms=200); netem.stats()
    finally:
        netem.stop()
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support import Process, start_cli

LISTENING = re.compile(r"(?:^|\s)listening=(\S+)")
CA = re.compile(r"(?:^|\s)ca=(\S+)")


@dataclass
class Netem:
    """A running stand-in: ``listen`` is ``host:port`` for clients, ``admin_url`` the operator endpoints' base
    (no trailing slash), ``ca`` the CA file to trust when it terminates TLS with a generated certificate."""

    process: Process
    listen: str
    admin_url: str
    ca: Path | None

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.request(method, f"{self.admin_url}{path}", json=body, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def cut(self, mode: str) -> dict[str, Any]:
        """``"refuse"`` or ``"blackhole"``."""
        return self._call("POST", "/__net/cut", {"mode": mode})

    def restore(self) -> dict[str, Any]:
        return self._call("POST", "/__net/restore")

    def set_profile(self, **changes: float | None) -> dict[str, Any]:
        """Partial update: latency_ms, jitter_ms, up_/down_latency_ms, up_/down_jitter_ms, handshake_ms,
        idle_close_s (None or 0: never)."""
        return self._call("PUT", "/__net/profile", changes)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/__net/stats")

    def stop(self) -> None:
        self.process.stop()


def start_netem(target: str, log_dir: Path, *, tls: bool = False, handshake_ms: float = 0, latency_ms: float = 0,
                jitter_ms: float = 0, idle_close_s: float | None = None, seed: int | None = 7,
                extra: tuple[str, ...] = ()) -> Netem:
    """Start ``cams-proxy netem`` on free ports in front of ``target`` (``host:port``) and wait until it listens.
    ``idle_close_s`` None: idle connections are never closed. The log is ``log_dir/netem-N.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    index = len(list(log_dir.glob("netem-*.log")))
    args = ["netem", "--port", "0", "--admin-port", "0", "--target", target, "--handshake-ms", str(handshake_ms),
            "--latency-ms", str(latency_ms), "--jitter-ms", str(jitter_ms),
            "--idle-close-s", str(idle_close_s or 0), "--log-format", "console"]
    if seed is not None:
        args += ["--seed", str(seed)]
    if tls:
        args += ["--tls", "--ca-out", str(log_dir / f"netem-{index}-ca.pem")]
    process = start_cli([*args, *extra], log_dir / f"netem-{index}.log")
    text = process.log.read_text()
    listen = LISTENING.search(text)
    if listen is None:
        process.stop()
        raise RuntimeError(f"netem printed no listening= address:\n{text}")
    ca = CA.search(text)
    return Netem(process, listen.group(1), process.url, Path(ca.group(1)) if ca else None)
