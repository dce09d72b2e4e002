"""The simulator's operator endpoints under ``/__sim/``: the referee's stats, reset, fixtures, faults.

| method | path | what |
| --- | --- | --- |
| GET | /__sim/stats | per-action counters and ``max_in_any_1s`` |
| POST | /__sim/reset | zero counters and windows (``?all=1``: also restore fixtures and faults) |
| GET, PUT | /__sim/fixtures | the whole fixture document |
| PATCH | /__sim/spaces/{space} | change space fields (``Subscribed``, ``IsvCode``, ``Waba``) |
| PATCH | /__sim/spaces/{space}/waba | change WABA fields |
| PUT | /__sim/spaces/{space}/templates | insert or replace a template (identity: TemplateCode + Language) |
| PATCH, DELETE | /__sim/spaces/{space}/templates/{code}/{language} | change or remove a template |
| GET, PUT | /__sim/faults | fault plans: ``{"default": {...}, "GetChatappTemplateDetail": {...}}`` |
| GET | /__sim/answers/{RequestId} | the exact bytes of a recent answer (the last 2000 are kept) |
| GET | /__sim/health | liveness, and the process id (``make run`` checks that its own simulator answers) |

Bad input gets the upstream error shape. These endpoints are unauthenticated: the simulator listens
on loopback by default.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from aiohttp import web

from proxy.actions import ACTIONS
from proxy.simulator.errors import error_body, new_request_id
from proxy.simulator.fixtures import FixtureError
from proxy.simulator.state import SimulatorState


def _ok(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _fail(request: web.Request, code: str, message: str, status: int) -> web.Response:
    request_id = new_request_id()
    return web.Response(
        body=orjson.dumps(error_body(code, message, request_id, request.host)),
        status=status,
        content_type="application/json",
        headers={"x-acs-request-id": request_id},
    )


async def _json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise FixtureError(f"the body is not valid JSON: {exc}") from exc


def add_admin_routes(app: web.Application, key: web.AppKey[SimulatorState]) -> None:
    def state(request: web.Request) -> SimulatorState:
        return request.app[key]

    def guarded(handler: Any) -> Any:
        async def wrapper(request: web.Request) -> web.Response:
            try:
                result: web.Response = await handler(request)
                return result
            except (FixtureError, ValueError) as exc:
                return _fail(request, "InvalidParameter", str(exc), 400)
            except KeyError as exc:
                return _fail(request, "NotFound", str(exc.args[0]), 404)

        return wrapper

    async def stats(request: web.Request) -> web.Response:
        return _ok(state(request).snapshot())

    async def reset(request: web.Request) -> web.Response:
        everything = request.query.get("all", "") in {"1", "true", "yes"}
        state(request).reset(everything=everything)
        return _ok({"reset": "all" if everything else "stats"})

    async def get_fixtures(request: web.Request) -> web.Response:
        return _ok(state(request).store.document())

    async def put_fixtures(request: web.Request) -> web.Response:
        state(request).store.replace(await _json(request))
        return _ok(state(request).store.document())

    async def patch_space(request: web.Request) -> web.Response:
        return _ok(state(request).store.patch_space(request.match_info["space"], await _json(request)))

    async def patch_waba(request: web.Request) -> web.Response:
        store = state(request).store
        space_id = request.match_info["space"]
        space = store.space(space_id)
        if space is None:
            raise KeyError(f"no space {space_id}")
        changes = await _json(request)
        if not isinstance(changes, dict):
            raise FixtureError("the body must be a JSON object")
        return _ok(store.patch_space(space_id, {"Waba": {**space.waba, **changes}})["Waba"])

    async def put_template(request: web.Request) -> web.Response:
        return _ok(state(request).store.put_template(request.match_info["space"], await _json(request)))

    async def patch_template(request: web.Request) -> web.Response:
        info = request.match_info
        return _ok(state(request).store.patch_template(
            info["space"], info["code"], info["language"], await _json(request)))

    async def delete_template(request: web.Request) -> web.Response:
        info = request.match_info
        state(request).store.delete_template(info["space"], info["code"], info["language"])
        return _ok({"deleted": f"{info['code']}/{info['language']}"})

    async def get_faults(request: web.Request) -> web.Response:
        sim = state(request)
        plans = {"default": sim.default_plan.as_dict()}
        plans.update({name: plan.as_dict() for name, plan in sim.plans.items()})
        return _ok(plans)

    async def put_faults(request: web.Request) -> web.Response:
        """Merge changes into the plans; ``{"GetChatappTemplateDetail": null}`` drops an override."""
        sim = state(request)
        changes = await _json(request)
        if not isinstance(changes, dict):
            raise FixtureError("the body must be a JSON object of plans")
        for name, plan_changes in changes.items():
            if name != "default" and name not in ACTIONS:
                raise FixtureError(f"unknown action {name!r}")
            if plan_changes is None:
                sim.plans.pop(name, None)
                continue
            if not isinstance(plan_changes, dict):
                raise FixtureError(f"the plan for {name} must be an object")
            if name == "default":
                sim.default_plan = sim.default_plan.updated(plan_changes)
            else:
                sim.plans[name] = sim.plan(name).updated(plan_changes)
        return await get_faults(request)

    async def answer(request: web.Request) -> web.Response:
        body = state(request).answers.get(request.match_info["request_id"])
        if body is None:
            raise KeyError(f"no recent answer with RequestId {request.match_info['request_id'][:64]}")
        return web.Response(body=body, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return _ok({"status": "ok", "pid": os.getpid()})

    routes = [
        ("GET", "/__sim/stats", stats),
        ("POST", "/__sim/reset", reset),
        ("GET", "/__sim/fixtures", get_fixtures),
        ("PUT", "/__sim/fixtures", put_fixtures),
        ("PATCH", "/__sim/spaces/{space}", patch_space),
        ("PATCH", "/__sim/spaces/{space}/waba", patch_waba),
        ("PUT", "/__sim/spaces/{space}/templates", put_template),
        ("PATCH", "/__sim/spaces/{space}/templates/{code}/{language}", patch_template),
        ("DELETE", "/__sim/spaces/{space}/templates/{code}/{language}", delete_template),
        ("GET", "/__sim/faults", get_faults),
        ("PUT", "/__sim/faults", put_faults),
        ("GET", "/__sim/answers/{request_id}", answer),
        ("GET", "/__sim/health", health),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, guarded(handler))
