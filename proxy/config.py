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
from urllib.parse import urlsplit

from proxy.actions import ACTIONS
from proxy.freshness import Lifetimes
from proxy.secret import Secret, redact
from proxy.signing import Credentials

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


def _flatten_keys(parsed: list[Any]) -> tuple[Credentials, ...]:
    flat: list[Credentials] = []
    for item in parsed:
        flat.extend(item if isinstance(item, tuple) else (item,))
    return tuple(flat)


def _merge_caps(parsed: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    merged: dict[str, Any] = {}
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


# --------------------------------------------------------------------------------------- gateway

DEFAULT_UPSTREAM: Final = "https://cams.ap-southeast-1.aliyuncs.com"


@dataclass(frozen=True)
class GatewaySettings:
    """Settings of ``cams-proxy serve``. The AccessKey comes from the environment only."""

    host: str = "127.0.0.1"
    port: int = 8080
    ops_port: int | None = None
    redis_url: str | None = None
    redis_cluster: bool = False
    upstream: str = DEFAULT_UPSTREAM
    access_key_id: str | None = None
    access_key_secret: Secret | None = None
    security_token: Secret | None = None
    account: str | None = None
    caps: Mapping[str, int] | None = None
    allow_cap_above_documented: bool = False
    ttls: Mapping[str, float] | None = None
    negative_ttl_s: float = 30.0
    stale_while_revalidate_s: float = 60.0
    max_stale_s: float = 600.0
    refresh_ahead_fraction: float = 0.1
    queue_bounds: Mapping[str, int] | None = None
    spacing_margin_ms: float = 10.0
    deadline_s: float = 10.0
    upstream_timeout_s: float = 8.0
    upstream_connect_timeout_s: float = 3.0
    upstream_keepalive_s: float = 4.0
    upstream_ca_file: Path | None = None
    upstream_attempts: int = 3
    memory_max_entries: int = 10_000
    memory_max_bytes: int = 64 * 1024 * 1024
    tenants_file: Path | None = None
    l1_max_ttl_s: float = 10.0
    lease_ttl_s: float = 2.0
    budget_lease_s: float = 30.0
    redis_timeout_s: float = 0.25
    workers: int = 1
    shutdown_grace_s: float = 20.0
    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_connections: int = 1024
    upstream_max_answer_bytes: int = 1024 * 1024
    budget_mode: str = "enforce"
    admin_token: Secret | None = None
    callback_token: Secret | None = None
    log_level: str = "info"
    log_format: str = "auto"
    loop: str = "auto"

    @classmethod
    def from_sources(cls, namespace: argparse.Namespace, environ: Mapping[str, str]) -> Self:
        settings = cls(**resolve(GATEWAY_OPTIONS, namespace, environ))
        problems = settings.problems()
        if problems:
            raise ConfigError(problems)
        return settings

    def problems(self) -> list[str]:
        """Checks across settings, after each value parsed on its own."""
        found: list[str] = []
        if bool(self.access_key_id) != bool(self.access_key_secret):
            found.append("ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET must be set together (or "
                         "neither: then the Alibaba Cloud default credential chain is used)")
        for name, cap in (self.caps or {}).items():
            documented = ACTIONS[name].cap_per_second
            if cap > documented and not self.allow_cap_above_documented:
                found.append(f"invalid setting --cap={name}={cap}: above the documented upstream cap of "
                             f"{documented}/s; add --allow-cap-above-documented only if your account's cap was raised")
        if self.deadline_s > 0 and self.upstream_timeout_s > self.deadline_s:
            found.append(f"invalid setting CAMS_TIMEOUT_S={self.upstream_timeout_s}: longer than the request "
                         f"deadline PROXY_DEADLINE_S={self.deadline_s}")
        return found

    def cap(self, action: str) -> int:
        return (self.caps or {}).get(action, ACTIONS[action].cap_per_second)

    def local_cap(self, action: str) -> int:
        """This process's spacing rate: the cap, in every case. With ``--workers N`` and no Redis the
        workers share one host budget kept by the supervisor (`proxy.admission.host_budget`), which spaces
        the slots of all of them at the cap's interval; with Redis the shared budget does the same."""
        return self.cap(action)

    def ttl(self, action: str) -> float:
        return float((self.ttls or {}).get(action, ACTIONS[action].ttl_seconds))

    def lifetimes(self) -> Lifetimes:
        return Lifetimes(self.negative_ttl_s, self.stale_while_revalidate_s, self.max_stale_s)

    def queue_bound(self, action: str) -> int:
        return (self.queue_bounds or {}).get(action, DEFAULT_QUEUE_BOUND)

    def static_credentials(self) -> Credentials | None:
        """The AccessKey from the environment, or None: then the default credential chain is used."""
        if not self.access_key_id or self.access_key_secret is None:
            return None
        return Credentials(self.access_key_id, self.access_key_secret, self.security_token)

    def json_logs(self, is_tty: bool) -> bool:
        return self.log_format == "json" or (self.log_format == "auto" and not is_tty)


DEFAULT_QUEUE_BOUND: Final = 200


def _secret(raw: str) -> Secret | None:
    return Secret(raw) if raw else None


GATEWAY_OPTIONS: Final = (
    Option("host", "--host", "PROXY_HOST", str, "127.0.0.1", "address to listen on", "ADDR"),
    Option("port", "--port", "PROXY_PORT", parse_port, 8080, "port to listen on; 0 picks a free one", "PORT"),
    Option("ops_port", "--ops-port", "PROXY_OPS_PORT", parse_port, None,
           "a port of its own for /metrics, /admin and /readyz details (unset: all on --port)", "PORT"),
    Option("redis_url", "--redis-url", "REDIS_URL", redis_url, None,
           "Redis for the shared cache (unset: in-process memory cache)", "URL"),
    Option("redis_cluster", "--redis-cluster", "REDIS_CLUSTER", boolean, False,
           "REDIS_URL names a node of a Redis Cluster (redis-py's cluster client)", switch=True),
    Option("upstream", "--upstream", "CAMS_ENDPOINT", http_url, DEFAULT_UPSTREAM, "the CAMS endpoint, a full URL",
           "URL"),
    Option("access_key_id", None, "ALIBABA_CLOUD_ACCESS_KEY_ID", str, None,
           "the AccessKey id upstream calls use (unset: the default credential chain: credentials file, ECS RAM "
           "role, OIDC, ...)"),
    Option("access_key_secret", None, "ALIBABA_CLOUD_ACCESS_KEY_SECRET", _secret, None,
           "its secret", secret=True),
    Option("security_token", None, "ALIBABA_CLOUD_SECURITY_TOKEN", _secret, None,
           "STS security token, when the key is an STS one", secret=True),
    Option("account", "--account", "PROXY_ACCOUNT", str, None,
           "name of the Alibaba Cloud account the key belongs to: the shared budget and the cache are per account "
           "(default: the AccessKey id at start-up; set it when keys rotate, so old and new keys share one budget)",
           "NAME"),
    Option("caps", "--cap", "PROXY_CAPS", action_caps, None,
           "upstream calls/s for an action, ACTION=N; repeatable (default: the documented caps, 5 and 10)",
           "ACTION=N", repeatable=True, combine=_merge_caps),
    Option("allow_cap_above_documented", "--allow-cap-above-documented", "PROXY_ALLOW_CAP_ABOVE_DOCUMENTED",
           boolean, False, "allow --cap above the documented caps", switch=True),
    Option("ttls", "--ttl", "PROXY_TTLS", per_action(positive_float, "SECONDS"), None,
           "cache TTL for an action, ACTION=SECONDS; repeatable (default 300 templates, 600 WABA)",
           "ACTION=S", repeatable=True, combine=_merge_caps),
    Option("negative_ttl_s", "--negative-ttl-s", "PROXY_NEGATIVE_TTL_S", positive_float, 30.0,
           "how long not-found and denied answers are cached (Unknown.ResourceOwnerId, Template.NotFound, "
           "Ram.PermissionDeny, Product.Unsubscript)", "S"),
    Option("stale_while_revalidate_s", "--stale-while-revalidate-s", "PROXY_STALE_WHILE_REVALIDATE_S",
           non_negative_float, 60.0, "past its TTL an entry is served at once, marked stale, while ONE "
           "background refresh runs (0: off)", "S"),
    Option("max_stale_s", "--max-stale-s", "PROXY_MAX_STALE_S", non_negative_float, 600.0,
           "past its TTL an entry is still served when the upstream fails (stale-if-error); then dropped", "S"),
    Option("refresh_ahead_fraction", "--refresh-ahead", "PROXY_REFRESH_AHEAD", fraction, 0.1,
           "refresh keys hit during their TTL when this share of the TTL is left (1-30 s), with spare "
           "capacity only (0: off)", "FRACTION"),
    Option("queue_bounds", "--queue-bound", "PROXY_QUEUE_BOUNDS", per_action(positive_int), None,
           f"most misses one tenant may have waiting for an upstream slot, ACTION=N; repeatable (default "
           f"{DEFAULT_QUEUE_BOUND})",
           "ACTION=N", repeatable=True, combine=_merge_caps),
    Option("spacing_margin_ms", "--spacing-margin-ms", "PROXY_SPACING_MARGIN_MS", non_negative_float, 10.0,
           "floor of the adaptive margin delta: upstream grants are (1 + delta)/cap seconds apart, delta measured "
           "from the jitter of answer times (the 250 ms ceiling until a process has 4 answers)", "MS"),
    Option("deadline_s", "--deadline-s", "PROXY_DEADLINE_S", positive_float, 10.0,
           "longest a request may take, queue and upstream included (clients may ask for less)", "S"),
    Option("upstream_timeout_s", "--upstream-timeout-s", "CAMS_TIMEOUT_S", positive_float, 8.0,
           "timeout of one upstream call", "S"),
    Option("upstream_connect_timeout_s", "--upstream-connect-timeout-s", "CAMS_CONNECT_TIMEOUT_S", positive_float,
           3.0, "connect timeout of one upstream call", "S"),
    Option("upstream_keepalive_s", "--upstream-keepalive-s", "CAMS_KEEPALIVE_S", positive_float, 4.0,
           "longest an idle upstream connection is kept for reuse; keep it below the upstream's own idle close",
           "S"),
    Option("upstream_ca_file", "--upstream-ca-file", "CAMS_CA_FILE", existing_file, None,
           "PEM file of the CAs trusted for an https upstream (unset: the system store, which honours "
           "SSL_CERT_FILE)", "FILE"),
    Option("upstream_attempts", "--upstream-attempts", "PROXY_UPSTREAM_ATTEMPTS", positive_int, 3,
           "upstream attempts per miss for faults and throttling, each through the queue", "N"),
    Option("memory_max_entries", "--memory-max-entries", "PROXY_MEMORY_MAX_ENTRIES", positive_int, 10_000,
           "in-process cache bound, entries", "N"),
    Option("memory_max_bytes", "--memory-max-bytes", "PROXY_MEMORY_MAX_BYTES", positive_int, 64 * 1024 * 1024,
           "bytes for every in-process cache: answers, hit headers, call memo, decoded entries, tags", "N"),
    Option("tenants_file", "--tenants", "PROXY_TENANTS_FILE", existing_file, None,
           "JSON file of tenants and their credentials (see the README)", "FILE"),
    Option("l1_max_ttl_s", "--l1-max-ttl-s", "PROXY_L1_MAX_TTL_S", non_negative_float, 10.0,
           "with Redis: longest an entry stays in the in-process L1 (0: no L1, every hit reads Redis)", "S"),
    Option("lease_ttl_s", "--lease-ttl-s", "PROXY_LEASE_TTL_S", positive_float, 2.0,
           "with Redis: fill lease lifetime (renewed while filling; a dead holder is replaced after this)", "S"),
    Option("budget_lease_s", "--budget-lease-s", "PROXY_BUDGET_LEASE_S", positive_float, 30.0,
           "with Redis: how long a replica cut from Redis may spend its safe share of each cap (and how long a "
           "crashed replica's share stays held back from the others); the same on every replica", "S"),
    Option("redis_timeout_s", "--redis-timeout-s", "PROXY_REDIS_TIMEOUT_S", positive_float, 0.25,
           "with Redis: connect and reply timeout of one Redis command", "S"),
    Option("workers", "--workers", "PROXY_WORKERS", positive_int, 1,
           "processes sharing the port (SO_REUSEPORT); without Redis they share one budget kept by the "
           "supervisor (never above the cap, whatever N)", "N"),
    Option("budget_mode", "--budget-mode", "PROXY_BUDGET_MODE", choice(("enforce", "shadow")), "enforce",
           "shadow: never wait or refuse for the budget, only count what enforcing would do (for trying new caps; "
           "the upstream may throttle)", "MODE"),
    Option("shutdown_grace_s", "--shutdown-grace-s", "PROXY_SHUTDOWN_GRACE_S", positive_float, 20.0,
           "on SIGTERM: queued misses are answered 503 + Retry-After at once; calls in flight get this long", "S"),
    Option("header_timeout_s", "--header-timeout-s", "PROXY_HEADER_TIMEOUT_S", positive_float, 5.0,
           "longest from a request's first byte to the end of its headers; then 408 and the connection closes", "S"),
    Option("body_timeout_s", "--body-timeout-s", "PROXY_BODY_TIMEOUT_S", positive_float, 10.0,
           "longest to read a request's body (a Content-Length over 64 KiB is refused with 413 before reading)",
           "S"),
    Option("idle_timeout_s", "--idle-timeout-s", "PROXY_IDLE_TIMEOUT_S", positive_float, 30.0,
           "a keep-alive connection with no request for this long is closed", "S"),
    Option("max_connections", "--max-connections", "PROXY_MAX_CONNECTIONS", positive_int, 1024,
           "client connections open at once per process; one more is answered 503 and closed", "N"),
    Option("upstream_max_answer_bytes", "--upstream-max-answer-bytes", "CAMS_MAX_ANSWER_BYTES", positive_int,
           1024 * 1024, "largest upstream answer read; a longer one is an invalid answer (502, never cached)",
           "BYTES"),
    Option("admin_token", None, "PROXY_ADMIN_TOKEN", _secret, None,
           "bearer token of the admin API (/admin/...; unset: the admin API is off); never a tenant's token",
           secret=True),
    Option("callback_token", None, "PROXY_CALLBACK_TOKEN", _secret, None,
           "token CAMS audit callbacks carry in X-Callback-Token (or ?token=; unset: the callback endpoint is off)",
           secret=True),
    Option("log_level", "--log-level", "LOG_LEVEL", choice(LOG_LEVELS), "info", "log level", "LEVEL"),
    Option("log_format", "--log-format", "LOG_FORMAT", choice((*LOG_FORMATS, "auto")), "auto",
           "console, json, or auto (json unless stderr is a terminal)", "FORMAT"),
    Option("loop", "--loop", "PROXY_LOOP", choice(("auto", "uvloop", "asyncio")), "auto",
           "event loop: uvloop, asyncio, or auto (uvloop where it is installed, a dependency on Linux)", "LOOP"),
)


def options_table(options: Sequence[Option]) -> str:
    """The Markdown table of ``options`` that the README carries (a test keeps it in step)."""
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for option in options:
        flag = f"`{option.flag}`" if option.flag else "—"
        rows.append(f"| {flag} | `{option.env}` | {option.describe_default()} | {option.help} |")
    return "\n".join(rows) + "\n"


def configuration_reference() -> str:
    """``docs/configuration.md``: every setting of both commands, generated from the option tables (a test
    fails when the file drifts; regenerate with ``python scripts/config-tables.py``)."""
    from proxy.netem.settings import NETEM_OPTIONS  # here: proxy.netem.settings imports this module

    return (
        "# Configuration reference\n\n"
        "Generated from the option tables in `proxy/config.py` by `scripts/config-tables.py`; a test fails if this\n"
        "file drifts from them. Each setting is read from its flag, else its environment variable, else the\n"
        "default. Secrets (the AccessKey secret, STS token, admin and callback tokens) are environment-only and\n"
        "shown as `***` wherever settings are printed. Bad values stop the command with one line each (exit 2).\n\n"
        "## `cams-proxy serve` (the gateway)\n\n"
        f"{options_table(GATEWAY_OPTIONS)}\n"
        "## `cams-proxy simulate` (the CAMS simulator)\n\n"
        f"{options_table(SIMULATOR_OPTIONS)}\n"
        "## `cams-proxy netem` (the network stand-in, `docs/netem.md`)\n\n"
        f"{options_table(NETEM_OPTIONS)}\n"
        "## Operator commands\n\n"
        "`cams-proxy warm --file CSV [--gateway URL] [--concurrency N]`, `cams-proxy purge [--gateway URL] "
        "[--key K] [--space ID] [--template CODE] [--waba ID]`, `cams-proxy status [--gateway URL] [--interval S] "
        "[--once]`. `purge` and `status` read `PROXY_ADMIN_TOKEN` from the environment. See `--help` of each.\n"
    )
