"""Validation of a client's call against the action registry, before any quota is spent.

Pure: the action name, the version and the parameter pairs in; the business parameters out, or a
`RequestRejected` naming the rule and the parameter. The rules, in order:

1. the action is named (``MissingParameter.Action``) and known (404 ``InvalidAction.NotFound``);
   a version, if given, is the action's (``InvalidVersion``);
2. at most `MAX_PARAMS` parameters; no name twice (``InvalidParameter.<Name>``);
3. common parameters (signatures, ``Format``, ``RegionId``, …) are dropped: they never change the answer;
4. every other name is one the action documents (``InvalidParameter.Unknown``): an unknown parameter
   might change the answer, so it is refused rather than ignored;
5. values: not empty, at most the parameter's length, no control characters, one of its choices
   (``InvalidParameter.<Name>``);
6. required parameters and one-of groups are present (``MissingParameter.<Name>``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Final

from proxy.actions import ACTIONS, COMMON_PARAMS, ActionSpec
from proxy.errors import RequestRejected

MAX_PARAMS: Final = 32


def _show(text: str, limit: int = 40) -> str:
    """A name or value as it may appear in a message: printable, truncated."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


_ASCII_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _has_control(value: str) -> bool:
    """Control (Cc), format (Cf, e.g. zero-width or bidi marks) or surrogate (Cs) characters."""
    if value.isascii():
        return _ASCII_CONTROL.search(value) is not None
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Cs"} for ch in value)


def resolve_action(name: str | None, version: str | None, actions: Mapping[str, ActionSpec] = ACTIONS) -> ActionSpec:
    if not name:
        raise RequestRejected("The action is not named: send the x-acs-action header, the Action parameter, or "
                              "use /v1/{Action}.", code="MissingParameter.Action")
    spec = actions.get(name)
    if spec is None:
        raise RequestRejected(f"The action {_show(name)} is not served by this gateway; known: "
                              f"{', '.join(actions)}.", code="InvalidAction.NotFound", status=404)
    if version and version != spec.version:
        raise RequestRejected(f"Version {_show(version)} is not valid for {spec.name}; use {spec.version}.",
                              code="InvalidVersion")
    return spec


def validate(spec: ActionSpec, pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The business parameters of a valid call; raise `RequestRejected` otherwise."""
    if len(pairs) > MAX_PARAMS:
        raise RequestRejected(f"At most {MAX_PARAMS} parameters are accepted; got {len(pairs)}.",
                              code="InvalidParameter.TooMany")
    seen: set[str] = set()
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in seen:
            raise RequestRejected(f"The parameter {_show(name)} is given more than once.",
                                  code=f"InvalidParameter.{_show(name)}" if name in spec.by_name
                                  else "InvalidParameter.Duplicate")
        seen.add(name)
        if name in COMMON_PARAMS:
            continue
        param = spec.by_name.get(name)
        if param is None:
            raise RequestRejected(f"The parameter {_show(name)} is not a parameter of {spec.name}; accepted: "
                                  f"{', '.join(sorted(spec.by_name))}.", code="InvalidParameter.Unknown")
        code = f"InvalidParameter.{name}"
        if value == "":
            raise RequestRejected(f"The parameter {name} is empty.", code=code)
        if len(value) > param.max_length:
            raise RequestRejected(f"The parameter {name} is longer than {param.max_length} characters.", code=code)
        if _has_control(value):
            raise RequestRejected(f"The parameter {name} contains control characters.", code=code)
        if param.choices is not None and value not in param.choices:
            raise RequestRejected(f"The parameter {name} must be one of {', '.join(sorted(param.choices))}; got "
                                  f"{_show(value)}.", code=code)
        params[name] = value
    for param in spec.params:
        if param.required and param.name not in params:
            raise RequestRejected(f"The parameter {param.name} is required by {spec.name}.",
                                  code=f"MissingParameter.{param.name}")
    for group in spec.one_of:
        if not any(name in params for name in group):
            raise RequestRejected(f"One of {' or '.join(group)} is required by {spec.name}.",
                                  code=f"MissingParameter.{group[0]}")
    return params
