"""The network stand-in's operator endpoints: a small aiohttp app on its own port (plain HTTP, loopback default).

| method | path | what |
| --- | --- | --- |
| GET | /__net/stats | connections (open, accepted, refused, idle_closed, ...), bytes each way, profile, cut |
| POST | /__net/cut | ``{"mode": "refuse"}`` (reset new and open connections) or ``{"mode": "blackhole"}`` |
| POST | /__net/restore | new connections are relayed again (blackholed ones stay dead) |
| GET, PUT | /__net/profile | the profile; PUT merges a partial update, applying to chunks read from then on |
| GET | /__net/health | liveness |

Guarantees: a bad body gets 400 and ``{"error": "InvalidParameter", "message": ...}`` naming every bad field, and
changes nothing. Non-guarantees: no authentication (keep it on loopback); a profile change does not move chunks
already scheduled, and an ``idle_close_s`` change applies at the next idle check (within 50 ms).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.netem.core import CutMode
from proxy.netem.relay import Relay

RELAY: web.AppKey[Relay] = web.AppKey("netem_relay", Relay)


def _ok(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _bad(message: str, status: int = 400) -> web.Response:
    return web.Response(body=orjson.dumps({"error": "InvalidParameter", "message": message}), status=status,
                        content_type="application/json")


async def _object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


async def stats(request: web.Request) -> web.Response:
    return _ok(request.app[RELAY].stats())


async def cut(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    try:
        body = await _object(request)
    except ValueError as exc:
        return _bad(str(exc))
    mode = body.get("mode")
    if mode not in (CutMode.REFUSE.value, CutMode.BLACKHOLE.value):
        return _bad(f"mode must be \"refuse\" or \"blackhole\", got {mode!r}")
    touched = relay.apply_cut(CutMode(mode))
    return _ok({"cut": mode, "connections_affected": touched})


async def restore(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    relay.restore()
    return _ok({"cut": relay.cut.mode.value})


async def get_profile(request: web.Request) -> web.Response:
    return _ok(request.app[RELAY].profile.as_dict())


async def put_profile(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    try:
        relay.profile = relay.profile.updated(await _object(request))
    except ValueError as exc:
        return _bad(str(exc))
    return _ok(relay.profile.as_dict())


async def health(request: web.Request) -> web.Response:
    return _ok({"status": "ok"})


def create_admin_app(relay: Relay) -> web.Application:
    app = web.Application()
    app[RELAY] = relay
    app.router.add_get("/__net/stats", stats)
    app.router.add_post("/__net/cut", cut)
    app.router.add_post("/__net/restore", restore)
    app.router.add_get("/__net/profile", get_profile)
    app.router.add_put("/__net/profile", put_profile)
    app.router.add_get("/__net/health", health)
    return app
