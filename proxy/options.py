"""The option machinery every command's settings are declared with: `Option` tables, parsers, `resolve`.

Each command declares its settings once, as a table of `Option`s (flag, environment variable, parser,
default, help). The same table builds the ``--help`` text (`add_options`), reads the sources (`resolve`: a
flag beats the environment, which beats the default) and generates the configuration reference
(`proxy.reference`). Nothing here reads ``os.environ`` at import time: the environment is a parameter, so
tests pass a dict (the CLI reads it once, `default_environ`).

Every invalid value is reported, all together, as one line naming the setting and the value
(`ConfigError`); the CLI prints them and exits with status 2.

This module owns the machinery and the generic parsers, plus the two log settings the simulator and the
network stand-in share (`LOG_OPTIONS`). It knows no command: the gateway's table is `proxy.settings`, the
simulator's `proxy.simulator.settings`, the network stand-in's `proxy.netem.settings`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from proxy.actions import ACTIONS
from proxy.secret import redact

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


def fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value < 0.5:
        raise ValueError("must be a share of the TTL, 0 (off) up to 0.5")
    return value


def positive_float(raw: str) -> float:
    value = non_negative_float(raw)
    if value <= 0:
        raise ValueError("must be a number > 0")
    return value


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def http_url(raw: str) -> str:
    from yarl import URL

    url = URL(raw)
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def redis_url(raw: str) -> str | None:
    if raw == "":
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    if not raw.startswith("unix://"):
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if not parts.hostname:
            raise ValueError("names no host")
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
    return raw


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


def per_action(parse: Callable[[str], Any], unit: str = "N") -> Callable[[str], Mapping[str, Any]]:
    """A parser of comma-separated ``ACTION=VALUE`` pairs."""

    def parse_pairs(raw: str) -> Mapping[str, Any]:
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            name, eq, value = item.partition("=")
            if not eq or name not in ACTIONS:
                raise ValueError(f"must be ACTION={unit} with ACTION one of {', '.join(ACTIONS)}")
            values[name] = parse(value)
        return values

    return parse_pairs


action_caps = per_action(positive_int)


def merge_mappings(parsed: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """``combine`` of a repeatable per-action flag: the pairs of every occurrence, a later one winning."""
    merged: dict[str, Any] = {}
    for item in parsed:
        merged.update(item)
    return merged


# ---------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One setting: where it comes from and how it is parsed."""

    field: str
    flag: str | None  # None: environment only (secrets never go on a command line)
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    secret: bool = False
    repeatable: bool = False
    #: For repeatable flags: how to join several parsed values.
    combine: Callable[[list[Any]], Any] | None = None
    #: A switch: the flag takes no value and means "true".
    switch: bool = False

    def describe_default(self) -> str:
        if self.secret:
            return "(unset)" if self.default is None else "(demo pair)"
        if isinstance(self.default, tuple):
            return ", ".join(map(str, self.default)) or "(none)"
        return "(unset)" if self.default is None else str(self.default)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for option in options:
        if option.flag is None:
            continue
        if option.switch:
            parser.add_argument(option.flag, dest=option.field, default=None, action="store_const", const="true",
                                help=f"{option.help} [env {option.env}=true]")
            continue
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
            shown = "***" if option.secret else redact(repr(raws[-1] if len(raws) == 1 else raws))
            reason = str(exc) if option.parse is not int else "must be an integer"
            if reason.startswith("invalid literal") or reason.startswith("could not convert"):
                reason = "must be a number"
            problems.append(f"invalid setting {source}={shown}: {redact(reason)}")
            continue
        if option.repeatable and option.combine is not None:
            values[option.field] = option.combine(parsed)
        else:
            values[option.field] = parsed[-1]
    if problems:
        raise ConfigError(problems)
    return values


def default_environ() -> Mapping[str, str]:
    """The process environment, read once by the CLI entry point and passed down."""
    return dict(os.environ)


#: The log settings of the simulator and the network stand-in (the gateway's own add ``auto``).
LOG_OPTIONS: Final = (
    Option("log_level", "--log-level", "LOG_LEVEL", choice(LOG_LEVELS), "info", "log level", "LEVEL"),
    Option("log_format", "--log-format", "LOG_FORMAT", choice(LOG_FORMATS), "console",
           "log format: console (human) or json (one object a line)", "FORMAT"),
)
