"""A runner whose HTTP-parser errors answer in JSON.

aiohttp answers requests its parser refuses (a request line or header over the limits, a malformed
request) with ``text/plain`` before any middleware runs. A client of this gateway must get the
upstream's JSON error shape for every answer, so the protocol handler's ``handle_error`` is replaced
for the servers this runner makes. Handler errors never reach it: the middleware renders those.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy.web.rendering import JSON_TYPE, error_body


class JsonErrorRequestHandler(RequestHandler):
    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; no error answer can follow")
        if isinstance(exc, LineTooLong):
            code, text = "InvalidRequest.TooLarge", "The request line or a header is longer than the gateway accepts."
        elif isinstance(exc, BadHttpMessage) or status < 500:
            code, text = "InvalidRequest.Malformed", "The HTTP request could not be parsed."
        else:
            self.log_exception("Error handling request", exc_info=exc)
            code, text = "InternalError", "The gateway failed to handle the request."
        request_id = uuid.uuid4().hex
        response = web.Response(body=error_body(request_id, code, text), status=status,
                                headers={"Content-Type": JSON_TYPE, "X-Request-Id": request_id})
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorServer  # same state, one overridden factory method
        return server


def runner_for(app: web.Application, **kwargs: Any) -> web.AppRunner:
    return JsonErrorAppRunner(app, **kwargs)
