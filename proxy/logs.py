"""Structured logging (structlog), configured once by the CLI, with secrets redacted on the way out.

Two guards keep keys out of the logs: `Secret` values print as ``***`` by type, and the
`redact_sensitive` processor masks any field whose *name* says it holds a credential
(``secret``, ``token``, ``signature``, ``authorization``, ``password``), whatever its type.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from proxy.access_log import SENSITIVE_MARKERS, SINK
from proxy.secret import REDACTED


def redact_sensitive(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(marker in key.lower() for marker in SENSITIVE_MARKERS):
            event[key] = REDACTED
    return event


def _json_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class SinkLogger:
    """structlog's last step: each rendered line goes to the process's `LineSink` (stderr), the one the access
    log writes its batches through, so the two never interleave within a line."""

    def msg(self, message: str) -> None:
        SINK.write(message + "\n")

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg


def _sink_logger(*_args: Any) -> SinkLogger:
    return SinkLogger()


def configure(level: str = "info", fmt: str = "console") -> None:
    """Route structlog to stderr (through `SINK`) as console lines or JSON objects, at ``level``."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_sensitive,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=_sink_logger,
        cache_logger_on_first_use=True,
    )
    SINK.use(sys.stderr)


def json_output(log_format: str, is_tty: bool) -> bool:
    """Whether logs are JSON objects: ``json``, or ``auto`` when stderr is no terminal (else console lines)."""
    return log_format == "json" or (log_format == "auto" and not is_tty)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
