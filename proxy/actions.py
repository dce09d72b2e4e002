"""The registry of upstream read actions: one `ActionSpec` per CAMS action the project knows.

Adding an action is adding an entry to `ACTIONS`. Both the gateway (validation, cache keys, caps,
TTLs) and the simulator (caps, parameter names) read this table, so they cannot drift apart.

Caps are the documented per-account QPS limits from the seed pages: the upstream throttles with
``System.LimitControl`` above them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

API_VERSION: Final = "2020-06-06"

#: Parameters the SDK or a caller may add that never change the answer: accepted, never part of a
#: cache key, never forwarded upstream (the POP common parameters of the V1 and V3 signatures).
COMMON_PARAMS: Final = frozenset(
    {
        "Action",
        "Version",
        "Format",
        "RegionId",
        "AccessKeyId",
        "SecurityToken",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "SignatureType",
        "Timestamp",
        "OwnerId",
        "ResourceOwnerAccount",
        "ResourceOwnerId",
    }
)


@dataclass(frozen=True)
class ParamSpec:
    """One business parameter: name, whether it is required, allowed values, length limit, and what it
    means (for the README's parameter tables, `proxy.reference`)."""

    name: str
    required: bool = False
    choices: frozenset[str] | None = None
    max_length: int = 128
    deprecated_for: str | None = None
    meaning: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """One upstream read action.

    ``one_of`` lists groups of which at least one parameter must be given (a template is named by
    ``TemplateCode`` or ``TemplateName``; a space by ``CustSpaceId`` or the deprecated ``CustWabaId``).
    """

    name: str
    cap_per_second: int
    params: tuple[ParamSpec, ...]
    one_of: tuple[tuple[str, ...], ...] = ()
    version: str = API_VERSION
    ttl_seconds: float = 300.0
    summary: str = ""
    by_name: Mapping[str, ParamSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", MappingProxyType({p.name: p for p in self.params}))

    @property
    def param_names(self) -> frozenset[str]:
        return frozenset(self.by_name)


GET_CHATAPP_TEMPLATE_DETAIL: Final = ActionSpec(
    name="GetChatappTemplateDetail",
    cap_per_second=5,
    params=(
        ParamSpec("Language", required=True, max_length=16, meaning="the template's language code, e.g. `en_US`"),
        ParamSpec("CustSpaceId", max_length=64,
                  meaning="the customer space (an ISV sub-customer's SpaceId, or a direct customer's instance id)"),
        ParamSpec("CustWabaId", max_length=64, deprecated_for="CustSpaceId",
                  meaning="the WABA id, the older way to name the space"),
        ParamSpec("TemplateCode", max_length=64, meaning="the template's code, as CAMS assigned it"),
        ParamSpec("TemplateName", max_length=512, meaning="the template's name, e.g. `hello_whatsapp`"),
        ParamSpec("TemplateType", choices=frozenset({"WHATSAPP", "VIBER"}), meaning="the channel of the template"),
        ParamSpec("IsvCode", max_length=128,
                  meaning="the ISV's check code proving it was authorised for the sub-customer's space"),
    ),
    one_of=(("CustSpaceId", "CustWabaId"), ("TemplateCode", "TemplateName")),
    ttl_seconds=300.0,
    summary="one message template: its category, audit status, quality score and components",
)

QUERY_CHATAPP_BIND_WABA: Final = ActionSpec(
    name="QueryChatappBindWaba",
    cap_per_second=10,
    params=(
        ParamSpec("CustSpaceId", max_length=64,
                  meaning="the customer space (an ISV sub-customer's SpaceId); unset: the account's own"),
        ParamSpec("IsvCode", max_length=128,
                  meaning="the ISV's check code proving it was authorised for the sub-customer's space"),
    ),
    ttl_seconds=600.0,
    summary="the WhatsApp Business Account (WABA) bound to a customer space: its id, name, review status",
)

ACTIONS: Final[Mapping[str, ActionSpec]] = MappingProxyType(
    {spec.name: spec for spec in (GET_CHATAPP_TEMPLATE_DETAIL, QUERY_CHATAPP_BIND_WABA)}
)
