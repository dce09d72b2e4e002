"""Errors the gateway answers itself, in the upstream's shape (``RequestId``, ``Code``, ``Message``).

Every layer raises a `GatewayError` subclass; one middleware in `proxy.web` renders it. The tree::

    GatewayError
    ├── RequestRejected     4xx: the request is invalid or unauthenticated; nothing was queued
    │   └── DeadlineTooShort    400 InvalidParameter.RequestTimeoutTooShort: a miss whose deadline is shorter
    │                           than the fastest possible miss (queue empty); no retry headers: retrying the
    │                           same request cannot help
    ├── Overloaded          503 Throttling.Proxy: queue full, or the miss cannot be served before its
    │                       deadline; one wait drives the message ("retry in 2.4s"), Retry-After (whole
    │                       seconds, rounded up, at least 1) and x-acs-retry-after (ms): see `retry_after_ms`
    ├── DeadlineExceeded    504 Proxy.DeadlineExceeded: the deadline passed while queued or waiting
    └── UpstreamFailed      502/504: no usable upstream answer after the allowed attempts
"""

from __future__ import annotations

import math
from typing import Final

#: The grain of an announced wait (ms): the message shows it in tenths of a second, exactly.
RETRY_GRAIN_MS: Final = 100


class GatewayError(Exception):
    code: str = "InternalError"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}


class RequestRejected(GatewayError):
    code = "InvalidParameter"
    status = 400


def retry_after_ms(wait_s: float) -> int:
    """The wait a refusal announces, in ms: ``wait_s`` rounded up to the next `RETRY_GRAIN_MS`, at least one grain
    (never "retry in 0.0s"). The message shows it in seconds with one decimal, ``x-acs-retry-after`` as is and
    ``Retry-After`` rounded up to whole seconds, so the three agree exactly."""
    grains = math.ceil(round(max(0.0, wait_s) * 1000, 6) / RETRY_GRAIN_MS)  # round(): 2.3 s is 2300 ms, not 2301
    return max(1, grains) * RETRY_GRAIN_MS


def retry_headers(wait_ms: int) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up, at least 1) and ``x-acs-retry-after`` (ms) for one wait."""
    return {"Retry-After": str(max(1, math.ceil(wait_ms / 1000))), "x-acs-retry-after": str(wait_ms)}


class DeadlineTooShort(RequestRejected):
    """A miss whose deadline is shorter than the fastest possible miss: even with an empty queue it would be refused
    (admission keeps the upstream's usual answer time free before the deadline). Raised before the flight, the
    lease and the queue, so it costs no quota; no ``Retry-After``: the same request can never succeed as a miss.

    ``asked`` names the deadline ("X-Request-Timeout-Ms 50", or the gateway's ``--deadline-s``); ``fastest_s`` is
    the answer time admission keeps free, ``advised_s`` that plus one slot of the action's spacing."""

    code = "InvalidParameter.RequestTimeoutTooShort"
    status = 400

    def __init__(self, action: str, asked: str, fastest_s: float, advised_s: float) -> None:
        self.fastest_ms = math.ceil(round(fastest_s * 1000, 6))
        self.advised_ms = math.ceil(round(advised_s * 1000, 6) / 10) * 10
        super().__init__(f"{asked} is shorter than the fastest possible miss of {action} (about {self.fastest_ms} ms, "
                         f"the upstream's recent answer time), even with nothing queued: it was not queued or sent. "
                         f"Raise it to at least {self.advised_ms} ms (the answer time "
                         f"and one slot of the action's spacing).")
        self.action = action


class Overloaded(GatewayError):
    """503 Throttling.Proxy with one wait, rendered once: ``reason`` (a sentence without a retry time) gets
    "; retry in 2.4s." and the headers say the same (`retry_after_ms`). ``rendered``: ``reason`` already ends with
    that sentence (an `Overloaded` relayed from another replica, `proxy.replica.flight.failure_from_notice`)."""

    code = "Throttling.Proxy"
    status = 503

    def __init__(self, reason: str, retry_after_s: float, *, rendered: bool = False) -> None:
        wait_ms = retry_after_ms(retry_after_s)
        message = reason if rendered else f"{reason.rstrip(' .;')}; retry in {wait_ms / 1000:.1f}s."
        super().__init__(message, headers=retry_headers(wait_ms))
        #: The announced wait (rounded as the headers are): what a notice relays to other replicas.
        self.retry_after_s = wait_ms / 1000


class DeadlineExceeded(GatewayError):
    code = "Proxy.DeadlineExceeded"
    status = 504


class UpstreamFailed(GatewayError):
    code = "Proxy.UpstreamUnavailable"
    status = 502
