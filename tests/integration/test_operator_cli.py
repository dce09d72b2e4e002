"""The operator commands against a real gateway process and the simulator: warm, purge, status."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import orjson
import requests

from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from tests.support import ROOT, many_templates, start_cli

WABA, TEMPLATE = "QueryChatappBindWaba", "GetChatappTemplateDetail"
ADMIN = "operator-test-admin-token-0123456789"


def cli(*args: str, token: str | None = ADMIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PROXY_ADMIN_TOKEN"} | {"COLUMNS": "160"}
    if token is not None:
        env["PROXY_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "proxy", *args], check=False, capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_warm_purge_and_status(sim_url: str, tmp_path: Path) -> None:
    requests.put(f"{sim_url}/__sim/fixtures", data=orjson.dumps(many_templates(200)), timeout=5).raise_for_status()
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
           "LOG_FORMAT": "console", "PROXY_ADMIN_TOKEN": ADMIN}
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url], tmp_path / "gateway.log", env=env,
                        ready_text="gateway ready")
    try:
        keys = tmp_path / "keys.csv"
        with keys.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Action", "CustSpaceId", "Language", "TemplateCode"])
            for i in range(190):
                writer.writerow([WABA, f"78{i:012d}", "", ""])
            for i in range(10):
                writer.writerow([TEMPLATE, "77000000000001", "en_US", f"{i:032x}"])
        warmed = cli("warm", "--file", str(keys), "--gateway", gateway.url, token=None)
        assert warmed.returncode == 0, warmed.stderr
        assert "summary: filled=200 cached=0 failed=0" in warmed.stdout
        assert "200/200" in warmed.stdout  # the progress bar's last state
        stats = requests.get(f"{sim_url}/__sim/stats", timeout=5).json()["actions"]
        assert stats[WABA]["calls"] == 190 and stats[WABA]["throttled"] == 0 and stats[WABA]["max_in_any_1s"] <= 10
        assert stats[TEMPLATE]["calls"] == 10 and stats[TEMPLATE]["max_in_any_1s"] <= 5
        again = cli("warm", "--file", str(keys), "--gateway", gateway.url, token=None)
        assert "summary: filled=0 cached=200 failed=0" in again.stdout

        purged = cli("purge", "--gateway", gateway.url, "--space", "77000000000001")
        assert purged.returncode == 0 and purged.stdout.startswith("Purged 10 entries.\n"), purged.stderr
        assert len(purged.stdout.splitlines()) == 11 and "Not cached" not in purged.stdout  # the ten keys
        twice = cli("purge", "--gateway", gateway.url, "--space", "77000000000001")  # nothing left to remove
        assert twice.returncode == 0 and twice.stdout == "Purged 0 entries.\n", twice.stderr
        long_key = "never-cached:" + "x" * 200  # wider than the terminal (COLUMNS=160): printed whole on one line
        missing = cli("purge", "--gateway", gateway.url, "--key", long_key, "--key", "k1")
        assert missing.returncode == 0, missing.stderr
        assert missing.stdout == f"Purged 0 entries.\nNot cached: k1, {long_key}\n"
        snapshot = cli("status", "--once", "--gateway", gateway.url)
        assert snapshot.returncode == 0 and WABA in snapshot.stdout and "│ other " in snapshot.stdout  # tenants table
        assert "hit ratio 50.0% of 400 answers" in snapshot.stdout  # 200 filled, then 200 hits

        wrong = cli("status", "--once", "--gateway", gateway.url, token="not-the-admin-token-at-all")
        assert wrong.returncode == 1 and "401" in wrong.stderr and "not-the-admin-token" not in wrong.stderr
        bad = tmp_path / "bad.csv"
        bad.write_text("Action,CustSpaceId\nNoSuchAction,1\nQueryChatappBindWaba,\n")
        refused = cli("warm", "--file", str(bad), "--gateway", gateway.url, token=None)
        assert refused.returncode == 1 and "line 2" in refused.stderr
        nothing = cli("purge", "--gateway", gateway.url)
        assert nothing.returncode == 1 and "--space" in nothing.stderr
    finally:
        gateway.stop()
