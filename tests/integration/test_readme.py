"""The README can be followed: its examples run against a real gateway, its generated tables are in step with the
registries, and every file it or the docs name is in the repository."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import requests

from proxy.actions import ACTIONS
from proxy.reference import parameter_section, replace_sections
from tests.integration.test_wan import ENV
from tests.support import ROOT, start_cli

README = (ROOT / "README.md").read_text()
FIRST_CALLS = README[README.index("## Your first calls"):README.index("## The two actions")]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "k8s" / "README.md",
        ROOT / "tests" / "vectors" / "README.md"]
#: `path/like/this.ext` or `dir/` inside backticks, starting at a top-level folder of the repository.
NAMED_PATH = re.compile(r"`((?:proxy|docs|tests|deploy|scripts|bench|requirements)/[\w./-]*)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_parameter_tables_are_generated_from_the_action_registry() -> None:
    for spec in ACTIONS.values():
        assert parameter_section(spec) in README, "regenerate the README tables: python scripts/config-tables.py"
    assert replace_sections(README, list(ACTIONS.values())) == README


def test_every_required_parameter_and_choice_is_in_the_tables() -> None:
    for spec in ACTIONS.values():
        table = parameter_section(spec)
        for param in spec.params:
            assert f"| `{param.name}` |" in table
            for choice in param.choices or ():
                assert f"`{choice}`" in table
        assert "| `Language` | yes |" in parameter_section(ACTIONS["GetChatappTemplateDetail"])


def test_docs_name_only_files_that_are_in_the_repository() -> None:
    missing: list[str] = []
    for doc in DOCS:
        text = doc.read_text()
        assert not re.search(r"shared/\w+\.(md|json)", text), f"{doc.name} points outside the repository"
        for named in NAMED_PATH.findall(text):
            if not (ROOT / named).exists():
                missing.append(f"{doc.relative_to(ROOT)}: `{named}`")
        for link in LINK.findall(text):
            if "://" in link or link.startswith("mailto:"):
                continue
            if not (doc.parent / link).resolve().exists():
                missing.append(f"{doc.relative_to(ROOT)}: ({link})")
    assert not missing, "named but not in the repository: " + ", ".join(missing)


def test_the_first_calls_run_against_a_real_gateway(tmp_path: Path, sim_url: str) -> None:
    """Every curl line and Python block of "Your first calls", with only the gateway's port changed."""
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url], tmp_path / "gateway.log", env=ENV,
                        ready_text="gateway ready")
    try:
        address = gateway.url.removeprefix("http://")
        curls = [line for block in blocks(FIRST_CALLS, "sh") for line in block.splitlines() if line.startswith("curl")]
        pythons = blocks(FIRST_CALLS, "python")
        assert len(curls) == len(ACTIONS) and len(pythons) == 2, "the section lost an example"
        for line in curls:
            args = shlex.split(line.replace("127.0.0.1:8080", address))
            first = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout
            second = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout
            assert first.startswith("HTTP/1.1 200") and "X-Cache: MISS" in first, first
            assert "X-Cache: HIT" in second and '"Code":"OK"' in second.replace(" ", ""), second
        outputs = []
        for source in pythons:
            run = subprocess.run([sys.executable, "-c", source.replace("127.0.0.1:8080", address)],
                                 check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert run.returncode == 0, run.stderr
            outputs.append(run.stdout.split())
        sync, concurrent = outputs
        assert sync[0] == "HIT" and "hello_whatsapp" in sync and "pass" in sync, sync  # the curl filled it
        assert sync[-3] == "HIT" and sync[-1] == "APPROVED", sync
        assert concurrent == ["744c4b5c79c9432497a075bdfca36bf5", concurrent[1]] and concurrent[1].isdigit()
        stats = requests.get(f"{sim_url}/__sim/stats", timeout=5).json()
        # one call per distinct request: the template by code, by name, and the WABA
        assert sum(action["calls"] for action in stats["actions"].values()) == 3, stats
    finally:
        gateway.stop()


def test_nothing_in_the_repository_reaches_outside_it() -> None:
    """Code, scripts and the build name paths inside the repository only (`.ci/run` runs the suite in a clone
    with nothing beside it, which is the proof; this catches the mistake before CI does)."""
    outside = re.compile(r"ROOT\.parent|\.\./shared|parent\.parent\.parent|\"\.\./\.\.")
    offenders = []
    for folder in ("proxy", "tests", "bench", "scripts", ".ci"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".sh", ".js", ""} and "node_modules" not in path.parts:
                text = path.read_text(errors="replace")
                if outside.search(text) and path.name != "test_readme.py":
                    offenders.append(str(path.relative_to(ROOT)))
    for name in ("Makefile", "pyproject.toml", "Dockerfile", "docker-compose.yml"):
        if outside.search((ROOT / name).read_text()):
            offenders.append(name)
    assert not offenders, f"reads outside the repository: {offenders}"
