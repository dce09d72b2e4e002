"""The HTTP edge: bounded reading, and an answer in the upstream's JSON shape for everything the parser accepts.

aiohttp answers what its parser refuses (a request line or header over the limits, a malformed request) and
what its router cannot place (``OPTIONS *``, ``CONNECT host:port``, a method a route does not take) with
``text/plain``, and it bounds neither the time to read a request's headers nor its body. Both are fixed here,
in the protocol handler of the servers `runner_for` makes, so no middleware costs the hit path anything.

Bounds (`EdgeLimits`, from the settings):

* **headers**: from the first byte of a request to the end of its headers, at most ``header_timeout_s``;
  then ``408 RequestTimeout`` (JSON) and the connection is closed;
* **body**: a declared ``Content-Length`` over ``max_body_bytes`` is refused with ``413`` before any of the
  body is read; a body (declared or chunked) is read before the route runs, within ``body_timeout_s``
  (``408`` after), and a chunked body over the limit is ``413`` as soon as it passes it. A route that would
  not read its body does not make the gateway wait for it either: what is left is drained for at most
  ``body_timeout_s`` (aiohttp's lingering close), then the connection is closed;
* **idle keep-alive**: a connection with no request in progress for ``idle_timeout_s`` is closed (silently:
  there is no request to answer);
* **connections**: at most ``max_connections`` open at once per process; one more is answered ``503``
  (JSON, ``Connection: close``) and closed at once.

Guarantee: every connection either sends a complete request within the header and body bounds or is closed
within them plus one event-loop turn, so stalled clients cannot pin file descriptors for longer. Every answer
the gateway writes is JSON in the upstream's shape (``RequestId``, ``HostId``, ``Code``, ``Message``),
except where no answer can be sent (the peer is gone, or the response had started). Non-guarantee: a client
that trickles its headers one byte at a time still holds its connection for up to ``header_timeout_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy.web.rendering import JSON_TYPE, error_body, new_request_id

#: Codes for the HTTP errors aiohttp's router and body reader raise (others: ``InvalidRequest.HTTP<status>``).
HTTP_ERROR_CODES: Final = {
    404: ("InvalidAction.NotFound", "No such endpoint. Calls go to / or /v1/{Action}."),
    405: ("UnsupportedHTTPMethod", "This endpoint does not take that method."),
    413: ("InvalidRequest.TooLarge", "The request body is larger than the gateway accepts."),
}


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """How long and how much the gateway reads from one client (see the module docstring)."""

    header_timeout_s: float = 5.0
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_connections: int = 1024
    max_body_bytes: int = 64 * 1024


@dataclass
class EdgeStats:
    """What the edge refused or closed, per process (``/admin/status``)."""

    header_timeouts: int = 0
    body_timeouts: int = 0
    too_large: int = 0
    over_connection_limit: int = 0


def raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer, for when there is no request object to answer through (closes the connection)."""
    request_id = new_request_id()
    body = error_body(request_id, code, message)
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {JSON_TYPE}\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-Id: {request_id}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


