"""Settings of ``cams-proxy serve``: `GatewaySettings` and its option table, `GATEWAY_OPTIONS`.

Declared with the option machinery (`proxy.options`). The values are parsed here, one by one and then across
settings (`GatewaySettings.problems`); the domain rules they feed are the modules' own, as plain functions:
the caps and queue bounds in `proxy.admission.limits`, the TTLs in `proxy.freshness`, the log format in
`proxy.logs`. The AccessKey comes from the environment only (never a flag), and is shown as ``***``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from proxy.admission.limits import (
    DEFAULT_QUEUE_BOUND,
    budget_cap,
    caps_above_documented,
    tenant_queue_bound,
    timeout_exceeds_deadline,
)
from proxy.freshness import Lifetimes, action_ttl
from proxy.logs import json_output
from proxy.options import (
    LOG_FORMATS,
    LOG_LEVELS,
    ConfigError,
    Option,
    action_caps,
    boolean,
    choice,
    existing_file,
    fraction,
    http_url,
    merge_mappings,
    non_negative_float,
    parse_port,
    per_action,
    positive_float,
    positive_int,
    redis_url,
    resolve,
)
from proxy.secret import Secret
from proxy.signing import Credentials

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
        if not self.allow_cap_above_documented:
            for name, cap, documented in caps_above_documented(self.caps):
                found.append(f"invalid setting --cap={name}={cap}: above the documented upstream cap of "
                             f"{documented}/s; add --allow-cap-above-documented only if your account's cap was "
                             "raised")
        if timeout_exceeds_deadline(self.upstream_timeout_s, self.deadline_s):
            found.append(f"invalid setting CAMS_TIMEOUT_S={self.upstream_timeout_s}: longer than the request "
                         f"deadline PROXY_DEADLINE_S={self.deadline_s}")
        return found

    def cap(self, action: str) -> int:
        return budget_cap(action, self.caps)

    def local_cap(self, action: str) -> int:
        """This process's spacing rate: the cap, in every case (no per-worker split, `proxy.admission.limits`).
        With ``--workers N`` and no Redis the workers share one host budget kept by the supervisor
        (`proxy.admission.host_budget`), which spaces the slots of all of them at the cap's interval; with Redis
        the shared budget does the same."""
        return self.cap(action)

    def ttl(self, action: str) -> float:
        return action_ttl(action, self.ttls)

    def lifetimes(self) -> Lifetimes:
        return Lifetimes(self.negative_ttl_s, self.stale_while_revalidate_s, self.max_stale_s)

    def queue_bound(self, action: str) -> int:
        return tenant_queue_bound(action, self.queue_bounds)

    def static_credentials(self) -> Credentials | None:
        """The AccessKey from the environment, or None: then the default credential chain is used."""
        if not self.access_key_id or self.access_key_secret is None:
            return None
        return Credentials(self.access_key_id, self.access_key_secret, self.security_token)

    def json_logs(self, is_tty: bool) -> bool:
        return json_output(self.log_format, is_tty)


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
           "ACTION=N", repeatable=True, combine=merge_mappings),
    Option("allow_cap_above_documented", "--allow-cap-above-documented", "PROXY_ALLOW_CAP_ABOVE_DOCUMENTED",
           boolean, False, "allow --cap above the documented caps", switch=True),
    Option("ttls", "--ttl", "PROXY_TTLS", per_action(positive_float, "SECONDS"), None,
           "cache TTL for an action, ACTION=SECONDS; repeatable (default 300 templates, 600 WABA)",
           "ACTION=S", repeatable=True, combine=merge_mappings),
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
           "ACTION=N", repeatable=True, combine=merge_mappings),
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
