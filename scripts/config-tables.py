"""Rewrite the README's two configuration tables and docs/configuration.md from the option tables in
proxy/settings.py, proxy/simulator/settings.py and proxy/netem/settings.py (proxy/reference.py renders them),
and the README's per-action parameter tables from the action registry (proxy/actions.py).

    .venv/bin/python scripts/config-tables.py        (a test fails when the README drifts)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.actions import ACTIONS
from proxy.reference import configuration_reference, options_table, replace_sections
from proxy.settings import GATEWAY_OPTIONS
from proxy.simulator.settings import SIMULATOR_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def main() -> None:
    lines = README.read_text().split("\n")
    for options, marker in ((GATEWAY_OPTIONS, "| `--redis-url` |"), (SIMULATOR_OPTIONS, "| `--latency-ms` |")):
        row = next(i for i, line in enumerate(lines) if line.startswith(marker))
        start = row
        while lines[start - 1].startswith("|"):
            start -= 1
        end = row
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines[start:end] = options_table(options).rstrip("\n").split("\n")
    README.write_text(replace_sections("\n".join(lines), list(ACTIONS.values())))
    (ROOT / "docs" / "configuration.md").write_text(configuration_reference())


if __name__ == "__main__":
    main()
