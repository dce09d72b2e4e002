"""The fair scheduler's pure core: priority tiers, deficit round robin by weight, bounds, removal."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.admission.fair import FairQueue, Priority, TenantQueueFull


def drain(queue: FairQueue[str]) -> list[str]:
    out = []
    while (item := queue.pop()) is not None:
        out.append(item)
    return out


def test_a_flood_does_not_starve_late_tenants() -> None:
    queue: FairQueue[str] = FairQueue(bound=1000)
    for i in range(500):
        queue.push(f"A{i}", "A")
    for i in range(10):
        queue.push(f"B{i}", "B")
        queue.push(f"C{i}", "C")
    order = drain(queue)
    last_small = max(order.index(f"{t}{i}") for t in "BC" for i in range(10))
    assert last_small < 31  # B and C interleave with A one for one
    assert [x for x in order if x.startswith("A")] == [f"A{i}" for i in range(500)]  # FIFO within a tenant


def test_weights_share_the_slots_in_proportion() -> None:
    weights = {"big": 3.0, "small": 1.0, "tiny": 0.5}
    queue: FairQueue[str] = FairQueue(weight=weights.__getitem__, bound=10_000)
    for tenant in weights:
        for i in range(1000):
            queue.push(f"{tenant}{i}", tenant)
    served = Counter("".join(c for c in str(queue.pop()) if c.isalpha()) for _ in range(900))
    assert served["big"] == pytest.approx(600, abs=6) and served["small"] == pytest.approx(200, abs=4)
    assert served["tiny"] == pytest.approx(100, abs=3)


def test_priorities_are_strict_tiers() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("warm", "t", Priority.WARM)
    queue.push("refresh", "t", Priority.REFRESH)
    queue.push("miss", "u", Priority.INTERACTIVE)
    assert drain(queue) == ["miss", "refresh", "warm"]


def test_bound_is_per_tenant_and_priority_and_removal_frees_room() -> None:
    queue: FairQueue[str] = FairQueue(bound=2)
    queue.push("a1", "a")
    queue.push("a2", "a")
    with pytest.raises(TenantQueueFull):
        queue.push("a3", "a")
    queue.push("b1", "b")
    queue.push("ar", "a", Priority.REFRESH)
    assert queue.remove("a1") and not queue.remove("a1")
    queue.push("a3", "a")
    assert len(queue) == 4 and "a1" not in queue
    assert drain(queue) == ["a2", "b1", "a3", "ar"]


def test_ahead_of_counts_a_fair_position_not_the_whole_backlog() -> None:
    queue: FairQueue[str] = FairQueue(bound=1000)
    for i in range(500):
        queue.push(f"A{i}", "A")
    assert queue.ahead_of("A") == 500
    assert queue.ahead_of("B") == 1  # one of A's, then B's own call
    queue.push("r", "B", Priority.REFRESH)
    assert queue.ahead_of("B", Priority.REFRESH) == 500 + 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from(list(Priority)), st.booleans()), max_size=80))
def test_every_pushed_item_is_popped_once_unless_removed(ops: list[tuple[str, Priority, bool]]) -> None:
    queue: FairQueue[int] = FairQueue(weight=lambda t: {"a": 1.0, "b": 2.0, "c": 0.3, "d": 1.0}[t], bound=1000)
    kept = set()
    for number, (tenant, priority, remove) in enumerate(ops):
        queue.push(number, tenant, priority)
        kept.add(number)
        if remove and number % 3 == 0:
            queue.remove(number)
            kept.discard(number)
    popped = []
    while (item := queue.pop()) is not None:
        popped.append(item)
    assert sorted(popped) == sorted(kept) and len(queue) == 0
    by_priority = [next(p for n, (_, p, _) in enumerate(ops) if n == item) for item in popped]
    assert by_priority == sorted(by_priority)  # never a lower tier before a higher one


def test_promote_moves_an_item_up_a_tier_and_never_down() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(3):
        queue.push(f"busy-{i}", "busy")
    queue.push("flight", "quiet", Priority.WARM)
    assert not queue.promote("flight", "quiet", Priority.WARM)  # no gain
    assert queue.promote("flight", "quiet", Priority.INTERACTIVE)
    assert not queue.promote("flight", "quiet", Priority.WARM)  # never demoted
    served = [queue.pop() for _ in range(4)]
    assert served.index("flight") <= 1  # DRR: the quiet tenant's turn comes right after one busy call
    assert not queue.promote("gone", "quiet", Priority.INTERACTIVE)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABCD"), st.sampled_from(list(Priority)), st.booleans()),
                max_size=60),
       st.integers(min_value=0, max_value=10))
def test_order_is_what_pop_would_serve_and_changes_nothing(ops: list[tuple[str, Priority, bool]],
                                                          pops_first: int) -> None:
    """`order` (used to re-check queued calls against their deadlines) predicts `pop` exactly, mid-round too."""
    import copy
    weights = {"A": 1.0, "B": 0.5, "C": 2.0, "D": 0.3}
    queue: FairQueue[str] = FairQueue(lambda tenant: weights[tenant], bound=1000)
    for index, (tenant, priority, _) in enumerate(ops):
        queue.push(f"{tenant}{index}", tenant, priority)
    for _ in range(pops_first):
        queue.pop()
    for index, (_, _, gone) in enumerate(ops):
        if gone:
            queue.remove(f"{ops[index][0]}{index}")
    twin = copy.deepcopy(queue)
    predicted = queue.order()
    assert predicted == drain(twin)
    assert queue.order() == predicted and len(queue) == len(predicted)
