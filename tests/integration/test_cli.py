"""The command line as an operator meets it: help, clear one-line errors, port 0, --fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from alibabacloud_cams20200606 import models

from proxy.simulator.fixtures import load_document
from tests.integration.test_sdk_simulator import sdk
from tests.support import ROOT, start_cli


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, cwd=ROOT, check=False,
                          env=env, timeout=60)


def test_help_lists_the_commands() -> None:
    top = run("--help")
    assert top.returncode == 0 and "simulate" in top.stdout
    sim = run("simulate", "--help")
    assert sim.returncode == 0
    for flag in ("--host", "--port", "--access-key", "--latency-ms", "--fixtures", "SIM_PORT"):
        assert flag in sim.stdout


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--port", "99999"], {}, "invalid setting --port='99999': must be a port number 0..65535"),
    (["--latency-ms", "fast"], {}, "invalid setting --latency-ms='fast': must be a number"),
    ([], {"SIM_ERROR_RATE": "1.5"}, "invalid setting SIM_ERROR_RATE='1.5': must be a probability between 0 and 1"),
    (["--access-key", "only-an-id"], {}, "invalid setting --access-key=***: must be ID:SECRET"),
    (["--fixtures", "/no/such/file.json"], {}, "invalid setting --fixtures='/no/such/file.json': no such file"),
    (["--cap", "Nope=3"], {}, "invalid setting --cap='Nope=3': must be ACTION=N"),
])
def test_bad_values_stop_with_one_clear_line(args: list[str], env: dict[str, str], expected: str) -> None:
    import os

    result = run("simulate", *args, env={**os.environ, **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_all_bad_values_are_reported_together() -> None:
    result = run("simulate", "--port", "x", "--hang-rate", "7")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 2


def test_bad_fixture_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"spaces": [{"CustSpaceId": 1}]}')
    result = run("simulate", "--fixtures", str(bad), "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"cams-proxy simulate: invalid setting --fixtures='{bad}': each space needs a string CustSpaceId"]


def test_port_zero_and_custom_fixtures(tmp_path: Path) -> None:
    document = load_document(None)
    space = document["spaces"][0]
    space["CustSpaceId"] = "11112222333344"
    space["Waba"]["Name"] = "Custom Fixture Co"
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps({"spaces": [space]}))
    process = start_cli(["simulate", "--port", "0", "--latency-ms", "0", "--fixtures", str(path),
                         "--access-key", "LTAI5tCustom:custom-secret"], tmp_path / "log")
    try:
        assert process.url.startswith("http://127.0.0.1:") and not process.url.endswith(":8081")
        client = sdk(process.url)
        # The demo key is not accepted any more: only the configured one is.
        with pytest.raises(Exception, match=r"InvalidAccessKeyId\.NotFound"):
            client.query_chatapp_bind_waba(models.QueryChatappBindWabaRequest(cust_space_id="11112222333344"))
        from alibabacloud_cams20200606.client import Client
        from alibabacloud_tea_openapi.models import Config

        custom = Client(Config(access_key_id="LTAI5tCustom", access_key_secret="custom-secret",
                               endpoint=process.url.removeprefix("http://"), protocol="HTTP"))
        answer = custom.query_chatapp_bind_waba(models.QueryChatappBindWabaRequest(cust_space_id="11112222333344"))
        assert answer.body.data.name == "Custom Fixture Co"
        assert requests.get(f"{process.url}/__sim/health", timeout=5).json() == {"status": "ok",
                                                                           "pid": process.proc.pid}
        log = process.log.read_text()
        assert "custom-secret" not in log and "listening" in log
    finally:
        process.stop()


def test_readme_configuration_tables_are_generated_from_the_option_tables() -> None:
    from proxy.reference import options_table
    from proxy.settings import GATEWAY_OPTIONS
    from proxy.simulator.settings import SIMULATOR_OPTIONS

    readme = (ROOT / "README.md").read_text()
    for options in (SIMULATOR_OPTIONS, GATEWAY_OPTIONS):
        assert options_table(options) in readme, "regenerate the README tables: python scripts/config-tables.py"


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    from proxy.reference import configuration_reference

    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == configuration_reference(), "regenerate it: python scripts/config-tables.py"


def test_serve_without_a_key_refuses_to_start_and_says_why() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    env |= {"HOME": "/nonexistent", "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}  # nothing along the chain
    result = run("serve", "--port", "0", env=env)
    assert result.returncode == 2
    assert "no AccessKey found: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET" in result.stderr
    assert "Traceback" not in result.stderr
    half = run("serve", "--port", "0", env={**env, "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIonlyTheId"})
    assert half.returncode == 2 and "must be set together" in half.stderr


def test_serve_refuses_a_cap_above_the_documented_one() -> None:
    import os

    env = {**os.environ, "ALIBABA_CLOUD_ACCESS_KEY_ID": "a", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "b"}
    result = run("serve", "--cap", "GetChatappTemplateDetail=6", env=env)
    assert result.returncode == 2 and "above the documented upstream cap of 5/s" in result.stderr
    help_text = run("serve", "--help").stdout
    for flag in ("--redis-url", "--upstream", "--cap", "--ttl", "--queue-bound", "--deadline-s", "REDIS_URL"):
        assert flag in help_text
