"""The application keys of the gateway's aiohttp app, in one module that every web module may import (so the
app and its route modules never import each other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from proxy.access_log import AccessLog
from proxy.gateway import Gateway
from proxy.settings import GatewaySettings
from proxy.tenants import TenantDirectory
from proxy.web.server import EdgeStats


@dataclass
class OpsPort:
    """Where ``/metrics``, ``/admin/*`` and the details of ``/readyz`` are served (``--ops-port``).

    ``port`` None: on every port (the API port included, the default). Otherwise only a request that arrived on a
    socket bound to ``port`` gets them; on any other port ``/metrics`` and ``/admin/*`` are 404 in the upstream
    shape and ``/readyz`` answers its status (and status code) without the body's details. ``/healthz``, the API
    and the audit callback (CAMS calls it from outside) stay on the API port."""

    port: int | None = None

    def serves(self, request: web.Request) -> bool:
        if self.port is None:
            return True
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return isinstance(sockname, tuple) and len(sockname) >= 2 and sockname[1] == self.port


SETTINGS: Final = web.AppKey("settings", GatewaySettings)
#: The running gateway (`proxy.gateway.open_gateway`), set once the resources are open.
GATEWAY: Final = web.AppKey("gateway", Gateway)
DIRECTORY: Final = web.AppKey("directory", TenantDirectory)
EDGE_STATS: Final = web.AppKey("edge_stats", EdgeStats)
ACCESS_LOG: Final[web.AppKey[AccessLog | None]] = web.AppKey("access_log")
OPS_PORT: Final = web.AppKey("ops_port", OpsPort)
