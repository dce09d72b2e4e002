"""The README's per-action parameter tables, generated from the action registry (`proxy.actions`).

``scripts/config-tables.py`` writes them between ``<!-- parameters: ACTION -->`` and ``<!-- /parameters -->``
markers; a test fails when the README drifts from the registry. Pure: the registry in, Markdown out.
"""

from __future__ import annotations

from proxy.actions import ActionSpec, ParamSpec


def _required(spec: ActionSpec, param: ParamSpec) -> str:
    if param.required:
        return "yes"
    for group in spec.one_of:
        if param.name in group:
            others = [f"`{name}`" for name in group if name != param.name]
            return f"yes: this or {' or '.join(others)}"
    return "no"


def _values(param: ParamSpec) -> str:
    if param.choices is not None:
        return " or ".join(f"`{choice}`" for choice in sorted(param.choices))
    return f"text, 1 to {param.max_length} characters"


def _meaning(param: ParamSpec) -> str:
    meaning = param.meaning or ""
    if param.deprecated_for:
        meaning += f" (deprecated: use `{param.deprecated_for}`)"
    return meaning


def parameter_table(spec: ActionSpec) -> str:
    """The Markdown table of ``spec``'s business parameters: name, whether required, values, meaning."""
    lines = ["| parameter | required | values | meaning |", "| --- | --- | --- | --- |"]
    for param in spec.params:
        lines.append(f"| `{param.name}` | {_required(spec, param)} | {_values(param)} | {_meaning(param)} |")
    return "\n".join(lines) + "\n"


def parameter_section(spec: ActionSpec) -> str:
    """The marked block the README holds for ``spec``: a one-line summary, the cap and TTL, the table."""
    return (f"<!-- parameters: {spec.name} -->\n"
            f"**`{spec.name}`**: {spec.summary}. Upstream cap {spec.cap_per_second} requests/s per account; "
            f"cached {spec.ttl_seconds:.0f} s by default (`--ttl`).\n\n"
            f"{parameter_table(spec)}"
            f"<!-- /parameters -->")


def replace_sections(text: str, specs: list[ActionSpec]) -> str:
    """``text`` with each action's marked block replaced by its generated one; raises `ValueError` when a
    marker is missing (the README must hold one block per action)."""
    for spec in specs:
        start_marker = f"<!-- parameters: {spec.name} -->"
        start = text.find(start_marker)
        end = text.find("<!-- /parameters -->", start)
        if start < 0 or end < 0:
            raise ValueError(f"the README has no '{start_marker}' ... '<!-- /parameters -->' block")
        text = text[:start] + parameter_section(spec) + text[end + len("<!-- /parameters -->"):]
    return text
