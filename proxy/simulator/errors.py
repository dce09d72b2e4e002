"""Error codes the simulator answers with, as a table, and the upstream gateway's error body.

Business codes and their messages are the seed pages' (all HTTP 400). Gateway codes come from the
POP gateway as Alibaba Cloud's common error codes document them. ``Template.NotFound`` is the simulator's own
name for "no such template": the real code is not documented.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class ErrorCode:
    code: str
    http_status: int
    message: str


_CODES: Final = (
    ErrorCode("Product.Unsubscript", 400, "You have not subscribed to the specified product."),
    ErrorCode("Ram.PermissionDeny", 400, "You are not authorized to perform the operation."),
    ErrorCode("System.LimitControl", 400, "The system is under flow control."),
    ErrorCode("Unknown.ResourceOwnerId", 400, "The resource does not belong to the current user."),
    ErrorCode("Template.NotFound", 400, "The specified template does not exist."),
    ErrorCode("InvalidAction.NotFound", 404, "Specified api is not found, please check your url and method."),
    ErrorCode("InvalidVersion", 400, "Specified parameter Version is not valid."),
    ErrorCode("InvalidParameter", 400, "A parameter is not valid."),
    ErrorCode("MissingParameter", 400, "A mandatory parameter is not supplied."),
    ErrorCode("ServiceUnavailable", 503, "The request has failed due to a temporary failure of the server."),
    ErrorCode("InternalError", 500,
              "The request processing has failed due to some unknown error, exception or failure."),
    ErrorCode("GatewayTimeout", 504, "The backend did not answer in time."),
    ErrorCode("NotFound", 404, "The requested resource does not exist."),
)
CODES: Final = {entry.code: entry for entry in _CODES}


def new_request_id() -> str:
    """Upstream-style request id: an upper-case UUID."""
    return str(uuid.uuid4()).upper()


def error_body(code: str, message: str, request_id: str, host_id: str) -> dict[str, Any]:
    """The upstream gateway's error shape (``RequestId``, ``HostId``, ``Code``, ``Message``, ``Recommend``)."""
    return {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=cams&requestId={request_id}",
    }
