"""Settings of ``cams-proxy simulate``: `SimulatorSettings`, its option table, and the demo key pair.

The simulator is a product of its own: it is declared with the option machinery (`proxy.options`) only and
knows nothing of the gateway's settings. The demo pair lives here because it is what the simulator accepts
by default; ``make run``, the compose and Kubernetes demos and the tests give the gateway the same pair.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

from proxy.actions import ACTIONS
from proxy.options import (
    LOG_OPTIONS,
    Option,
    action_caps,
    existing_file,
    merge_mappings,
    non_negative_float,
    optional_int,
    parse_port,
    probability,
    resolve,
)
from proxy.secret import Secret
from proxy.signing import Credentials

#: The documented demo pair shared by `make run`'s simulator and gateway. Never a real key.
DEMO_ACCESS_KEY_ID: Final = "LTAI5tCamsProxyDemoKey01"
DEMO_ACCESS_KEY_SECRET: Final = "CamsProxyDemoSecretNotForProduction01"


def access_key(raw: str) -> Credentials:
    """``ID:SECRET`` or ``ID:SECRET:STS_TOKEN``."""
    parts = raw.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError("must be ID:SECRET or ID:SECRET:SECURITY_TOKEN")
    token = Secret(parts[2]) if len(parts) == 3 and parts[2] else None
    return Credentials(parts[0], Secret(parts[1]), token)


def access_keys(raw: str) -> tuple[Credentials, ...]:
    """Comma-separated `access_key` values (for the environment variable)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise ValueError("must name at least one ID:SECRET pair")
    return tuple(access_key(item) for item in items)


def _flatten_keys(parsed: list[Any]) -> tuple[Credentials, ...]:
    flat: list[Credentials] = []
    for item in parsed:
        flat.extend(item if isinstance(item, tuple) else (item,))
    return tuple(flat)


@dataclass(frozen=True)
class SimulatorSettings:
    """Settings of ``cams-proxy simulate``."""

    host: str = "127.0.0.1"
    port: int = 8081
    access_keys: tuple[Credentials, ...] = (Credentials(DEMO_ACCESS_KEY_ID, Secret(DEMO_ACCESS_KEY_SECRET)),)
    latency_ms: float = 80.0
    jitter_ms: float = 20.0
    fixtures: Path | None = None
    caps: Mapping[str, int] | None = None
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_ms: float = 30_000.0
    throttle_rate: float = 0.0
    max_skew_s: float = 900.0
    seed: int | None = None
    log_level: str = "info"
    log_format: str = "console"

    @classmethod
    def from_sources(cls, namespace: argparse.Namespace, environ: Mapping[str, str]) -> Self:
        values = resolve(SIMULATOR_OPTIONS, namespace, environ)
        return cls(**values)

    def cap(self, action: str) -> int:
        return (self.caps or {}).get(action, ACTIONS[action].cap_per_second)


SIMULATOR_OPTIONS: Final = (
    Option("host", "--host", "SIM_HOST", str, "127.0.0.1", "address to listen on", "ADDR"),
    Option("port", "--port", "SIM_PORT", parse_port, 8081, "port to listen on; 0 picks a free one and prints it",
           "PORT"),
    Option("access_keys", "--access-key", "SIM_ACCESS_KEYS", access_keys,
           SimulatorSettings.access_keys, "accepted AccessKey ID:SECRET[:STS_TOKEN]; repeatable (env: comma-"
           "separated)", "ID:SECRET", secret=True, repeatable=True, combine=_flatten_keys),
    Option("latency_ms", "--latency-ms", "SIM_LATENCY_MS", non_negative_float, 80.0,
           "mean answer latency in ms", "MS"),
    Option("jitter_ms", "--jitter-ms", "SIM_JITTER_MS", non_negative_float, 20.0,
           "uniform latency jitter, +/- ms", "MS"),
    Option("fixtures", "--fixtures", "SIM_FIXTURES", existing_file, None,
           "JSON file of customer spaces, WABAs and templates (default: the built-in set)", "FILE"),
    Option("caps", "--cap", "SIM_CAPS", action_caps, None,
           "override a per-account cap, ACTION=N; repeatable (default: the documented caps, 5 and 10)",
           "ACTION=N", repeatable=True, combine=merge_mappings),
    Option("error_rate", "--error-rate", "SIM_ERROR_RATE", probability, 0.0,
           "share of accepted calls answered 503 ServiceUnavailable or 500 InternalError", "P"),
    Option("hang_rate", "--hang-rate", "SIM_HANG_RATE", probability, 0.0,
           "share of accepted calls that hang for --hang-ms, then answer 504", "P"),
    Option("hang_ms", "--hang-ms", "SIM_HANG_MS", non_negative_float, 30_000.0, "how long a hang lasts", "MS"),
    Option("throttle_rate", "--throttle-rate", "SIM_THROTTLE_RATE", probability, 0.0,
           "share of calls throttled (System.LimitControl) even under the cap", "P"),
    Option("max_skew_s", "--max-skew-s", "SIM_MAX_SKEW_S", non_negative_float, 900.0,
           "largest accepted difference between x-acs-date and the server clock, seconds", "S"),
    Option("seed", "--seed", "SIM_SEED", optional_int, None, "random seed for latency and faults", "N"),
    *LOG_OPTIONS,
)
