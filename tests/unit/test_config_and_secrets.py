"""Settings parsing and the no-leak guarantees of `Secret` and the log redaction."""

from __future__ import annotations

import argparse
import io
import pickle
from contextlib import redirect_stderr

import pytest
import structlog

from proxy import logs
from proxy.options import ConfigError, add_options
from proxy.secret import Secret, redact
from proxy.signing import Credentials
from proxy.simulator.settings import SIMULATOR_OPTIONS, SimulatorSettings, access_keys


def settings_from(argv: list[str], env: dict[str, str]) -> SimulatorSettings:
    parser = argparse.ArgumentParser()
    add_options(parser, SIMULATOR_OPTIONS)
    return SimulatorSettings.from_sources(parser.parse_args(argv), env)


def test_flags_beat_environment_which_beats_defaults() -> None:
    settings = settings_from(["--port", "9000"], {"SIM_PORT": "9100", "SIM_LATENCY_MS": "5"})
    assert (settings.port, settings.latency_ms, settings.host) == (9000, 5.0, "127.0.0.1")


def test_repeatable_keys_and_caps() -> None:
    settings = settings_from(["--access-key", "A:a", "--access-key", "B:b:tok", "--cap",
                              "QueryChatappBindWaba=3"], {})
    assert [c.access_key_id for c in settings.access_keys] == ["A", "B"]
    assert settings.access_keys[1].security_token == Secret("tok")
    assert settings.cap("QueryChatappBindWaba") == 3 and settings.cap("GetChatappTemplateDetail") == 5


def test_environment_key_list() -> None:
    assert [c.access_key_id for c in access_keys("A:a, B:b")] == ["A", "B"]


def test_every_problem_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(["--port", "-1"], {"SIM_JITTER_MS": "nan", "SIM_ACCESS_KEYS": "A:supersecret:x,bad"})
    problems = caught.value.problems
    assert len(problems) == 3 and all(p.startswith("invalid setting ") for p in problems)
    assert not any("supersecret" in p for p in problems)


def test_settings_are_frozen() -> None:
    settings = SimulatorSettings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_secret_never_prints() -> None:
    secret = Secret("hunter2")
    credentials = Credentials("AK", secret, Secret("tok"))
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr(credentials), str(credentials)):
        assert "hunter2" not in text and "tok'" not in text
    assert secret.reveal() == "hunter2" and secret.matches("hunter2") and not secret.matches("hunter3")
    with pytest.raises(TypeError):
        pickle.dumps(secret)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_logs_redact_secret_values_and_sensitive_fields(fmt: str) -> None:
    buffer = io.StringIO()
    with redirect_stderr(buffer):
        logs.configure("debug", fmt)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
        logs.get_logger("t").info("event", key=Secret("hunter2"), authorization="ACS3 Signature=abc",
                                  tenant_token="tok-123", access_key_id="AK1")
    text = buffer.getvalue()
    assert "hunter2" not in text and "Signature=abc" not in text and "tok-123" not in text
    assert "AK1" in text


@pytest.mark.parametrize(("raw", "shown"), [
    ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://app:hunter2@redis.internal", "rediss://app:***@redis.internal"),
    ("https://hooks.example/cb?token=abc123&x=1", "https://hooks.example/cb?token=***&x=1"),
    ("/?AccessKeyId=LTAI&Signature=abc%3D", "/?AccessKeyId=LTAI&Signature=***"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
])
def test_redact_hides_url_passwords_and_secret_parameters(raw: str, shown: str) -> None:
    assert redact(raw) == shown


@pytest.mark.parametrize("url", ["redis://:hunter2-password@redis:notaport/0", "redis://:hunter2-password@:6379",
                                 "memcached://:hunter2-password@redis:6379"])
def test_a_malformed_setting_is_reported_without_its_password(url: str) -> None:
    from proxy.settings import GATEWAY_OPTIONS, GatewaySettings

    parser = argparse.ArgumentParser()
    add_options(parser, GATEWAY_OPTIONS)
    with pytest.raises(ConfigError) as error:
        GatewaySettings.from_sources(parser.parse_args(["--redis-url", url]), {})
    text = "\n".join(error.value.problems)
    assert "--redis-url" in text and "hunter2" not in text and "***" in text
