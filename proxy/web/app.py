"""The gateway application: `create_app(settings)`, its routes, and the one cleanup context that opens the
gateway (`proxy.gateway.open_gateway`) and binds the call handler to it.

| route | what |
| --- | --- |
| ``GET|POST /`` | a CAMS RPC call, exactly as the SDK sends it (``x-acs-action``) or with ``Action`` |
| ``GET|POST /v1/{Action}`` | the same for curl users |
| ``GET /healthz`` | liveness |
| ``GET /readyz`` | readiness (`proxy.gateway.Gateway.readiness`) |
| ``GET /metrics``, ``/admin/*`` | Prometheus text, purge and status (on the ops port when ``--ops-port`` is set) |
| ``POST /callbacks/cams/audit`` | the CAMS audit callback (purges what it names) |
| anything else | 404 ``InvalidAction.NotFound`` in the upstream shape |

Limits (documented in the README): request line and each header at most `MAX_LINE_BYTES`, body at
most `MAX_BODY_BYTES`; over them, a JSON 4xx in the upstream's shape.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from proxy.access_log import AccessLog
from proxy.actions import ACTIONS
from proxy.gateway import open_gateway
from proxy.logs import get_logger
from proxy.settings import GatewaySettings
from proxy.tenants import TenantDirectory
from proxy.web import ops
from proxy.web.admin import AdminRoutes
from proxy.web.handler import HANDLER, CallHandler
from proxy.web.keys import ACCESS_LOG, DIRECTORY, EDGE_STATS, GATEWAY, OPS_PORT, SETTINGS, OpsPort
from proxy.web.rendering import not_found
from proxy.web.server import EdgeLimits, EdgeStats, runner_for

MAX_LINE_BYTES: Final = 8190
MAX_BODY_BYTES: Final = 64 * 1024
log = get_logger("proxy.access")


async def _gateway(app: web.Application) -> AsyncIterator[None]:
    """Open the gateway for the app's lifetime; the call handler reads it without app lookups."""
    async with open_gateway(app[SETTINGS], app[DIRECTORY], app[ACCESS_LOG]) as gateway:
        app[GATEWAY] = gateway
        app[HANDLER].bind(gateway)
        yield


async def drain(app: web.Application) -> None:
    """Shutdown, first step (the listener is already closed): refuse what still waits in the queues with a
    503 and Retry-After, so every queued request gets an answer now; calls already granted finish within
    the grace period, then the resources close (leases released, Redis and the session closed)."""
    if GATEWAY not in app:
        return
    refused = {name: queue.close("The gateway is shutting down (another replica will answer)")
               for name, queue in app[GATEWAY].queues.items()}
    log.info("shutting down: queued misses refused with Retry-After, calls in flight finish", refused=refused)


def _report_dropped_lines(dropped: int, total: int) -> None:
    log.warning("access log lines dropped: the log sink is slower than the traffic", dropped=dropped, total=total)


def edge_limits(settings: GatewaySettings) -> EdgeLimits:
    """The HTTP edge's bounds (`proxy.web.server`) from the settings."""
    return EdgeLimits(header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
                      idle_timeout_s=settings.idle_timeout_s, max_connections=settings.max_connections,
                      max_body_bytes=MAX_BODY_BYTES)


def gateway_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner that serves the gateway: the bounded HTTP edge, its counters in ``app[EDGE_STATS]``."""
    return runner_for(app, edge_limits(app[SETTINGS]), app[EDGE_STATS], **kwargs)


def create_app(settings: GatewaySettings, directory: TenantDirectory | None = None) -> web.Application:
    """The gateway. No middleware: the call handler renders its own errors (cheaper on the hit path), and a
    catch-all route answers unknown paths in the upstream shape."""
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          handler_args={"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_LINE_BYTES})
    app[SETTINGS] = settings
    app[EDGE_STATS] = EdgeStats()  # filled by the HTTP edge (proxy.web.server) of the runner that serves the app
    app[DIRECTORY] = directory or TenantDirectory()
    if settings.admin_token is not None and app[DIRECTORY].knows_token(settings.admin_token.reveal()):
        raise ValueError("PROXY_ADMIN_TOKEN is also a tenant's token: the admin token must be its own")
    app.cleanup_ctx.append(_gateway)
    app.on_shutdown.append(drain)
    app[ACCESS_LOG] = access_log = (AccessLog(json_lines=settings.json_logs(sys.stderr.isatty()),
                                              report=_report_dropped_lines)
                                    if settings.log_level in {"debug", "info"} else None)
    app[HANDLER] = CallHandler(access_log)
    handler = app[HANDLER].handle
    app.router.add_route("*", "/", handler)
    for name in ACTIONS:  # plain routes resolve by index, faster than the pattern below
        app.router.add_route("*", f"/v1/{name}", handler)
    app.router.add_route("*", "/v1/{action}", handler)
    app[OPS_PORT] = OpsPort(settings.ops_port or None)  # the bound port replaces it when --ops-port is 0
    ops.install(app)
    AdminRoutes(settings.admin_token, settings.callback_token).install(app, wrap_admin=ops.ops_only)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
