"""The shared budget's reserve script on a real redis-server: the widest spacing any replica measured holds for
every replica, and a replica still learning its path spaces its own slots wide without imposing its guess."""

from __future__ import annotations

import uuid

import pytest

from proxy.admission.shared import RedisBudget, widest_key
from proxy.replica.redis_clients import RedisClient

TEMPLATE = "GetChatappTemplateDetail"


async def test_a_measured_wide_spacing_holds_for_everyone(client: RedisClient) -> None:
    budget = RedisBudget(client, f"acct-{uuid.uuid4().hex[:8]}")
    wide, narrow = 0.25, 0.204
    first = await budget.reserve(TEMPLATE, wide, 10.0, cap=5)
    second = await budget.reserve(TEMPLATE, narrow, 10.0, cap=5)  # another replica, narrower: the wide one holds
    third = await budget.reserve(TEMPLATE, narrow, 10.0, cap=5)
    assert second.slot - first.slot == pytest.approx(wide, abs=0.005)
    assert third.slot - second.slot == pytest.approx(wide, abs=0.005)


async def test_a_learning_replica_spaces_its_own_slot_wide_but_its_guess_is_not_remembered(
        client: RedisClient) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    budget = RedisBudget(client, account)
    learning, measured = 0.25, 0.204
    first = await budget.reserve(TEMPLATE, measured, 10.0, cap=5)
    second = await budget.reserve(TEMPLATE, learning, 10.0, cap=5, learning=True)
    third = await budget.reserve(TEMPLATE, measured, 10.0, cap=5)
    fourth = await budget.reserve(TEMPLATE, measured, 10.0, cap=5)
    assert second.slot - first.slot == pytest.approx(measured, abs=0.005)
    assert third.slot - second.slot == pytest.approx(learning, abs=0.005)  # wide after the learner's slot
    assert fourth.slot - third.slot == pytest.approx(measured, abs=0.005)  # and the others keep what they measured
    assert int(await client.get(widest_key(account, TEMPLATE)) or 0) == round(measured * 1_000_000)
    together = RedisBudget(client, f"acct-{uuid.uuid4().hex[:8]}")
    a = await together.reserve(TEMPLATE, learning, 10.0, cap=5, learning=True)
    b = await together.reserve(TEMPLATE, learning, 10.0, cap=5, learning=True)
    assert b.slot - a.slot == pytest.approx(learning, abs=0.005)  # all learning (a cold start): every slot wide
