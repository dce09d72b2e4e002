"""Error bodies in the upstream's shape, and the request id every answer carries."""

from __future__ import annotations

import itertools
import re
import uuid
from typing import Final

import orjson
from aiohttp import web

from proxy.errors import GatewayError, RequestRejected

JSON_TYPE: Final = "application/json;charset=utf-8"
HOST_ID: Final = "cams-proxy"
REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


_PREFIX: Final = uuid.uuid4().hex[:12]
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A request id unique to this process run: a random per-process prefix and a decimal counter (cheaper
    than a UUID per request, or a hex counter, and still unique across replicas and restarts)."""
    return f"{_PREFIX}-{next(_COUNTER)}"


def request_id_for(incoming: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is sane, else a new one."""
    if incoming and REQUEST_ID.match(incoming):
        return incoming
    return new_request_id()


def error_body(request_id: str, code: str, message: str) -> bytes:
    return orjson.dumps({"RequestId": request_id, "HostId": HOST_ID, "Code": code, "Message": message})


def error_response(request_id: str, error: GatewayError) -> web.Response:
    return web.Response(
        body=error_body(request_id, error.code, error.message),
        status=error.status,
        headers={"Content-Type": JSON_TYPE, "X-Request-Id": request_id, **error.headers},
    )


async def not_found(request: web.Request) -> web.Response:
    """The catch-all: an unknown path, in the upstream's shape."""
    request_id = request_id_for(request.headers.get("X-Request-Id"))
    return error_response(request_id, RequestRejected(
        f"No such endpoint: {request.path[:80]}. Calls go to / or /v1/{{Action}}.", code="InvalidAction.NotFound",
        status=404))
