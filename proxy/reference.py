"""The generated documentation: the README's parameter and option tables and ``docs/configuration.md``.

* per-action parameter tables, from the action registry (`proxy.actions`), which ``scripts/config-tables.py``
  writes between ``<!-- parameters: ACTION -->`` and ``<!-- /parameters -->`` markers;
* option tables (`options_table`) and the configuration reference (`configuration_reference`), from the
  commands' option tables (`proxy.settings`, `proxy.simulator.settings`, `proxy.netem.settings`).

Tests fail when the README or the reference drifts from them. Pure: tables in, Markdown out.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.actions import ActionSpec, ParamSpec
from proxy.netem.settings import NETEM_OPTIONS
from proxy.options import Option
from proxy.settings import GATEWAY_OPTIONS
from proxy.simulator.settings import SIMULATOR_OPTIONS


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


def options_table(options: Sequence[Option]) -> str:
    """The Markdown table of ``options`` that the README carries (a test keeps it in step)."""
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for option in options:
        flag = f"`{option.flag}`" if option.flag else "—"
        rows.append(f"| {flag} | `{option.env}` | {option.describe_default()} | {option.help} |")
    return "\n".join(rows) + "\n"


def configuration_reference() -> str:
    """``docs/configuration.md``: every setting of each command, generated from the option tables (a test
    fails when the file drifts; regenerate with ``python scripts/config-tables.py``)."""
    return (
        "# Configuration reference\n\n"
        "Generated from the option tables in `proxy/settings.py`, `proxy/simulator/settings.py` and\n"
        "`proxy/netem/settings.py` by `scripts/config-tables.py`; a test fails if this\n"
        "file drifts from them. Each setting is read from its flag, else its environment variable, else the\n"
        "default. Secrets (the AccessKey secret, STS token, admin and callback tokens) are environment-only and\n"
        "shown as `***` wherever settings are printed. Bad values stop the command with one line each (exit 2).\n\n"
        "## `cams-proxy serve` (the gateway)\n\n"
        f"{options_table(GATEWAY_OPTIONS)}\n"
        "## `cams-proxy simulate` (the CAMS simulator)\n\n"
        f"{options_table(SIMULATOR_OPTIONS)}\n"
        "## `cams-proxy netem` (the network stand-in, `docs/netem.md`)\n\n"
        f"{options_table(NETEM_OPTIONS)}\n"
        "## Operator commands\n\n"
        "`cams-proxy warm --file CSV [--gateway URL] [--concurrency N]`, `cams-proxy purge [--gateway URL] "
        "[--key K] [--space ID] [--template CODE] [--waba ID]`, `cams-proxy status [--gateway URL] [--interval S] "
        "[--once]`. `purge` and `status` read `PROXY_ADMIN_TOKEN` from the environment. See `--help` of each.\n"
    )
