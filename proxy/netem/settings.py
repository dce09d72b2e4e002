"""Settings of ``cams-proxy netem``, declared as an `Option` table like the other commands (`proxy.options`).

Guarantees: every value is parsed and checked before anything listens; all bad values are reported together, one
line each (`ConfigError`, exit status 2); a flag beats its ``NETEM_*`` variable, which beats the default.
Non-guarantees: that the target is up (it is dialled per connection; a dead target resets that connection).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from proxy.netem.core import Latency, Profile
from proxy.options import (
    LOG_OPTIONS,
    ConfigError,
    Option,
    boolean,
    existing_file,
    non_negative_float,
    optional_int,
    parse_port,
    resolve,
)


def host_port(raw: str) -> str:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``), returned as given."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8081")
    return raw


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def optional_float(raw: str) -> float | None:
    """Empty: unset (the both-ways value applies)."""
    return None if raw == "" else non_negative_float(raw)


def idle_seconds(raw: str) -> float | None:
    """Seconds; 0 or empty: never."""
    value = 0.0 if raw == "" else non_negative_float(raw)
    return value or None


def out_path(raw: str) -> Path | None:
    if raw == "":
        return None
    path = Path(raw)
    if not path.parent.is_dir():
        raise ValueError("its folder does not exist")
    return path


@dataclass(frozen=True)
class NetemSettings:
    """Settings of ``cams-proxy netem``."""

    host: str = "127.0.0.1"
    port: int = 8082
    target: str = "127.0.0.1:8081"
    tls: bool = False
    cert: Path | None = None
    key: Path | None = None
    ca_out: Path | None = None
    tls_name: str | None = None
    handshake_ms: float = 60.0
    latency_ms: float = 40.0
    jitter_ms: float = 10.0
    up_latency_ms: float | None = None
    up_jitter_ms: float | None = None
    down_latency_ms: float | None = None
    down_jitter_ms: float | None = None
    idle_close_s: float | None = 5.0
    admin_host: str = "127.0.0.1"
    admin_port: int = 8083
    seed: int | None = None
    log_level: str = "info"
    log_format: str = "console"

    @classmethod
    def from_sources(cls, namespace: argparse.Namespace, environ: Mapping[str, str]) -> Self:
        settings = cls(**resolve(NETEM_OPTIONS, namespace, environ))
        problems = settings.problems()
        if problems:
            raise ConfigError(problems)
        return settings

    def problems(self) -> list[str]:
        found: list[str] = []
        if (self.cert is None) != (self.key is None):
            found.append("invalid setting --cert/--key: give both (the certificate chain and its private key) or "
                         "neither (a CA and certificate are generated)")
        if (self.cert is not None or self.key is not None) and not self.tls:
            found.append("invalid setting --cert/--key: they need --tls")
        if self.ca_out is not None and (not self.tls or self.cert is not None):
            found.append(f"invalid setting --ca-out={str(self.ca_out)!r}: only with --tls and a generated "
                         "certificate (no --cert/--key)")
        return found

    @property
    def target_address(self) -> tuple[str, int]:
        return split_host_port(self.target)

    def profile(self) -> Profile:
        """The starting profile: the both-ways latency and jitter, with the per-direction overrides."""

        def pick(override: float | None, both: float) -> float:
            return both if override is None else override

        return Profile(
            up=Latency(pick(self.up_latency_ms, self.latency_ms), pick(self.up_jitter_ms, self.jitter_ms)),
            down=Latency(pick(self.down_latency_ms, self.latency_ms), pick(self.down_jitter_ms, self.jitter_ms)),
            handshake_ms=self.handshake_ms,
            idle_close_s=self.idle_close_s,
        )


NETEM_OPTIONS: Final = (
    Option("host", "--host", "NETEM_HOST", str, "127.0.0.1", "address to listen on", "ADDR"),
    Option("port", "--port", "NETEM_PORT", parse_port, 8082, "port to listen on; 0 picks a free one and prints it",
           "PORT"),
    Option("target", "--target", "NETEM_TARGET", host_port, "127.0.0.1:8081",
           "where each connection is relayed to, HOST:PORT (plain TCP)", "HOST:PORT"),
    Option("tls", "--tls", "NETEM_TLS", boolean, False,
           "terminate TLS from clients (the target is still dialled in plain TCP)", switch=True),
    Option("cert", "--cert", "NETEM_CERT", existing_file, None,
           "with --tls: PEM certificate chain to serve (default: a CA and a certificate generated at start)",
           "FILE"),
    Option("key", "--key", "NETEM_KEY", existing_file, None, "with --cert: its PEM private key", "FILE"),
    Option("ca_out", "--ca-out", "NETEM_CA_OUT", out_path, None,
           "with a generated certificate: where to write the CA certificate (PEM) clients should trust "
           "(default: a new temporary folder; the path is printed as ca=)", "FILE"),
    Option("tls_name", "--tls-name", "NETEM_TLS_NAME", str, None,
           "an extra DNS name in the generated certificate (besides localhost and 127.0.0.1), e.g. "
           "cams.ap-southeast-1.aliyuncs.com", "NAME"),
    Option("handshake_ms", "--handshake-ms", "NETEM_HANDSHAKE_MS", non_negative_float, 60.0,
           "delay before a new connection's TLS handshake starts (without --tls: before its first byte is relayed)",
           "MS"),
    Option("latency_ms", "--latency-ms", "NETEM_LATENCY_MS", non_negative_float, 40.0,
           "one-way latency added to every chunk, each direction", "MS"),
    Option("jitter_ms", "--jitter-ms", "NETEM_JITTER_MS", non_negative_float, 10.0,
           "uniform latency jitter, +/- ms (never reorders bytes of one connection)", "MS"),
    Option("up_latency_ms", "--up-latency-ms", "NETEM_UP_LATENCY_MS", optional_float, None,
           "client-to-target latency (default: --latency-ms)", "MS"),
    Option("up_jitter_ms", "--up-jitter-ms", "NETEM_UP_JITTER_MS", optional_float, None,
           "client-to-target jitter (default: --jitter-ms)", "MS"),
    Option("down_latency_ms", "--down-latency-ms", "NETEM_DOWN_LATENCY_MS", optional_float, None,
           "target-to-client latency (default: --latency-ms)", "MS"),
    Option("down_jitter_ms", "--down-jitter-ms", "NETEM_DOWN_JITTER_MS", optional_float, None,
           "target-to-client jitter (default: --jitter-ms)", "MS"),
    Option("idle_close_s", "--idle-close-s", "NETEM_IDLE_CLOSE_S", idle_seconds, 5.0,
           "close a connection (both sides, cleanly) when no byte moved either way for this long; 0: never", "S"),
    Option("admin_host", "--admin-host", "NETEM_ADMIN_HOST", str, "127.0.0.1",
           "address of the operator endpoints (/__net/..., plain HTTP, unauthenticated)", "ADDR"),
    Option("admin_port", "--admin-port", "NETEM_ADMIN_PORT", parse_port, 8083,
           "port of the operator endpoints; 0 picks a free one and prints it as url=", "PORT"),
    Option("seed", "--seed", "NETEM_SEED", optional_int, None, "random seed for jitter (per connection, in accept "
           "order)", "N"),
    *LOG_OPTIONS,
)
