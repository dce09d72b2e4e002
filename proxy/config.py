"""Settings: one frozen, typed object per command, built from flags and environment variables.

Each command declares its settings once, as a table of `Option`s (flag, environment variable, parser,
default, help). The same table builds the ``--help`` text, reads the sources (a flag beats the
environment, which beats the default) and will generate the configuration reference. Nothing here
reads ``os.environ`` at import time: the environment is a parameter, so tests pass a dict.

Every invalid value is reported, all together, as one line naming the setting and the value
(`ConfigError`); the CLI prints them and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

from proxy.actions import ACTIONS
from proxy.secret import Secret
from proxy.upstream.signing import Credentials

#: The documented demo pair shared by `make run`'s simulator and gateway. Never a real key.
DEMO_ACCESS_KEY_ID: Final = "LTAI5tCamsProxyDemoKey01"
DEMO_ACCESS_KEY_SECRET: Final = "CamsProxyDemoSecretNotForProduction01"

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("console", "json")


class ConfigError(Exception):
    """One or more invalid settings; ``problems`` holds one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


# ---------------------------------------------------------------------------------------- parsers


def parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0..65535")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def probability(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a probability between 0 and 1")
    return value


def optional_int(raw: str) -> int | None:
    return None if raw == "" else int(raw)


def choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        lowered = raw.lower()
        if lowered not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return lowered

    return parse


def existing_file(raw: str) -> Path | None:
    if raw == "":
        return None
    path = Path(raw)
    if not path.is_file():
        raise ValueError("no such file")
    return path


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


def action_caps(raw: str) -> Mapping[str, int]:
    """``Action=N`` pairs, comma-separated."""
    caps: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, eq, number = item.partition("=")
        if not eq or name not in ACTIONS:
            raise ValueError(f"must be ACTION=N with ACTION one of {', '.join(ACTIONS)}")
        value = int(number)
        if value < 1:
            raise ValueError("caps must be >= 1")
        caps[name] = value
    return caps


# ---------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One setting: where it comes from and how it is parsed."""

    field: str
    flag: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    secret: bool = False
    repeatable: bool = False
    #: For repeatable flags: how to join several parsed values.
    combine: Callable[[list[Any]], Any] | None = None

    def describe_default(self) -> str:
        if self.secret:
            return "(demo pair)"
        if isinstance(self.default, tuple):
            return ", ".join(map(str, self.default)) or "(none)"
        return "(unset)" if self.default is None else str(self.default)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for option in options:
        parser.add_argument(
            option.flag,
            dest=option.field,
            default=None,
            action="append" if option.repeatable else "store",
            metavar=option.metavar,
            help=f"{option.help} [env {option.env}; default {option.describe_default()}]",
        )


def resolve(
    options: Sequence[Option], namespace: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Parse every option from flags, then environment, then default; raise `ConfigError` listing all."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for option in options:
        given = getattr(namespace, option.field, None)
        if given is not None:
            source, raws = option.flag, (given if isinstance(given, list) else [given])
        elif option.env in environ:
            source, raws = option.env, [environ[option.env]]
        else:
            values[option.field] = option.default
            continue
        try:
            parsed = [option.parse(raw) for raw in raws]
        except (ValueError, TypeError) as exc:
            shown = "***" if option.secret else repr(raws[-1] if len(raws) == 1 else raws)
            reason = str(exc) if option.parse is not int else "must be an integer"
            if reason.startswith("invalid literal") or reason.startswith("could not convert"):
                reason = "must be a number"
            problems.append(f"invalid setting {source}={shown}: {reason}")
            continue
        if option.repeatable and option.combine is not None:
            values[option.field] = option.combine(parsed)
        else:
            values[option.field] = parsed[-1]
    if problems:
        raise ConfigError(problems)
    return values


def _flatten_keys(parsed: list[Any]) -> tuple[Credentials, ...]:
    flat: list[Credentials] = []
    for item in parsed:
        flat.extend(item if isinstance(item, tuple) else (item,))
    return tuple(flat)


def _merge_caps(parsed: list[Mapping[str, int]]) -> Mapping[str, int]:
    merged: dict[str, int] = {}
    for item in parsed:
        merged.update(item)
    return merged


LOG_OPTIONS: Final = (
    Option("log_level", "--log-level", "LOG_LEVEL", choice(LOG_LEVELS), "info", "log level", "LEVEL"),
    Option("log_format", "--log-format", "LOG_FORMAT", choice(LOG_FORMATS), "console",
           "log format: console (human) or json (one object a line)", "FORMAT"),
)


# ------------------------------------------------------------------------------------- simulator


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
           "ACTION=N", repeatable=True, combine=_merge_caps),
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


def default_environ() -> Mapping[str, str]:
    """The process environment, read once by the CLI entry point and passed down."""
    return dict(os.environ)
