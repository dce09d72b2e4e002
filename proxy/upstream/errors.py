"""What an upstream answer means, as one table, and the upstream's exception tree.

Every HTTP answer is classified into one `Outcome`; the read-through path decides from the outcome
alone whether to cache (`proxy.freshness.RULES`), retry or pass the answer on::

    SUCCESS         HTTP 2xx and Code "OK"             cache for the action's TTL, answer
    NOT_FOUND       Unknown.ResourceOwnerId,           cache for the negative TTL, answer
                    Template.NotFound
    DENIED          Ram.PermissionDeny,                cache for the negative TTL, answer
                    Product.Unsubscript
    BUSINESS_ERROR  any other answer about the data    answer as is, do not cache
                    (2xx with a non-OK Code, other 4xx)
    THROTTLED       System.LimitControl, Throttling*,  count, retry through the queue, never cache
                    HTTP 429
    AUTH_ERROR      the gateway's own key or signature answer as is, never cache, never retry
                    was refused (SignatureDoesNotMatch, InvalidAccessKeyId.*, …)
    FAULT           HTTP 5xx, or an invalid answer:    retry through the queue, never cache; an
                    a body that is not a JSON object,  invalid answer is never passed on (after the
                    or a 2xx without ``Code``          attempts: 502 Proxy.UpstreamInvalidAnswer)

Exceptions (no HTTP answer at all)::

    UpstreamError
    ├── UpstreamTimeout       no complete answer within the client's timeout
    ├── UpstreamUnreachable   connection refused, reset, DNS or TLS failure
    └── UpstreamInvalidAnswer an answer over the size bound (read no further; the connection is dropped)
    SendWindowMissed          not sent at all: too late for its slot (not an upstream error)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

import orjson


class UpstreamError(Exception):
    """The upstream gave no HTTP answer."""


class UpstreamTimeout(UpstreamError):
    """No complete answer within the timeout."""


class UpstreamUnreachable(UpstreamError):
    """The connection failed (refused, reset, DNS, TLS)."""


class UpstreamInvalidAnswer(UpstreamError):
    """An answer that cannot be passed on: over the size bound, or (classified) not a JSON object with Code."""


#: The code of an answer that is not the upstream's shape (classified as a FAULT, never passed on).
INVALID_ANSWER: Final = "Proxy.UpstreamInvalidAnswer"


class SendWindowMissed(Exception):
    """The call was not sent: it could no longer leave within its slot's send window (the caller asks
    for a new slot; no quota was spent)."""


class Outcome(Enum):
    SUCCESS = "success"
    NOT_FOUND = "not_found"
    DENIED = "denied"
    BUSINESS_ERROR = "business_error"
    THROTTLED = "throttled"
    AUTH_ERROR = "auth_error"
    FAULT = "fault"

    @property
    def retryable(self) -> bool:
        return self in RETRYABLE


RETRYABLE: Final = frozenset({Outcome.THROTTLED, Outcome.FAULT})

#: Codes by outcome. Codes not listed fall back on the HTTP status (see `classify`).
CODE_OUTCOMES: Final[dict[str, Outcome]] = {
    "OK": Outcome.SUCCESS,
    "Unknown.ResourceOwnerId": Outcome.NOT_FOUND,
    "Template.NotFound": Outcome.NOT_FOUND,
    "Ram.PermissionDeny": Outcome.DENIED,
    "Product.Unsubscript": Outcome.DENIED,
    "System.LimitControl": Outcome.THROTTLED,
    "Throttling": Outcome.THROTTLED,
    "Throttling.User": Outcome.THROTTLED,
    "Throttling.Api": Outcome.THROTTLED,
    "SignatureDoesNotMatch": Outcome.AUTH_ERROR,
    "IncompleteSignature": Outcome.AUTH_ERROR,
    "InvalidAccessKeyId.NotFound": Outcome.AUTH_ERROR,
    "InvalidAccessKeyId.Inactive": Outcome.AUTH_ERROR,
    "InvalidTimeStamp.Expired": Outcome.AUTH_ERROR,
    "InvalidTimeStamp.Format": Outcome.AUTH_ERROR,
    "SignatureNonceUsed": Outcome.AUTH_ERROR,
    "InvalidSecurityToken.Expired": Outcome.AUTH_ERROR,
    "InvalidSecurityToken.MismatchWithAccessKey": Outcome.AUTH_ERROR,
    "MissingSecurityToken": Outcome.AUTH_ERROR,
    "Forbidden.RAM": Outcome.AUTH_ERROR,
    "ServiceUnavailable": Outcome.FAULT,
    "InternalError": Outcome.FAULT,
    "GatewayTimeout": Outcome.FAULT,
}


@dataclass(frozen=True, slots=True)
class Classified:
    outcome: Outcome
    code: str


def classify(status: int, body: bytes) -> Classified:
    """The outcome of one HTTP answer from the upstream."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Classified(Outcome.FAULT, INVALID_ANSWER)
    if not isinstance(parsed, dict) or (200 <= status < 300 and "Code" not in parsed):
        return Classified(Outcome.FAULT, INVALID_ANSWER)
    code = str(parsed.get("Code", ""))
    if status == 429 or code.startswith("Throttling"):
        return Classified(Outcome.THROTTLED, code or "Throttling")
    by_code = CODE_OUTCOMES.get(code)
    if by_code is Outcome.SUCCESS:
        ok = 200 <= status < 300
        return Classified(Outcome.SUCCESS if ok else Outcome.BUSINESS_ERROR, code)
    if by_code in (Outcome.NOT_FOUND, Outcome.DENIED) and status >= 500:
        return Classified(Outcome.FAULT, code)
    if by_code is not None:
        return Classified(by_code, code)
    if status >= 500:
        return Classified(Outcome.FAULT, code or f"HTTP{status}")
    return Classified(Outcome.BUSINESS_ERROR, code or f"HTTP{status}")
