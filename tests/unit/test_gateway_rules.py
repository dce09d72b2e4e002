"""The domain rules the gateway's settings delegate to: caps, queue bounds and the deadline
(`proxy.admission.limits`), TTLs (`proxy.freshness.action_ttl`) and the log format (`proxy.logs.json_output`)."""

from __future__ import annotations

import pytest

from proxy.actions import ACTIONS
from proxy.admission.limits import (
    DEFAULT_QUEUE_BOUND,
    budget_cap,
    caps_above_documented,
    tenant_queue_bound,
    timeout_exceeds_deadline,
)
from proxy.freshness import action_ttl
from proxy.logs import json_output
from proxy.settings import GatewaySettings

TEMPLATE, WABA = "GetChatappTemplateDetail", "QueryChatappBindWaba"


def test_the_cap_is_the_documented_one_unless_overridden() -> None:
    assert budget_cap(TEMPLATE) == budget_cap(TEMPLATE, {}) == ACTIONS[TEMPLATE].cap_per_second == 5
    assert budget_cap(WABA, None) == 10
    assert budget_cap(TEMPLATE, {TEMPLATE: 2}) == 2 and budget_cap(WABA, {TEMPLATE: 2}) == 10


def test_only_overrides_above_the_documented_cap_are_named() -> None:
    assert caps_above_documented(None) == caps_above_documented({}) == []
    assert caps_above_documented({TEMPLATE: 5, WABA: 3}) == []
    assert caps_above_documented({WABA: 11, TEMPLATE: 6}) == [(WABA, 11, 10), (TEMPLATE, 6, 5)]


def test_the_queue_bound_is_per_action_with_a_default() -> None:
    assert tenant_queue_bound(TEMPLATE) == tenant_queue_bound(TEMPLATE, {}) == DEFAULT_QUEUE_BOUND == 200
    assert tenant_queue_bound(WABA, {WABA: 7}) == 7 and tenant_queue_bound(TEMPLATE, {WABA: 7}) == 200


@pytest.mark.parametrize(("timeout", "deadline", "exceeds"), [
    (8.0, 10.0, False), (10.0, 10.0, False), (10.5, 10.0, True), (30.0, 0.0, False),
])
def test_an_upstream_call_must_fit_in_the_deadline(timeout: float, deadline: float, exceeds: bool) -> None:
    assert timeout_exceeds_deadline(timeout, deadline) is exceeds


def test_the_ttl_is_the_documented_one_unless_overridden() -> None:
    assert action_ttl(TEMPLATE) == 300.0 and action_ttl(WABA, {}) == 600.0
    ttl = action_ttl(TEMPLATE, {TEMPLATE: 5})
    assert ttl == 5.0 and isinstance(ttl, float)


@pytest.mark.parametrize(("fmt", "is_tty", "json"), [
    ("json", True, True), ("json", False, True), ("console", False, False), ("console", True, False),
    ("auto", False, True), ("auto", True, False),
])
def test_logs_are_json_when_asked_or_when_stderr_is_no_terminal(fmt: str, is_tty: bool, json: bool) -> None:
    assert json_output(fmt, is_tty) is json


def test_the_settings_apply_the_rules() -> None:
    settings = GatewaySettings(caps={TEMPLATE: 3}, ttls={WABA: 60.0}, queue_bounds={TEMPLATE: 9}, log_format="auto")
    assert [settings.cap(name) for name in (TEMPLATE, WABA)] == [3, 10]
    assert [settings.local_cap(name) for name in (TEMPLATE, WABA)] == [3, 10]
    assert (settings.ttl(TEMPLATE), settings.ttl(WABA)) == (300.0, 60.0)
    assert (settings.queue_bound(TEMPLATE), settings.queue_bound(WABA)) == (9, DEFAULT_QUEUE_BOUND)
    assert settings.json_logs(is_tty=False) and not settings.json_logs(is_tty=True)


def test_the_local_cap_is_the_cap_whatever_the_workers() -> None:
    """No per-worker split: the workers share the supervisor's host budget (`proxy.admission.host_budget`)."""
    for workers in (1, 2, 7):
        assert GatewaySettings(workers=workers).local_cap(WABA) == 10


def test_the_problems_are_worded_by_the_settings() -> None:
    assert GatewaySettings().problems() == []
    problems = GatewaySettings(caps={TEMPLATE: 6}, upstream_timeout_s=12.0, deadline_s=10.0).problems()
    assert len(problems) == 2
    assert problems[0].startswith(f"invalid setting --cap={TEMPLATE}=6: above the documented upstream cap of 5/s")
    assert problems[1].startswith("invalid setting CAMS_TIMEOUT_S=12.0: longer than the request deadline")
    assert GatewaySettings(caps={TEMPLATE: 6}, allow_cap_above_documented=True).problems() == []
