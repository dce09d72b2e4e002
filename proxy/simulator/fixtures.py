"""The simulator's data: customer spaces, each with a WABA and templates, and their mutations.

The document format (also what ``--fixtures FILE`` loads and ``/__sim/fixtures`` shows)::

    {"spaces": [{"CustSpaceId": "…", "IsvCode": null | "…", "Subscribed": true,
                 "Waba": {…QueryChatappBindWaba Data…},
                 "Templates": [{…GetChatappTemplateDetail Data…}, …]}]}

A template is identified by ``(TemplateCode, Language)`` within its space. Objects keep their key
order, so answers have the seed pages' exact shapes. The default set is ``default_fixtures.json``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson


class FixtureError(ValueError):
    """A fixture document or change that does not fit the format."""


@dataclass
class Space:
    space_id: str
    isv_code: str | None
    subscribed: bool
    waba: dict[str, Any]
    templates: list[dict[str, Any]]

    def to_document(self) -> dict[str, Any]:
        return {
            "CustSpaceId": self.space_id,
            "IsvCode": self.isv_code,
            "Subscribed": self.subscribed,
            "Waba": self.waba,
            "Templates": self.templates,
        }

    def find_template(self, code: str, language: str) -> dict[str, Any] | None:
        for template in self.templates:
            if template.get("TemplateCode") == code and template.get("Language") == language:
                return template
        return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FixtureError(message)


def _check_template(space_id: str, template: Any) -> dict[str, Any]:
    _require(isinstance(template, dict), f"space {space_id}: each template must be an object")
    for key in ("TemplateCode", "Language", "Name"):
        _require(isinstance(template.get(key), str) and template[key] != "",
                 f"space {space_id}: a template lacks a string {key}")
    return dict(template)


def _parse_space(raw: Any) -> Space:
    _require(isinstance(raw, dict), "each space must be an object")
    space_id = raw.get("CustSpaceId")
    _require(isinstance(space_id, str) and space_id != "", "each space needs a string CustSpaceId")
    isv_code = raw.get("IsvCode")
    _require(isv_code is None or isinstance(isv_code, str), f"space {space_id}: IsvCode must be a string or null")
    subscribed = raw.get("Subscribed", True)
    _require(isinstance(subscribed, bool), f"space {space_id}: Subscribed must be true or false")
    waba = raw.get("Waba")
    _require(isinstance(waba, dict) and isinstance(waba.get("Id"), str),
             f"space {space_id}: Waba must be an object with a string Id")
    templates = raw.get("Templates", [])
    _require(isinstance(templates, list), f"space {space_id}: Templates must be a list")
    parsed = [_check_template(space_id, t) for t in templates]
    seen = {(t["TemplateCode"], t["Language"]) for t in parsed}
    _require(len(seen) == len(parsed), f"space {space_id}: (TemplateCode, Language) pairs must be unique")
    return Space(space_id, isv_code, subscribed, dict(waba), parsed)


def parse_document(document: Any) -> list[Space]:
    _require(isinstance(document, dict) and isinstance(document.get("spaces"), list),
             'fixtures must be an object with a "spaces" list')
    spaces = [_parse_space(raw) for raw in document["spaces"]]
    ids = [space.space_id for space in spaces]
    _require(len(set(ids)) == len(ids), "CustSpaceId values must be unique")
    _require(len(spaces) > 0, "fixtures need at least one space")
    return spaces


def load_document(path: Path | None) -> dict[str, Any]:
    """The fixture document at ``path``, or the built-in default set."""
    try:
        raw = path.read_bytes() if path else resources.files(__package__).joinpath(
            "default_fixtures.json").read_bytes()
        document = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise FixtureError(f"cannot read fixtures {path}: {exc}") from exc
    parse_document(document)
    return dict(document)


class FixtureStore:
    """Spaces in memory, looked up by the answering code and changed through the admin API."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._initial = copy.deepcopy(dict(document))
        self.spaces: list[Space] = parse_document(copy.deepcopy(dict(document)))

    # ----------------------------------------------------------------------------- lookups
    def space(self, space_id: str) -> Space | None:
        for space in self.spaces:
            if space.space_id == space_id:
                return space
        return None

    def space_by_waba(self, waba_id: str) -> Space | None:
        for space in self.spaces:
            if space.waba.get("Id") == waba_id:
                return space
        return None

    def own_space(self) -> Space:
        """The caller's own space, for calls that name none: the first one in the document."""
        return self.spaces[0]

    # ----------------------------------------------------------------------------- changes
    def document(self) -> dict[str, Any]:
        return {"spaces": [space.to_document() for space in self.spaces]}

    def replace(self, document: Any) -> None:
        self.spaces = parse_document(copy.deepcopy(document))

    def restore(self) -> None:
        self.spaces = parse_document(copy.deepcopy(self._initial))

    def _existing(self, space_id: str) -> Space:
        space = self.space(space_id)
        if space is None:
            raise KeyError(f"no space {space_id}")
        return space

    def patch_space(self, space_id: str, changes: Any) -> dict[str, Any]:
        space = self._existing(space_id)
        _require(isinstance(changes, dict), "the body must be a JSON object")
        merged = {**space.to_document(), **changes, "CustSpaceId": space_id}
        replacement = _parse_space(merged)
        self.spaces[self.spaces.index(space)] = replacement
        return replacement.to_document()

    def put_template(self, space_id: str, template: Any) -> dict[str, Any]:
        space = self._existing(space_id)
        checked = _check_template(space_id, template)
        current = space.find_template(checked["TemplateCode"], checked["Language"])
        if current is None:
            space.templates.append(checked)
        else:
            space.templates[space.templates.index(current)] = checked
        return checked

    def patch_template(self, space_id: str, code: str, language: str, changes: Any) -> dict[str, Any]:
        space = self._existing(space_id)
        current = space.find_template(code, language)
        if current is None:
            raise KeyError(f"no template {code}/{language} in space {space_id}")
        _require(isinstance(changes, dict), "the body must be a JSON object")
        merged = _check_template(space_id, {**current, **changes, "TemplateCode": code, "Language": language})
        space.templates[space.templates.index(current)] = merged
        return merged

    def delete_template(self, space_id: str, code: str, language: str) -> None:
        space = self._existing(space_id)
        current = space.find_template(code, language)
        if current is None:
            raise KeyError(f"no template {code}/{language} in space {space_id}")
        space.templates.remove(current)
