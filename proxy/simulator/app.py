"""The simulator's HTTP face: the CAMS RPC endpoint on ``/`` and the app factory.

One call goes through the steps the upstream takes, in order, each able to end it:

1. route: the action from ``x-acs-action`` (V3) or ``Action`` (V1/query), the version checked;
2. authenticate: V3 (``Authorization``) or V1 (``Signature`` parameter), then nonce replay;
3. flow control: the per-(action, AccessKey) sliding window (`window.py`), counted at arrival;
4. faults and latency (`faults.py`);
5. the business answer from the fixtures (`business.py`).

Every answer, errors included, is JSON in the upstream's shape with an ``x-acs-request-id`` header;
no input yields a traceback or an HTML page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from proxy.actions import ACTIONS
from proxy.logs import get_logger
from proxy.signing import ReceivedRequest, SignatureError, verify_v1, verify_v3
from proxy.simulator.admin import add_admin_routes
from proxy.simulator.business import ANSWERERS, success_body
from proxy.simulator.errors import CODES, error_body, new_request_id
from proxy.simulator.faults import BROKEN, Fault, broken_body, decide, latency_seconds
from proxy.simulator.fixtures import FixtureStore, load_document
from proxy.simulator.settings import SimulatorSettings
from proxy.simulator.state import ActionStats, SimulatorState

STATE: Final = web.AppKey("simulator_state", SimulatorState)
JSON_CONTENT_TYPE: Final = "application/json;charset=utf-8"

log = get_logger("proxy.simulator")


class CallError(Exception):
    """Ends a call with an upstream-shaped error; ``counter`` names the stats field it counts in
    (empty: already counted)."""

    def __init__(self, code: str, message: str | None = None, status: int | None = None,
                 counter: str = "rejected") -> None:
        entry = CODES.get(code)
        self.code = code
        self.message = message or (entry.message if entry else code)
        self.status = status or (entry.http_status if entry else 400)
        self.counter = counter
        super().__init__(code)


def json_response(body: dict[str, Any], status: int, request_id: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers={"Content-Type": JSON_CONTENT_TYPE, "x-acs-request-id": request_id},
    )


def error_response(request: web.Request, code: str, message: str, status: int) -> web.Response:
    request_id = new_request_id()
    return json_response(error_body(code, message, request_id, request.host), status, request_id)


def _decode_pairs(raw: str | bytes) -> list[tuple[str, str]]:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return parse_qsl(text, keep_blank_values=True, errors="strict")


async def _read_params(request: web.Request, body: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(query pairs, form-body pairs), both form-decoded (``+`` is a space)."""
    try:
        query = _decode_pairs(request.rel_url.raw_query_string)
        form = _decode_pairs(body) if request.content_type == "application/x-www-form-urlencoded" else []
    except UnicodeDecodeError as exc:
        raise CallError("InvalidParameter", "The request parameters are not valid UTF-8.") from exc
    return query, form


