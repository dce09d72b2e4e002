"""Pure parts of the simulator: fault decisions, fixture validation, business answers."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from proxy.simulator.business import bind_waba, template_detail
from proxy.simulator.faults import Fault, FaultPlan, decide, latency_seconds
from proxy.simulator.fixtures import FixtureError, FixtureStore, load_document, parse_document
from tests.support import SEED_SPACE, SEED_TEMPLATE


def test_fault_rates_are_respected_and_do_not_overlap() -> None:
    plan = FaultPlan(error_rate=0.2, hang_rate=0.1, throttle_rate=0.1)
    rng = random.Random(3)
    seen = Counter(decide(plan, rng) for _ in range(20_000))
    assert abs(seen[Fault.THROTTLE] / 20_000 - 0.1) < 0.02
    assert abs(seen[Fault.HANG] / 20_000 - 0.1) < 0.02
    assert abs((seen[Fault.ERROR_500] + seen[Fault.ERROR_503]) / 20_000 - 0.2) < 0.02
    assert decide(FaultPlan(), rng) is Fault.NONE


def test_latency_stays_within_jitter() -> None:
    rng = random.Random(1)
    values = [latency_seconds(FaultPlan(latency_ms=80, jitter_ms=20), rng) for _ in range(1000)]
    assert min(values) >= 0.06 and max(values) <= 0.1


@pytest.mark.parametrize("changes", [{"nope": 1}, {"error_rate": 1.5}, {"latency_ms": -1}, {"hang_ms": "x"}])
def test_fault_plan_rejects_bad_changes(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultPlan().updated(changes)


def test_default_fixtures_contain_the_seed_examples() -> None:
    store = FixtureStore(load_document(None))
    answer = template_detail(store, {"CustSpaceId": SEED_SPACE, "Language": "en_US", "TemplateCode": SEED_TEMPLATE})
    assert answer.ok and answer.data is not None and answer.data["Name"] == "hello_whatsapp"
    waba = bind_waba(store, {"CustSpaceId": SEED_SPACE})
    assert waba.ok and waba.data is not None and waba.data["MessageTemplateNamespace"] == \
        "93e6b26e_8a67_4163_a093_ebfe645a66b0"
    assert len(store.spaces) >= 4
    assert all(len(space.templates) >= 1 for space in store.spaces)


@pytest.mark.parametrize(("document", "message"), [
    ({}, "spaces"),
    ({"spaces": []}, "at least one space"),
    ({"spaces": [{"CustSpaceId": "1", "Waba": {"Id": "w"}}, {"CustSpaceId": "1", "Waba": {"Id": "v"}}]}, "unique"),
    ({"spaces": [{"CustSpaceId": "1", "Waba": {}}]}, "Waba"),
    ({"spaces": [{"CustSpaceId": "1", "Waba": {"Id": "w"}, "Templates": [{"Name": "x"}]}]}, "TemplateCode"),
    ({"spaces": [{"CustSpaceId": "1", "Waba": {"Id": "w"}, "Subscribed": "yes"}]}, "Subscribed"),
])
def test_fixture_validation_names_the_problem(document: Any, message: str) -> None:
    with pytest.raises(FixtureError, match=message):
        parse_document(document)


def test_own_space_answers_a_waba_query_without_a_space() -> None:
    store = FixtureStore(load_document(None))
    assert bind_waba(store, {}).data == store.spaces[0].waba
