"""The call handler: ``GET|POST /`` and ``/v1/{Action}``, one CAMS call each, with the request id, the
access-log line and every error rendered in the upstream shape. It holds the short hit path (the call memo and the
pre-rendered hit headers) and hands everything else to the read-through flow of the `Gateway` it is bound to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from multidict import istr

from proxy.access_log import AccessLog
from proxy.actions import ActionSpec
from proxy.admission.queue import UpstreamQueue
from proxy.answer import Answer
from proxy.bounded import BoundedMap
from proxy.cache import CacheError, Entry
from proxy.errors import GatewayError, RequestRejected
from proxy.gateway import Gateway
from proxy.logs import get_logger
from proxy.readthrough import ReadThrough
from proxy.tenants import ANONYMOUS, TenantDirectory, TenantResolver, header_label, query_label
from proxy.web.calls import deadline_asked, parse_call, priority_of
from proxy.web.calls import deadline_seconds as request_deadline
from proxy.web.headers import (
    RATE_LIMIT_REUSE_S,
    REQUEST_ID,
    HitHeaders,
    age,
    cache_status,
    rate_limit,
    rate_limit_policy,
)
from proxy.web.rendering import error_response, new_request_id, request_id_for

log = get_logger("proxy.access")


class CallHandler:
    """``GET|POST /`` and ``/v1/{Action}``: one CAMS call, with the request id, the access-log line and
    every error rendered in the upstream shape.

    The hit path is kept short on purpose (see docs/benchmarks.md): a request whose path, raw query and
    action/version headers were seen before (and that has no body) reuses the validated call and its
    cache key from a bounded memo, so a repeated hit costs a dict lookup, a cache lookup and a response.
    """

    def __init__(self, access_log: AccessLog | None) -> None:
        self._access_log = access_log
        self._memo: BoundedMap[tuple[str, str | None, str | None], MemoCall] = BoundedMap(0)
        self._memo_read = self._memo.mapping  # read without a method call on the hit path
        self._hit_headers = HitHeaders(0)
        self._readthrough: ReadThrough
        self._resolver: TenantResolver
        self._deadline_s = 0.0
        self._queues: dict[str, UpstreamQueue] = {}
        self._policies: dict[str, str] = {}
        self._rate_limits: dict[str, tuple[float, str]] = {}
        self._directory = TenantDirectory(require_authentication=True)  # until bind(): the full path handles all
        self._access_key_id: Callable[[], str] = str

    def bind(self, gateway: Gateway) -> None:
        """Attach the gateway opened at start-up (the hit path reads its parts without app lookups); the side
        caches get their shares of ``--memory-max-bytes`` and report their size to the gateway's status."""
        shares = gateway.memory_shares
        self._memo = BoundedMap(shares.call_memo)
        self._memo_read = self._memo.mapping
        self._hit_headers = HitHeaders(shares.hit_headers)
        self._readthrough = gateway.readthrough
        self._resolver = gateway.tenants
        self._deadline_s = gateway.settings.deadline_s
        self._queues = gateway.queues
        self._policies = {name: rate_limit_policy(queue.rate) for name, queue in gateway.queues.items()}
        self._directory = gateway.tenants.directory  # replaced in place on a tenants-file reload
        self._access_key_id = gateway.readthrough.access_key_id
        gateway.side_caches = self.side_cache_bytes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic() if self._access_log is not None else 0.0
        headers = request.headers
        incoming = headers.get(REQUEST_ID)
        request_id = request_id_for(incoming) if incoming else new_request_id()
        fields: dict[str, Any] = {}
        try:
            # The short path, inline on purpose (each call costs on every hit): a call seen before (validated
            # and keyed, see `MemoCall`) with no body and no authentication to check.
            call = None
            if (not self._directory.require_authentication and request.method in SHORT_PATH_METHODS
                    and not request.body_exists):
                call = self._memo_read.get((request.raw_path, headers.get(ACS_ACTION), headers.get(ACS_VERSION)))
            if call is not None and call.access_key_id == self._access_key_id():
                tenant = header_label(headers) or call.query_label or ANONYMOUS
                readthrough = self._readthrough
                entry = readthrough.cache.peek(call.key)
                if entry is None:
                    try:
                        entry = await readthrough.cache.get(call.key)
                    except CacheError:
                        entry = None  # the full path below logs and counts it
                now = time.time()
                if entry is not None and now < entry.fresh_until:
                    readthrough.record_hit(call.key, call.spec, call.params, entry, tenant)
                    access_log = self._access_log
                    if access_log is not None:
                        access_log.record(now, request_id, request.method, request.path, entry.status,
                                          round((time.monotonic() - started) * 1000, 2),
                                          {"action": call.spec.name, "tenant": tenant, "cache": "HIT"})
                    # No X-Cache-Key on fresh hits: each header costs on every hit, and the key is on the answer
                    # that filled the entry (the purge API also takes the call itself).
                    ready = self._hit_headers.lookup(call.key, entry, now)
                    if ready is None:
                        name = call.spec.name
                        ready = self._hit_headers.render(call.key, entry, now, self._policies[name],
                                                         self._rate_limit(name))
                    response = web.Response(body=entry.body, status=entry.status, headers=ready)
                    response.headers.add(REQUEST_ID, request_id)
                    return response
                response = await self._answer(request, fields, request_id, found=(entry,))
            else:
                response = await self._answer(request, fields, request_id)
        except GatewayError as exc:
            fields["code"] = exc.code
            response = error_response(request_id, exc)
        except web.HTTPException as exc:
            rejected = _from_http_exception(exc)
            fields["code"] = rejected.code
            response = error_response(request_id, rejected)
        except Exception:
            log.exception("request failed", request_id=request_id)
            response = error_response(request_id, GatewayError("The gateway failed to handle the request."))
        self._readthrough.metrics.count_request(fields.get("action", "invalid"), fields.get("cache", "ERROR"),
                                                response.status, fields.get("tenant", ANONYMOUS))
        if self._access_log is not None:
            self._access_log.record(time.time(), request_id, request.method, request.path, response.status,
                                    round((time.monotonic() - started) * 1000, 2), fields)
        return response

    def side_cache_bytes(self) -> dict[str, int]:
        """Bytes counted by the handler's two side caches (the hit headers, the call memo)."""
        return {"hit_headers": self._hit_headers.bytes_used, "call_memo": self._memo.bytes_used}

    def _rate_limit(self, action: str) -> str:
        """The ``RateLimit`` header, rebuilt at most every `RATE_LIMIT_REUSE_S` per action."""
        now = asyncio.get_running_loop().time()
        built_at, header = self._rate_limits.get(action, (-1.0, ""))
        if now - built_at > RATE_LIMIT_REUSE_S:
            header = rate_limit(*self._queues[action].rate_limit(now))
            self._rate_limits[action] = (now, header)
        return header

    def _answer_response(self, answer: Answer, request_id: str, call: MemoCall) -> web.Response:
        entry = answer.entry
        now = time.time()
        name = call.spec.name
        return web.Response(body=entry.body, status=entry.status, headers={
            "Content-Type": entry.content_type, "X-Cache": answer.cache.value, "Age": age(entry.fetched_at, now),
            "Cache-Status": cache_status(answer, now), "X-Request-Id": request_id, "X-Cache-Key": call.key,
            "RateLimit-Policy": self._policies[name], "RateLimit": self._rate_limit(name)})

    async def _answer(self, request: web.Request, fields: dict[str, Any], request_id: str,
                      found: tuple[Entry | None] | None = None) -> web.Response:
        if request.method not in ("GET", "POST"):
            raise RequestRejected(f"Method {request.method} is not allowed; use GET or POST.",
                                  code="InvalidParameter.Method", status=405)
        headers = request.headers
        memo_key = (request.raw_path, headers.get(ACS_ACTION), headers.get(ACS_VERSION))
        call = None if request.body_exists else self._memo.get(memo_key)
        readthrough = self._readthrough
        if call is None or call.access_key_id != readthrough.access_key_id():
            parsed = await parse_call(request)
            call = MemoCall(parsed.spec, parsed.params, readthrough.key_for(parsed.spec, parsed.params),
                            query_label(parsed.view.query), readthrough.access_key_id())
            if not request.body_exists:
                self._memo.put(memo_key, call, call.size + 2 * sum(len(part or "") for part in memo_key))
            view = parsed.view
        else:
            view = None
        fields["action"] = call.spec.name
        resolver = self._resolver
        if resolver.directory.require_authentication:
            if view is None:
                view = (await parse_call(request)).view
            fields["tenant"] = await resolver.identify(view)
            scoped = resolver.directory.tenants.get(fields["tenant"])
            if scoped is not None:
                scoped.check_scope(call.params)  # before the cache is read: outside its scope it learns nothing
        else:
            fields["tenant"] = header_label(headers) or call.query_label or ANONYMOUS
        loop = asyncio.get_running_loop()
        default = self._deadline_s
        budget = request_deadline(request, default)
        answer = await readthrough.fetch(call.spec, call.params, loop.time() + budget, key=call.key,
                                         found=found[0] if found else None, looked_up=found is not None,
                                         tenant=fields["tenant"], priority=priority_of(request),
                                         budget_s=budget, asked=deadline_asked(request, budget, default))
        fields["cache"] = answer.cache.value
        if answer.fill is not None:
            fields["queue_wait_ms"] = round(answer.fill.queue_wait * 1000, 2)
            fields["upstream_ms"] = round(answer.fill.upstream_time * 1000, 2)
            fields["attempts"] = answer.fill.attempts
            fields["outcome"] = answer.fill.outcome.value
        return self._answer_response(answer, request_id, call)


#: What one memoised call costs besides its strings (measured with tracemalloc: ~800 bytes in all for a typical
#: 150-character target).
MEMO_OVERHEAD: Final = 500
SHORT_PATH_METHODS: Final = frozenset({"GET", "POST"})
ACS_ACTION: Final = istr("x-acs-action")
ACS_VERSION: Final = istr("x-acs-version")


@dataclass(frozen=True, slots=True)
class MemoCall:
    spec: ActionSpec
    params: dict[str, str]
    key: str
    query_label: str | None
    access_key_id: str

    @property
    def size(self) -> int:
        """Bytes it is counted as in the call memo (its strings twice over for object headers, plus overhead)."""
        strings = len(self.key) + len(self.query_label or "") + sum(len(k) + len(v) for k, v in self.params.items())
        return MEMO_OVERHEAD + 2 * strings


HANDLER: Final = web.AppKey("call_handler", CallHandler)


def _from_http_exception(exc: web.HTTPException) -> RequestRejected:
    code = {404: "InvalidAction.NotFound", 405: "InvalidParameter.Method",
            413: "InvalidRequest.TooLarge"}.get(exc.status, "InvalidRequest")
    return RequestRejected(exc.reason or "Bad request.", code=code, status=max(exc.status, 400))