def _authenticate(state: SimulatorState, request: web.Request, body: bytes,
                  query: list[tuple[str, str]], form: list[tuple[str, str]]) -> str:
    now = datetime.now(UTC)
    skew = timedelta(seconds=state.settings.max_skew_s)
    try:
        if request.headers.get("Authorization"):
            received = ReceivedRequest(request.method, tuple(query), tuple(request.headers.items()), body)
            caller = verify_v3(received, state.credentials.get, now, skew)
        elif any(name == "Signature" for name, _ in query + form):
            caller = verify_v1(request.method, query + form, state.credentials.get, now, skew)
        else:
            raise SignatureError("IncompleteSignature", "The request is not signed.")
    except SignatureError as exc:
        raise CallError(exc.code, exc.message, exc.http_status) from exc
    if state.nonces.use(caller.access_key_id, caller.nonce, caller.signed_at.timestamp(), now.timestamp()) != "fresh":
        raise CallError("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
    return caller.access_key_id


def _route(request: web.Request, params: dict[str, str]) -> str:
    action = request.headers.get("x-acs-action") or params.get("Action")
    if not action:
        raise CallError("MissingParameter", 'The input parameter "Action" that is mandatory is not supplied.')
    if action not in ACTIONS:
        raise CallError("InvalidAction.NotFound")
    version = request.headers.get("x-acs-version") or params.get("Version")
    if version != ACTIONS[action].version:
        raise CallError("InvalidVersion", f"Specified parameter Version is not valid: {str(version)[:20]!r}.")
    return action


async def _serve_call(state: SimulatorState, stats: ActionStats, action: str, access_key_id: str,
                      params: dict[str, str], request_id: str) -> tuple[dict[str, Any], int, Fault]:
    plan = state.plan(action)
    fault = decide(plan, state.rng)
    loop = asyncio.get_running_loop()
    if not stats.window(access_key_id).arrive(loop.time(), force_throttle=fault is Fault.THROTTLE):
        raise CallError("System.LimitControl", counter="throttled")
    if fault is Fault.HANG:
        stats.faults += 1  # counted now: the caller usually gives up before the hang ends
        await asyncio.sleep(plan.hang_ms / 1000.0)
        raise CallError("GatewayTimeout", counter="")
    await asyncio.sleep(latency_seconds(plan, state.rng))
    if fault is Fault.ERROR_503:
        raise CallError("ServiceUnavailable", counter="faults")
    if fault is Fault.ERROR_500:
        raise CallError("InternalError", counter="faults")
    answer = ANSWERERS[action](state.store, params)
    if not answer.ok:
        raise CallError(answer.code, answer.message, answer.http_status, counter="business_errors")
    if fault in BROKEN:
        stats.faults += 1
    else:
        stats.ok += 1
    return success_body(action, answer, request_id), 200, fault


async def handle_api(request: web.Request) -> web.Response:
    """``GET|POST /``: one CAMS RPC call."""
    state = request.app[STATE]
    request_id = new_request_id()
    stats: ActionStats | None = None
    try:
        body = await request.read()
        query, form = await _read_params(request, body)
        params = dict(query + form)
        action = _route(request, params)
        stats = state.stats[action]
        stats.calls += 1
        access_key_id = _authenticate(state, request, body, query, form)
        payload, status, fault = await _serve_call(state, stats, action, access_key_id, params, request_id)
        response = json_response(payload, status, request_id)
        if fault in BROKEN:  # a misbehaving upstream: a 200 whose body is not the answer (not remembered)
            broken = broken_body(fault, state.plan(action), bytes(response.body))  # type: ignore[arg-type]
            return web.Response(body=broken, status=200, headers={
                "Content-Type": "text/html" if fault is Fault.HTML else "application/json;charset=utf-8",
                "x-acs-request-id": request_id})
        state.remember(request_id, bytes(response.body))  # type: ignore[arg-type]
        return response
    except CallError as exc:
        if stats is None:
            state.unrouted += 1
        elif exc.counter:
            setattr(stats, exc.counter, getattr(stats, exc.counter) + 1)
        log.debug("call refused", code=exc.code, status=exc.status)
        response = json_response(error_body(exc.code, exc.message, request_id, request.host), exc.status, request_id)
        state.remember(request_id, bytes(response.body))  # type: ignore[arg-type]
        return response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def upstream_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render anything that escaped a handler in the upstream's JSON shape, never as a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "NotFound" if exc.status == 404 else "InvalidParameter"
        return error_response(request, code, exc.reason or "Bad request.", exc.status)
    except Exception:
        log.exception("simulator handler failed", path=request.path)
        return error_response(request, "InternalError", CODES["InternalError"].message, 500)


def create_app(settings: SimulatorSettings, document: dict[str, Any] | None = None) -> web.Application:
    """The simulator application, with fixtures from ``document`` or from ``settings.fixtures``."""
    store = FixtureStore(document if document is not None else load_document(settings.fixtures))
    app = web.Application(middlewares=[upstream_errors])
    app[STATE] = SimulatorState(settings, store)
    app.router.add_route("GET", "/", handle_api)
    app.router.add_route("POST", "/", handle_api)
    add_admin_routes(app, STATE)
    return app
