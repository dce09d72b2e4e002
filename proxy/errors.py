"""Errors the gateway answers itself, in the upstream's shape (``RequestId``, ``Code``, ``Message``).

Every layer raises a `GatewayError` subclass; one middleware in `proxy.web` renders it. The tree::

    GatewayError
    ├── RequestRejected     4xx: the request is invalid or unauthenticated; nothing was queued
    ├── Overloaded          503 Throttling.Proxy: queue full, or the miss cannot be served before its
    │                       deadline; carries Retry-After (s) and x-acs-retry-after (ms)
    ├── DeadlineExceeded    504 Proxy.DeadlineExceeded: the deadline passed while queued or waiting
    └── UpstreamFailed      502/504: no usable upstream answer after the allowed attempts
"""

from __future__ import annotations

import math


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


class Overloaded(GatewayError):
    code = "Throttling.Proxy"
    status = 503

    def __init__(self, message: str, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(message, headers={"Retry-After": str(seconds),
                                           "x-acs-retry-after": str(max(1, math.ceil(retry_after_s * 1000)))})
        self.retry_after_s = retry_after_s


class DeadlineExceeded(GatewayError):
    code = "Proxy.DeadlineExceeded"
    status = 504


class UpstreamFailed(GatewayError):
    code = "Proxy.UpstreamUnavailable"
    status = 502