def json_error(status: int, code: str, message: str, *, close: bool = False) -> web.Response:
    request_id = new_request_id()
    response = web.Response(body=error_body(request_id, code, message), status=status,
                            headers={"Content-Type": JSON_TYPE, "X-Request-Id": request_id})
    if close:
        response.force_close()
    return response


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code, message = HTTP_ERROR_CODES.get(exc.status, (f"InvalidRequest.HTTP{exc.status}", exc.reason))
    response = json_error(exc.status, code, message, close=exc.status == 413)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class BoundedRequestHandler(RequestHandler):
    """aiohttp's protocol handler with the edge's bounds and JSON answers (``manager`` is a `BoundedServer`)."""

    __slots__ = ("_bounded_app", "_header_timer", "_limits", "_stats")

    def __init__(self, manager: BoundedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._stats = manager.stats
        self._header_timer: asyncio.TimerHandle | None = None
        self._bounded_app: Handler | None = None  # the app's handler, wrapped once per connection

    # -------------------------------------------------------------------------------- connections and headers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if manager is not None and len(manager._connections) > self._limits.max_connections:
            self._stats.over_connection_limit += 1
            self._refuse_raw(503, "Service Unavailable", "ServiceUnavailable.Connections",
                             f"The gateway has {self._limits.max_connections} connections open; retry shortly.")

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_header_timer()  # a whole request head arrived
        elif data and self._header_timer is None and self._idle():
            self._header_timer = self._loop.call_later(self._limits.header_timeout_s, self._headers_too_slow)

    def _idle(self) -> bool:
        """Waiting for the next request's head (not handling one, nor draining the rest of a body)."""
        return self._waiter is not None and not self._waiter.done() and not self._messages

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._idle() and self.transport is not None:
            self._stats.header_timeouts += 1
            self._refuse_raw(408, "Request Timeout", "RequestTimeout",
                             f"The request headers did not arrive within {self._limits.header_timeout_s:g}s.")

    def _refuse_raw(self, status: int, reason: str, code: str, message: str) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(raw_error(status, reason, code, message))
        self.force_close()

    # ------------------------------------------------------------------------------------------- the request

    async def _handle_request(self, request: BaseRequest, start_time: float | None,
                              request_handler: Handler) -> tuple[web.StreamResponse, bool]:
        if request_handler is self._request_handler:
            if self._bounded_app is None:
                self._bounded_app = self._bounded(request_handler)
            bounded = self._bounded_app
        else:
            bounded = self._bounded(request_handler)  # a parser error's handler: rare
        return await super()._handle_request(request, start_time, bounded)

    def _bounded(self, request_handler: Handler) -> Handler:
        limits, stats = self._limits, self._stats

        async def handle(request: BaseRequest) -> web.StreamResponse:
            try:
                if request.body_exists:
                    declared = request.content_length
                    if declared is not None and declared > limits.max_body_bytes:
                        stats.too_large += 1
                        return json_error(413, "InvalidRequest.TooLarge",
                                          f"The request body ({declared} bytes) is larger than the "
                                          f"{limits.max_body_bytes} bytes the gateway accepts.", close=True)
                    try:
                        async with asyncio.timeout(limits.body_timeout_s):
                            await request.read()  # kept on the request: the route's own read returns it
                    except TimeoutError:
                        stats.body_timeouts += 1
                        return json_error(408, "RequestTimeout", f"The request body did not arrive within "
                                          f"{limits.body_timeout_s:g}s.", close=True)
                return await request_handler(request)
            except web.HTTPException as exc:
                if exc.status == 413:
                    stats.too_large += 1
                return _from_http_exception(exc)

        return handle

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; no error answer can follow")
        if isinstance(exc, LineTooLong):
            code, text = "InvalidRequest.TooLarge", "The request line or a header is longer than the gateway accepts."
        elif isinstance(exc, BadHttpMessage) or status < 500:
            code, text = "InvalidRequest.Malformed", "The HTTP request could not be parsed."
        elif status == 504:
            code, text = "Proxy.DeadlineExceeded", "The gateway did not finish the request in time."
        else:
            self.log_exception("Error handling request", exc_info=exc)
            code, text = "InternalError", "The gateway failed to handle the request."
        return json_error(status, code, text, close=True)


class BoundedServer(web.Server):
    limits: EdgeLimits
    stats: EdgeStats

    def __call__(self) -> RequestHandler:
        return BoundedRequestHandler(self, loop=self._loop, **self._kwargs)


class BoundedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, limits: EdgeLimits, stats: EdgeStats, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout_s)
        kwargs.setdefault("lingering_time", limits.body_timeout_s)
        super().__init__(app, **kwargs)
        self._limits = limits
        self._stats = stats

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = BoundedServer  # same state, one overridden factory method
        assert isinstance(server, BoundedServer)
        server.limits = self._limits
        server.stats = self._stats
        return server


def runner_for(app: web.Application, limits: EdgeLimits | None = None, stats: EdgeStats | None = None,
               **kwargs: Any) -> web.AppRunner:
    return BoundedAppRunner(app, limits=limits or EdgeLimits(), stats=stats or EdgeStats(), **kwargs)
