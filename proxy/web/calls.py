"""Turning an HTTP request into a validated call: action, parameters, tenant, deadline.

Accepted shapes (all share one cache entry for the same parameters):

* ``POST /`` or ``GET /`` with the action in ``x-acs-action`` (what the SDK sends, V3) or ``Action``;
* ``GET|POST /v1/{Action}?...`` for curl users;
* business parameters in the query or in an ``application/x-www-form-urlencoded`` body.

Signatures and common parameters are accepted and dropped; nothing from the caller is forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from aiohttp import web

from proxy.actions import ActionSpec
from proxy.admission.fair import Priority
from proxy.errors import RequestRejected
from proxy.tenants import CallerView
from proxy.validation import resolve_action, validate

FORM_TYPE: Final = "application/x-www-form-urlencoded"
DEADLINE_HEADER: Final = "X-Request-Timeout-Ms"
PRIORITY_HEADER: Final = "X-Proxy-Priority"


@dataclass(frozen=True)
class Call:
    spec: ActionSpec
    params: dict[str, str]
    view: CallerView


def _pairs(raw: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(raw, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise RequestRejected("The parameters are not valid UTF-8.", code="InvalidParameter.Encoding") from exc


def _one(values: list[str], name: str) -> str | None:
    distinct = set(values)
    if len(distinct) > 1:
        raise RequestRejected(f"The {name} is given with conflicting values.", code=f"InvalidParameter.{name}")
    return next(iter(distinct), None)


async def parse_call(request: web.Request) -> Call:
    body = await request.read()
    query = _pairs(request.rel_url.raw_query_string)
    form: list[tuple[str, str]] = []
    if body:
        if request.content_type != FORM_TYPE:
            raise RequestRejected(f"A request body must be {FORM_TYPE}; got {request.content_type[:60]}.",
                                  code="InvalidParameter.Body", status=415)
        try:
            form = _pairs(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestRejected("The body is not valid UTF-8.", code="InvalidParameter.Encoding") from exc
    pairs = query + form
    names = [v for k, v in pairs if k == "Action"]
    if request.path.startswith("/v1/"):
        names.append(request.path[4:])
    if request.headers.get("x-acs-action"):
        names.append(request.headers["x-acs-action"])
    versions = [v for k, v in pairs if k == "Version"]
    if request.headers.get("x-acs-version"):
        versions.append(request.headers["x-acs-version"])
    spec = resolve_action(_one(names, "Action"), _one(versions, "Version"))
    params = validate(spec, pairs)
    view = CallerView(request.method, tuple(request.headers.items()), tuple(query), tuple(form), body)
    return Call(spec, params, view)


def deadline_seconds(request: web.Request, default: float) -> float:
    """The request's own budget: the gateway's deadline, or less if the caller asks (``X-Request-Timeout-Ms``)."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise RequestRejected(f"{DEADLINE_HEADER} must be a positive whole number of milliseconds.",
                              code=f"InvalidParameter.{DEADLINE_HEADER}")
    return min(default, int(raw) / 1000.0)


def deadline_asked(request: web.Request, budget: float, default: float) -> str:
    """How ``budget`` (from `deadline_seconds`) was set, named as a too-short deadline's message names it."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is not None and budget < default:
        return f"{DEADLINE_HEADER} {int(raw)}"
    return f"The gateway's deadline (--deadline-s {default:g})"


def priority_of(request: web.Request) -> Priority:
    """``X-Proxy-Priority: warm`` puts the caller's misses below interactive ones and refreshes (the warm-up
    command uses it); ``interactive`` or no header is the default. A caller can only lower its own priority."""
    raw = request.headers.get(PRIORITY_HEADER)
    if raw is None or raw.lower() == "interactive":
        return Priority.INTERACTIVE
    if raw.lower() == "warm":
        return Priority.WARM
    raise RequestRejected(f"{PRIORITY_HEADER} must be interactive or warm.", code=f"InvalidParameter.{PRIORITY_HEADER}")
