"""Health, readiness and metrics over HTTP, and the ops-port gate (`OpsPort`).

``/healthz`` is liveness (the process answers). ``/readyz`` is `Gateway.readiness` (on the ops port with its
details, elsewhere its status only). ``/metrics`` is the Prometheus text of every worker, sampled first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from proxy.metrics import CONTENT_TYPE
from proxy.web.keys import GATEWAY, OPS_PORT
from proxy.web.rendering import not_found


def ops_only(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` on the ops port, the catch-all 404 elsewhere (see `proxy.web.keys.OpsPort`)."""
    async def on_ops_port(request: web.Request) -> web.StreamResponse:
        if not request.app[OPS_PORT].serves(request):
            return await not_found(request)
        return await handler(request)

    return on_ops_port


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format (every worker's, under ``--workers``)."""
    gateway = request.app[GATEWAY]
    gateway.sample_metrics()
    body = await asyncio.to_thread(gateway.metrics.exposition)  # multi-process mode reads files
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """Kubernetes readiness: ``ready``; ``degraded`` (200: still worth routing to, hits and stale entries flow)
    with the reasons; or ``unavailable`` (503: the memory cache is broken). See `Gateway.readiness`."""
    readiness = await request.app[GATEWAY].readiness()
    body = readiness.body if request.app[OPS_PORT].serves(request) else {"status": readiness.status}
    return web.Response(body=orjson.dumps(body), status=readiness.http_status, content_type="application/json")


def install(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", ops_only(metrics_endpoint))
