"""Purge tags: which business ids a cached answer belongs to, so an operator (or a CAMS audit callback)
can drop every entry of a customer space, a template or a WABA without knowing cache keys and
without ``SCAN``.

Pure: the tags of an answer are a function of its action, its parameters and its body.

| tag | set on |
| --- | --- |
| ``space:<CustSpaceId>`` | every answer called with that CustSpaceId |
| ``template:<TemplateCode>`` | template answers called with that code (every language) |
| ``waba:<WabaId>`` | WABA answers (``Data.Id``), and template answers called with ``CustWabaId`` |

A WABA answer also links its WABA id to the CustSpaceId it was asked for (`waba_link`): audit callbacks
name a ``WabaId``, not a ``CustSpaceId``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson

from proxy.actions import GET_CHATAPP_TEMPLATE_DETAIL, QUERY_CHATAPP_BIND_WABA

#: The purge API's tag names and the prefix each maps to.
TAG_KINDS: Final[Mapping[str, str]] = {"CustSpaceId": "space", "TemplateCode": "template", "WabaId": "waba"}


def tag(kind: str, value: str) -> str:
    """``tag("CustSpaceId", "123")`` is ``"space:123"``. Raises KeyError for an unknown kind."""
    return f"{TAG_KINDS[kind]}:{value}"


def waba_id_of(body: bytes) -> str | None:
    """``Data.Id`` of a QueryChatappBindWaba answer, or None if the body has none."""
    try:
        data = orjson.loads(body).get("Data")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    value = data.get("Id") if isinstance(data, dict) else None
    return str(value) if value not in (None, "") else None


def tags_for(action: str, params: Mapping[str, str], body: bytes) -> list[str]:
    """The purge tags of a stored answer."""
    found: list[str] = []
    if space := params.get("CustSpaceId"):
        found.append(f"space:{space}")
    if action == GET_CHATAPP_TEMPLATE_DETAIL.name:
        if code := params.get("TemplateCode"):
            found.append(f"template:{code}")
        if waba := params.get("CustWabaId"):
            found.append(f"waba:{waba}")
    elif action == QUERY_CHATAPP_BIND_WABA.name and (waba := waba_id_of(body)):
        found.append(f"waba:{waba}")
    return found


def waba_link(action: str, params: Mapping[str, str], body: bytes) -> tuple[str, str] | None:
    """(WabaId, CustSpaceId) learnt from a WABA answer asked with a CustSpaceId, else None."""
    if action != QUERY_CHATAPP_BIND_WABA.name or not (space := params.get("CustSpaceId")):
        return None
    waba = waba_id_of(body)
    return (waba, space) if waba else None
