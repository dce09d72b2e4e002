"""The gateway's pure core: cache keys, validation, spacing arithmetic, outcome classification."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.actions import ACTIONS, COMMON_PARAMS, GET_CHATAPP_TEMPLATE_DETAIL, QUERY_CHATAPP_BIND_WABA
from proxy.admission.spacing import estimated_wait, spacing_interval, utilisation
from proxy.errors import Overloaded, RequestRejected
from proxy.keys import cache_key
from proxy.simulator.window import max_in_any_window
from proxy.upstream.errors import CODE_OUTCOMES, Outcome, classify
from proxy.validation import resolve_action, validate

BASE = {"endpoint": "https://cams.ap-southeast-1.aliyuncs.com", "access_key_id": "AK", "action": "A",
        "version": "2020-06-06"}


def key(params: dict[str, str], **changes: str) -> str:
    return cache_key(**{**BASE, **changes}, params=params)  # type: ignore[arg-type]


@given(st.dictionaries(st.sampled_from(["Language", "CustSpaceId", "TemplateCode", "IsvCode"]),
                       st.text(min_size=1, max_size=8), min_size=1))
def test_key_ignores_parameter_order(params: dict[str, str]) -> None:
    assert key(params) == key(dict(reversed(list(params.items()))))


def test_key_changes_with_everything_that_changes_the_answer() -> None:
    params = {"Language": "en_US", "CustSpaceId": "1", "TemplateCode": "t"}
    keys = {key(params), key({**params, "Language": "zh_CN"}), key({**params, "IsvCode": "a"}),
            key({**params, "IsvCode": "b"}), key(params, endpoint="http://127.0.0.1:8081"),
            key(params, access_key_id="other"), key(params, action="B"), key(params, version="2021-01-01"),
            key({"Language": "en_US", "CustSpaceId": "1", "TemplateName": "t"})}
    assert len(keys) == 9


def test_key_is_unambiguous_and_hides_isv_code() -> None:
    assert key({"A": "x\nB=y"}) != key({"A": "x", "B": "y"})
    assert "secret-check" not in key({"IsvCode": "secret-check"})
    assert key({"A": "1"}).startswith("k1:A:") and len(key({"A": "1"})) == len("k1:A:") + 64


def test_common_parameters_are_dropped() -> None:
    pairs = [("Language", "en_US"), ("CustSpaceId", "1"), ("TemplateCode", "t")]
    pairs += [(name, "x") for name in sorted(COMMON_PARAMS)]
    assert validate(GET_CHATAPP_TEMPLATE_DETAIL, pairs) == {"Language": "en_US", "CustSpaceId": "1",
                                                             "TemplateCode": "t"}


def test_deprecated_alias_and_template_name_satisfy_the_groups() -> None:
    assert validate(GET_CHATAPP_TEMPLATE_DETAIL, [("Language", "en_US"), ("CustWabaId", "w"),
                                                  ("TemplateName", "n")])
    assert validate(QUERY_CHATAPP_BIND_WABA, []) == {}


@pytest.mark.parametrize(("pairs", "code"), [
    ([("CustSpaceId", "1"), ("TemplateCode", "t")], "MissingParameter.Language"),
    ([("Language", "en_US"), ("TemplateCode", "t")], "MissingParameter.CustSpaceId"),
    ([("Language", "en_US"), ("CustSpaceId", "1")], "MissingParameter.TemplateCode"),
    ([("Language", "en_US"), ("CustSpaceId", "1"), ("TemplateCode", "t"), ("TemplateType", "sms")],
     "InvalidParameter.TemplateType"),
    ([("Language", "x" * 17), ("CustSpaceId", "1"), ("TemplateCode", "t")], "InvalidParameter.Language"),
    ([("Language", "en\u200bUS"), ("CustSpaceId", "1"), ("TemplateCode", "t")], "InvalidParameter.Language"),
    ([("Language", "en_US"), ("CustSpaceId", "1"), ("TemplateCode", "t"), ("X", "1")], "InvalidParameter.Unknown"),
    ([("OwnerId", "1"), ("OwnerId", "2")], "InvalidParameter.Duplicate"),
    ([("Language", "")], "InvalidParameter.Language"),
])
def test_validation_rules(pairs: list[tuple[str, str]], code: str) -> None:
    with pytest.raises(RequestRejected) as caught:
        validate(GET_CHATAPP_TEMPLATE_DETAIL, pairs)
    assert caught.value.code == code and caught.value.status == 400


def test_action_resolution() -> None:
    assert resolve_action("QueryChatappBindWaba", None) is QUERY_CHATAPP_BIND_WABA
    for name, version, code in [(None, None, "MissingParameter.Action"), ("X", None, "InvalidAction.NotFound"),
                                ("QueryChatappBindWaba", "1", "InvalidVersion")]:
        with pytest.raises(RequestRejected) as caught:
            resolve_action(name, version)
        assert caught.value.code == code


def test_registry_caps_are_the_documented_ones() -> None:
    assert {name: spec.cap_per_second for name, spec in ACTIONS.items()} == {
        "GetChatappTemplateDetail": 5, "QueryChatappBindWaba": 10}


@pytest.mark.parametrize("rate", [1, 5, 10, 100])
@pytest.mark.parametrize("margin", [0.0, 0.001, 0.02, 0.05])
def test_spaced_grants_never_put_rate_plus_one_in_a_closed_window(rate: int, margin: float) -> None:
    interval = spacing_interval(rate, margin)
    grants = [i * interval for i in range(rate * 5)]
    # With no margin, R + 1 grants span exactly 1 s: a closed window catches them; any margin > 0 does not.
    if margin == 0:
        assert max_in_any_window(grants) == rate + 1
    else:
        assert max_in_any_window(grants) <= rate
    # ...as long as the grant-to-arrival spread stays under the margin.
    if margin:
        jittered = [t + (margin * 0.99 if i % (rate + 1) == 0 else 0.0) for i, t in enumerate(grants)]
        assert max_in_any_window(jittered) <= rate


def test_spacing_arithmetic() -> None:
    assert spacing_interval(5, 0.02) == pytest.approx(0.204)
    assert utilisation(0.02) == pytest.approx(0.98, abs=0.001)
    assert estimated_wait(10.0, None, 0, 0.2) == 0.0
    assert estimated_wait(10.0, 9.9, 3, 0.2) == pytest.approx(0.1 + 0.6)
    with pytest.raises(ValueError):
        spacing_interval(0, 0.02)


def test_overloaded_carries_both_retry_headers() -> None:
    error = Overloaded("busy", 2.3)
    assert error.headers == {"Retry-After": "3", "x-acs-retry-after": "2300"} and error.status == 503


@pytest.mark.parametrize(("status", "body", "outcome"), [
    (200, {"Code": "OK"}, Outcome.SUCCESS),
    (200, {"Code": "Ram.PermissionDeny"}, Outcome.DENIED),
    (200, {"Code": "SomethingElse"}, Outcome.BUSINESS_ERROR),
    (400, {"Code": "InvalidParameter"}, Outcome.BUSINESS_ERROR),
    (200, {"Code": "System.LimitControl"}, Outcome.THROTTLED),
    (400, {"Code": "System.LimitControl"}, Outcome.THROTTLED),
    (429, {"Code": "Whatever"}, Outcome.THROTTLED),
    (400, {"Code": "Throttling.User"}, Outcome.THROTTLED),
    (400, {"Code": "Unknown.ResourceOwnerId"}, Outcome.NOT_FOUND),
    (400, {"Code": "Template.NotFound"}, Outcome.NOT_FOUND),
    (503, {"Code": "Unknown.ResourceOwnerId"}, Outcome.FAULT),
    (400, {"Code": "Product.Unsubscript"}, Outcome.DENIED),
    (400, {"Code": "SignatureDoesNotMatch"}, Outcome.AUTH_ERROR),
    (404, {"Code": "InvalidAccessKeyId.NotFound"}, Outcome.AUTH_ERROR),
    (503, {"Code": "ServiceUnavailable"}, Outcome.FAULT),
    (500, {"Code": "SomethingNew"}, Outcome.FAULT),
    (502, b"<html>bad gateway</html>", Outcome.FAULT),
    (200, b"not json", Outcome.FAULT),
])
def test_outcome_table(status: int, body: object, outcome: Outcome) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    assert classify(status, raw).outcome is outcome


def test_only_throttling_and_faults_are_retried() -> None:
    assert {o for o in Outcome if o.retryable} == {Outcome.THROTTLED, Outcome.FAULT}
    assert CODE_OUTCOMES["OK"] is Outcome.SUCCESS
