"""What the upstream answers once a call has passed the gateway: validation, lookup, response body.

Pure over the fixture store: parameters in, `Answer` out. Unknown parameters are ignored, as the
upstream ignores them; the documented required ones are enforced with POP-style ``Missing<Name>``
codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.actions import GET_CHATAPP_TEMPLATE_DETAIL, QUERY_CHATAPP_BIND_WABA
from proxy.simulator.errors import CODES
from proxy.simulator.fixtures import FixtureStore, Space


@dataclass(frozen=True)
class Answer:
    """A business outcome: ``data`` on success, else an error ``code`` with its status and message."""

    http_status: int = 200
    data: dict[str, Any] | None = None
    code: str = "OK"
    message: str = "SUCCESS"

    @property
    def ok(self) -> bool:
        return self.http_status == 200


def _error(code: str, message: str | None = None) -> Answer:
    entry = CODES[code]
    return Answer(entry.http_status, None, code, message or entry.message)


def success_body(action: str, answer: Answer, request_id: str) -> dict[str, Any]:
    """The success body with the seed pages' key order (plus ``Success``, which the SDK models have)."""
    if action == QUERY_CHATAPP_BIND_WABA.name:
        return {"AccessDeniedDetail": "None", "Message": answer.message, "RequestId": request_id,
                "Data": answer.data, "Code": answer.code, "Success": True}
    return {"RequestId": request_id, "Code": answer.code, "Message": answer.message, "Data": answer.data,
            "AccessDeniedDetail": "None", "Success": True}


def _authorised_space(store: FixtureStore, space: Space | None, isv_code: str | None) -> Space | Answer:
    if space is None:
        return _error("Unknown.ResourceOwnerId")
    if not space.subscribed:
        return _error("Product.Unsubscript")
    if isv_code is not None and isv_code != (space.isv_code or None):
        return _error("Ram.PermissionDeny")
    if space.isv_code is not None and isv_code is None:
        return _error("Ram.PermissionDeny")
    return space


def template_detail(store: FixtureStore, params: Mapping[str, str]) -> Answer:
    language = params.get("Language", "")
    if not language:
        return _error("MissingParameter", "Language is mandatory for this action.")
    space_id, waba_id = params.get("CustSpaceId", ""), params.get("CustWabaId", "")
    if not space_id and not waba_id:
        return _error("MissingParameter", "CustSpaceId is mandatory for this action.")
    template_type = params.get("TemplateType")
    choices = GET_CHATAPP_TEMPLATE_DETAIL.by_name["TemplateType"].choices or frozenset()
    if template_type is not None and template_type not in choices:
        return _error("InvalidParameter", f"The specified parameter TemplateType is not valid: {template_type[:40]!r}.")
    found = store.space(space_id) if space_id else store.space_by_waba(waba_id) or store.space(waba_id)
    space = _authorised_space(store, found, params.get("IsvCode"))
    if isinstance(space, Answer):
        return space
    code, name = params.get("TemplateCode"), params.get("TemplateName")
    for template in space.templates:
        if template.get("Language") != language:
            continue
        if code and template.get("TemplateCode") != code:
            continue
        if not code and (not name or template.get("Name") != name):
            continue
        if template_type and template.get("TemplateType", "WHATSAPP") != template_type:
            continue
        return Answer(data=template)
    return _error("Template.NotFound")


def bind_waba(store: FixtureStore, params: Mapping[str, str]) -> Answer:
    space_id = params.get("CustSpaceId")
    found = store.space(space_id) if space_id else store.own_space()
    space = _authorised_space(store, found, params.get("IsvCode"))
    if isinstance(space, Answer):
        return space
    return Answer(data=space.waba)


ANSWERERS: dict[str, Callable[[FixtureStore, Mapping[str, str]], Answer]] = {
    GET_CHATAPP_TEMPLATE_DETAIL.name: template_detail,
    QUERY_CHATAPP_BIND_WABA.name: bind_waba,
}
