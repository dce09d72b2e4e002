"""The gateway application: `create_app(settings)`, its resources, routes and middleware.

Resources (upstream session, cache backend, queues, owned fill tasks) are opened and closed in one
cleanup context. Routes:

| route | what |
| --- | --- |
| ``GET|POST /`` | a CAMS RPC call, exactly as the SDK sends it (``x-acs-action``) or with ``Action`` |
| ``GET|POST /v1/{Action}`` | the same for curl users |
| ``GET /healthz`` | liveness |
| ``GET /readyz`` | readiness: the cache backend answers |

Limits (documented in the README): request line and each header at most `MAX_LINE_BYTES`, body at
most `MAX_BODY_BYTES`; over them, a JSON 4xx in the upstream's shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from proxy.actions import ACTIONS
from proxy.admission.queue import UpstreamQueue
from proxy.cache import Cache, CacheError, MemoryCache, RedisCache
from proxy.config import GatewaySettings
from proxy.errors import GatewayError, RequestRejected
from proxy.logs import get_logger
from proxy.nonces import NonceRegistry
from proxy.readthrough import Answer, ReadThrough
from proxy.tasks import TaskOwner
from proxy.tenants import TenantDirectory, TenantResolver
from proxy.upstream.client import UpstreamClient, create_session
from proxy.web.calls import deadline_seconds as request_deadline
from proxy.web.calls import parse_call
from proxy.web.rendering import JSON_TYPE, error_response, request_id_for

MAX_LINE_BYTES: Final = 8190
MAX_BODY_BYTES: Final = 64 * 1024

SETTINGS: Final = web.AppKey("settings", GatewaySettings)
READTHROUGH: Final = web.AppKey("readthrough", ReadThrough)
TENANTS: Final = web.AppKey("tenants", TenantResolver)
QUEUES: Final = web.AppKey("queues", dict[str, UpstreamQueue])
DIRECTORY: Final = web.AppKey("directory", TenantDirectory)
LOG_FIELDS: Final = web.RequestKey("log_fields", dict[str, Any])

log = get_logger("proxy.access")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_cache(settings: GatewaySettings) -> Cache:
    if settings.redis_url:
        return RedisCache.from_url(settings.redis_url)
    return MemoryCache(max_entries=settings.memory_max_entries, max_bytes=settings.memory_max_bytes)


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    owner = TaskOwner("fills")
    session = create_session(connect_timeout=settings.upstream_connect_timeout_s)
    cache = build_cache(settings)
    client = UpstreamClient(session, settings.upstream, settings.credentials, timeout=settings.upstream_timeout_s)
    queues = {
        name: UpstreamQueue(name, settings.cap(name), settings.spacing_margin_ms / 1000.0, settings.queue_bound(name))
        for name in ACTIONS
    }
    app[QUEUES] = queues
    app[READTHROUGH] = ReadThrough(cache=cache, client=client, queues=queues, ttl=settings.ttl,
                                   attempts=settings.upstream_attempts,
                                   access_key_id=lambda: settings.credentials().access_key_id, owner=owner)
    app[TENANTS] = TenantResolver(app[DIRECTORY], NonceRegistry(ttl=2 * 900 + 60))
    try:
        yield
    finally:
        await owner.close()
        await cache.close()
        await session.close()


@web.middleware
async def request_scope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, one access-log line per request, and every error rendered in the upstream shape."""
    started = time.monotonic()
    request_id = request_id_for(request.headers.get("X-Request-Id"))
    fields: dict[str, Any] = {"request_id": request_id, "method": request.method, "path": request.path}
    request[LOG_FIELDS] = fields
    try:
        response = await handler(request)
    except GatewayError as exc:
        fields["code"] = exc.code
        response = error_response(request_id, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "InvalidAction.NotFound", 405: "InvalidParameter.Method",
                413: "InvalidRequest.TooLarge"}.get(exc.status, "InvalidRequest")
        response = error_response(request_id, RequestRejected(exc.reason or "Bad request.", code=code,
                                                               status=exc.status))
        fields["code"] = code
    except Exception:
        log.exception("request failed", request_id=request_id)
        response = error_response(request_id, GatewayError("The gateway failed to handle the request."))
    response.headers["X-Request-Id"] = request_id
    fields["status"] = response.status
    fields["duration_ms"] = round((time.monotonic() - started) * 1000, 2)
    if request.path not in {"/healthz", "/readyz"}:
        log.info("request", **fields)
    return response


async def handle_call(request: web.Request) -> web.Response:
    fields = request[LOG_FIELDS]
    call = await parse_call(request)
    fields["action"] = call.spec.name
    loop = asyncio.get_running_loop()
    fields["tenant"] = request.app[TENANTS].identify(call.view, loop.time())
    budget = request_deadline(request, request.app[SETTINGS].deadline_s)
    answer = await request.app[READTHROUGH].fetch(call.spec, call.params, loop.time() + budget)
    return render(answer, fields)


def render(answer: Answer, fields: dict[str, Any]) -> web.Response:
    entry = answer.entry
    fields["cache"] = answer.cache.value
    if answer.fill is not None:
        fields["queue_wait_ms"] = round(answer.fill.queue_wait * 1000, 2)
        fields["upstream_ms"] = round(answer.fill.upstream_time * 1000, 2)
        fields["attempts"] = answer.fill.attempts
        fields["outcome"] = answer.fill.outcome.value
    age = max(0, int(time.time() - entry.fetched_at))
    return web.Response(body=entry.body, status=entry.status,
                        headers={"Content-Type": entry.content_type, "X-Cache": answer.cache.value,
                                 "Age": str(age)})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    cache = request.app[READTHROUGH].cache
    try:
        await cache.get("k1:readyz:probe")
    except CacheError as exc:
        body = {"status": "unavailable", "cache": cache.name, "error": str(exc)}
        return web.Response(body=orjson.dumps(body), status=503, content_type="application/json")
    queues = {name: {"waiting": q.waiting, "interval_s": round(q.interval, 4)}
              for name, q in request.app[QUEUES].items()}
    return web.Response(body=orjson.dumps({"status": "ready", "cache": cache.name, "queues": queues}),
                        content_type="application/json")


def create_app(settings: GatewaySettings, directory: TenantDirectory | None = None) -> web.Application:
    app = web.Application(middlewares=[request_scope], client_max_size=MAX_BODY_BYTES,
                          handler_args={"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_LINE_BYTES})
    app[SETTINGS] = settings
    app[DIRECTORY] = directory or TenantDirectory()
    app.cleanup_ctx.append(_resources)
    for method in ("GET", "POST"):
        app.router.add_route(method, "/", handle_call)
        app.router.add_route(method, "/v1/{action}", handle_call)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


__all__ = ["JSON_TYPE", "create_app"]
