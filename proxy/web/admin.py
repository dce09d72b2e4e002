"""The admin API: purge by key, call or tag on every replica, a status document, and the CAMS audit
callback. Authenticated apart from the tenants: ``Authorization: Bearer $PROXY_ADMIN_TOKEN`` (a tenant
token is refused at start-up if it equals it); the callback carries ``$PROXY_CALLBACK_TOKEN`` in
``X-Callback-Token`` (or ``Authorization: Bearer``), or in ``?token=`` because CAMS is configured with a URL, not
headers (the shipped nginx logs paths without query strings, and the gateway never logs a query).
Unset tokens switch the endpoints off (403).

* ``POST /admin/purge`` with ``{"keys": [...], "calls": [{"Action": ..., params}], "tags": {"CustSpaceId":
  [...], "TemplateCode": [...], "WabaId": [...]}}`` (any of the three) answers ``{"Purged": n, "Keys": [...],
  "NotCached": [...]}``: how many entries it removed and their keys, then the keys named by ``keys`` or
  ``calls`` that held no entry (keys found under a tag that held none are left out). All sorted.
* ``GET /admin/status``: counters, cache tiers, queues, the Redis mode.
* ``POST /callbacks/cams/audit?token=...`` with a ChatAppAudit JSON array (V1 or V2 items) answers
  ``{"Purged": n}``, the entries it removed.

A purge that cannot reach Redis answers 503 ``Proxy.PurgeUnavailable`` (this replica's L1 has dropped what it
could): retry it once Redis is back.

Errors are in the upstream's shape; nothing here costs upstream quota.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from proxy.cache.base import CacheError
from proxy.errors import GatewayError, RequestRejected
from proxy.logs import get_logger
from proxy.purge import AuditEvent
from proxy.secret import Secret
from proxy.tags import TAG_KINDS
from proxy.validation import resolve_action, validate
from proxy.web.keys import EDGE_STATS, GATEWAY
from proxy.web.rendering import error_response, request_id_for

MAX_ITEMS: Final = 1000
log = get_logger("proxy.admin")


class AdminDisabled(GatewayError):
    code = "Proxy.AdminDisabled"
    status = 403


class Unauthorized(GatewayError):
    code = "Proxy.Unauthorized"
    status = 401


class PurgeUnavailable(GatewayError):
    code = "Proxy.PurgeUnavailable"
    status = 503


def _json(body: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def callback_token(request: web.Request) -> str:
    """The token an audit callback presents: the ``X-Callback-Token`` header, else ``Authorization: Bearer``, else
    ``?token=`` (CAMS is configured with a URL only; the shipped nginx does not log query strings)."""
    header = request.headers.get("X-Callback-Token")
    if header:
        return header.strip()
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and presented:
        return presented.strip()
    return request.query.get("token", "")


def _check_bearer(request: web.Request, token: Secret | None, setting: str) -> None:
    if token is None:
        raise AdminDisabled(f"The admin API is off: set {setting} to enable it.")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented or not token.matches(presented.strip()):
        raise Unauthorized("A valid admin bearer token is required (Authorization: Bearer ...).")


async def _read_json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(f"The body is not valid JSON: {exc}", code="InvalidParameter.Body") from exc


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RequestRejected(f"{where} must be a list of non-empty strings.", code="InvalidParameter.Body")
    if len(value) > MAX_ITEMS:
        raise RequestRejected(f"{where} has more than {MAX_ITEMS} items.", code="InvalidParameter.Body")
    return list(value)


def purge_request(document: Any, key_for: Any) -> tuple[list[str], dict[str, list[str]]]:
    """(keys, tags) named by a purge body; raises `RequestRejected` with what is wrong."""
    if not isinstance(document, dict) or not document or set(document) - {"keys", "calls", "tags"}:
        raise RequestRejected('The body must be an object with "keys", "calls" and/or "tags".',
                              code="InvalidParameter.Body")
    keys = _strings(document.get("keys", []), '"keys"')
    calls = document.get("calls", [])
    if not isinstance(calls, list) or len(calls) > MAX_ITEMS:
        raise RequestRejected(f'"calls" must be a list of at most {MAX_ITEMS} objects.', code="InvalidParameter.Body")
    for call in calls:
        if not isinstance(call, dict) or not all(isinstance(v, str) for v in call.values()):
            raise RequestRejected('Each of "calls" must be an object of string parameters with an "Action".',
                                  code="InvalidParameter.Body")
        spec = resolve_action(call.get("Action"), call.get("Version"))
        keys.append(key_for(spec, validate(spec, list(call.items()))))
    tags = document.get("tags", {})
    if not isinstance(tags, dict) or set(tags) - set(TAG_KINDS):
        raise RequestRejected(f'"tags" must be an object with any of {", ".join(TAG_KINDS)}.',
                              code="InvalidParameter.Body")
    return keys, {kind: _strings(values, f'"tags.{kind}"') for kind, values in tags.items()}


def audit_events(document: Any) -> list[AuditEvent]:
    """The events of a ChatAppAudit push (a JSON array); raises `RequestRejected` if it is not one."""
    if not isinstance(document, list) or len(document) > MAX_ITEMS:
        raise RequestRejected(f"An audit callback is a JSON array of at most {MAX_ITEMS} items.",
                              code="InvalidParameter.Body")
    events = []
    for item in document:
        if not isinstance(item, dict) or not isinstance(item.get("WabaId"), str) or not item["WabaId"]:
            raise RequestRejected("Each audit item needs a WabaId.", code="InvalidParameter.Body")
        events.append(AuditEvent(item["WabaId"], str(item.get("TemplateCode") or ""),
                                 str(item.get("Type") or "template")))
    return events


class AdminRoutes:
    def __init__(self, admin_token: Secret | None, callback_token: Secret | None) -> None:
        self._admin = admin_token
        self._callback = callback_token

    def install(self, app: web.Application, wrap_admin: Any = None) -> None:
        """Add the routes; ``wrap_admin`` wraps the ``/admin/*`` handlers (the gateway's ops-port gate)."""
        wrap = wrap_admin or (lambda handler: handler)
        app.router.add_post("/admin/purge", wrap(self._guard(self.purge, admin=True)))
        app.router.add_get("/admin/status", wrap(self._guard(self.status, admin=True)))
        app.router.add_post("/callbacks/cams/audit", self._guard(self.audit, admin=False))

    def _guard(self, handler: Any, *, admin: bool) -> Any:
        async def guarded(request: web.Request) -> web.Response:
            request_id = request_id_for(request.headers.get("X-Request-Id"))
            try:
                if admin:
                    _check_bearer(request, self._admin, "PROXY_ADMIN_TOKEN")
                else:
                    self._check_callback(request)
                response: web.Response = await handler(request)
            except GatewayError as exc:
                log.info("admin request refused", path=request.path, code=exc.code, request_id=request_id)
                return error_response(request_id, exc)
            response.headers["X-Request-Id"] = request_id
            return response

        return guarded

    def _check_callback(self, request: web.Request) -> None:
        if self._callback is None:
            raise AdminDisabled("The audit callback is off: set PROXY_CALLBACK_TOKEN to enable it.")
        if not self._callback.matches(callback_token(request)):
            raise Unauthorized("A valid callback token is required (X-Callback-Token, Authorization: Bearer, or "
                               "?token= where only a URL can be configured).")

    async def purge(self, request: web.Request) -> web.Response:
        gateway = request.app[GATEWAY]
        keys, tags = purge_request(await _read_json(request), gateway.readthrough.key_for)
        try:
            result = await gateway.purger.purge(keys, tags)
        except CacheError as exc:
            raise PurgeUnavailable(f"The purge could not reach the cache: {exc}. Retry when Redis is back.") from exc
        log.info("purged", purged=len(result.purged), not_cached=len(result.not_cached),
                 tags={kind: len(values) for kind, values in tags.items()})
        return _json({"Purged": len(result.purged), "Keys": result.purged, "NotCached": result.not_cached})

    async def audit(self, request: web.Request) -> web.Response:
        events = audit_events(await _read_json(request))
        try:
            purged = await request.app[GATEWAY].purger.audit(events)
        except CacheError as exc:
            raise PurgeUnavailable(f"The purge could not reach the cache: {exc}.") from exc
        log.info("audit callback", events=len(events), purged=len(purged))
        return _json({"Purged": len(purged)})

    async def status(self, request: web.Request) -> web.Response:
        return _json(status_document(request.app))


def status_document(app: web.Application) -> dict[str, Any]:
    """What an operator's status view reads (`proxy.gateway.Gateway.status`, with the HTTP edge's counters)."""
    return app[GATEWAY].status(dataclasses.asdict(app[EDGE_STATS]))
