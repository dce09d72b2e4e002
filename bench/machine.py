"""The machine and the code a `make bench` run measured: the rows of the table at the top of the report.

`machine` lists the hardware, kernel and versions; `source_state` takes a digest of the code on disk (at the start
of a run and again at its end) and `source_row` says whether it changed meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procs import ROOT
from bench.wrk import wrk_version


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        return f"{int(match.group(1)) / 1024 / 1024:.1f} GiB" if match else "unknown"
    except OSError:
        return "unknown"


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "not installed"
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else out.strip() or "unknown"


@dataclass(frozen=True)
class Source:
    """The code a run measured: the commit, how many paths under ``proxy/`` and ``bench/`` differed from it, and a
    digest of the files as on disk (every process runs what is on disk when it starts)."""

    head: str
    changed: int
    digest: str
    files: tuple[Path, ...] = field(default=(), compare=False, repr=False)

    def describe(self) -> str:
        if not self.head:
            return "not a git checkout"
        if not self.changed:
            return f"git {self.head}, `proxy/` and `bench/` as committed"
        return f"git {self.head} **plus uncommitted changes** in {self.changed} paths under `proxy/` and `bench/`"


def source_state(files: tuple[Path, ...] | None = None) -> Source:
    """The code on disk now: ``files`` (by default every file under ``proxy/`` and every ``bench/*.py`` there is
    now; pass the start's `Source.files` at the end, so that modules imported on the way or files added meanwhile
    do not count as a change)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=ROOT).stdout
        except OSError:
            return ""

    if files is None:
        files = tuple(sorted((*ROOT.glob("proxy/**/*.py"), *ROOT.glob("proxy/**/*.json"), *ROOT.glob("bench/*.py"))))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    changed = [line for line in git("status", "--porcelain", "--", "proxy", "bench").splitlines() if line.strip()]
    return Source(git("rev-parse", "--short", "HEAD").strip(), len(changed), digest.hexdigest(), files)


def source_row(before: Source, after: Source) -> str:
    """The ``source`` row: the code at the start, and a plain warning when it changed before the end."""
    if before.digest == after.digest:
        moved = "" if before.head == after.head else f"; commits meanwhile, up to {after.head}, changed other files"
        return before.describe() + f" (measured as on disk; unchanged from start to end of the run{moved})"
    return (f"at the start {before.describe()}; **the code on disk changed during the run** (at the end "
            f"{after.describe()}), so processes started later (profiles, miss path) may have run newer code than "
            "the hit path")


def machine(source: str) -> list[tuple[str, str]]:
    import redis

    from proxy import __version__

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("machine (`uname -m`)", platform.machine()),
        ("CPU", _cpu_model()),
        ("cores", f"{os.cpu_count()} ({usable} usable by this process)"),
        ("memory", _memory()),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("aiohttp", aiohttp.__version__),
        ("redis-py", redis.__version__),
        ("redis-server", _redis_version()),
        ("wrk", wrk_version()),
        ("cams-proxy", __version__),
        ("source", source),
    ]
