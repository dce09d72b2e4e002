"""The safe-capacity scripts on a real redis-server: grants never add up to more than a cap, whatever the order of
renewals, lost replies, joins and leaves; the shared budget holds back the shares of replicas cut from Redis.

Replicas here are `Heartbeat` objects on one client with a clock of the test's own (loop times are the test's);
what is counted is what each replica believes it may spend alone, and what Redis holds for it.
"""

from __future__ import annotations

import random
import time
import uuid

import pytest

from proxy.admission.safe_capacity import STALE_S, LocalLease
from proxy.admission.shared import RedisBudget
from proxy.replica.clock import RedisClock
from proxy.replica.heartbeat import Heartbeat, RenewalLate, leases_key, shares_key
from proxy.replica.redis_clients import RedisClient

CAPS = {"GetChatappTemplateDetail": 5, "QueryChatappBindWaba": 10}
TEMPLATE = "GetChatappTemplateDetail"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(client: RedisClient, account: str, clock: Clock, name: str, accept_s: float = 30.0) -> Heartbeat:
    redis_clock = RedisClock()
    redis_clock.observe(clock(), clock(), time.time())  # Redis's clock against the test's (same host: exact enough)
    return Heartbeat(client, account, name, CAPS, lease=LocalLease(60.0), clock=redis_clock, accept_s=accept_s,
                     now=clock)


async def held(client: RedisClient, account: str, action: str) -> dict[str, int]:
    fields = await client.hgetall(shares_key(account))
    return {key.decode().rsplit("|", 1)[0]: int(value) for key, value in fields.items()
            if key.decode().endswith("|" + action)}


def believed(replicas: list[Heartbeat], action: str, now: float) -> int:
    return sum(r.lease.share(action, now) for r in replicas)


async def test_shares_converge_to_the_cap_split_by_rank_and_a_newcomer_gets_only_what_is_free(
        client: RedisClient) -> None:
    account, clock = f"acct-{uuid.uuid4().hex[:8]}", Clock()
    first = replica(client, account, clock, "a")
    assert await first.beat() == 1
    assert first.lease.shares == {TEMPLATE: 5, "QueryChatappBindWaba": 10}  # alone: the whole cap
    others = [replica(client, account, clock, name) for name in ("b", "c")]
    for other in others:
        await other.beat()
        assert other.lease.shares[TEMPLATE] == 0  # "a" still holds all of it: nothing is free yet
    everyone = [first, *others]
    for _ in range(3):
        for r in everyone:
            await r.beat()
            for action, cap in CAPS.items():
                assert believed(everyone, action, clock()) <= cap
                assert sum((await held(client, account, action)).values()) <= cap
    assert [r.lease.shares[TEMPLATE] for r in everyone] == [2, 2, 1]  # floor(5/3), one more for the first 5 mod 3
    assert [r.lease.shares["QueryChatappBindWaba"] for r in everyone] == [4, 3, 3]
    assert first.live == 3


async def test_no_order_of_renewals_lost_replies_joins_and_leaves_lets_the_shares_pass_the_cap(
        client: RedisClient) -> None:
    account, clock, rng = f"acct-{uuid.uuid4().hex[:8]}", Clock(), random.Random(13)
    replicas: list[Heartbeat] = []
    serial = 0
    for _step in range(400):
        clock.now += rng.uniform(0.0, 0.4)
        roll = rng.random()
        if roll < 0.06 or not replicas:
            serial += 1
            replicas.append(replica(client, account, clock, f"r{serial:03d}"))
        elif roll < 0.09 and len(replicas) > 1:
            leaving = replicas.pop(rng.randrange(len(replicas)))
            await leaving.leave()
        else:
            chosen = rng.choice(replicas)
            if rng.random() < 0.3:  # the reply is lost: Redis renewed, the replica never heard
                before = (dict(chosen.lease.shares), chosen.lease.renewed_at)
                await chosen.beat()
                chosen.lease.shares, chosen.lease.renewed_at = before
            else:
                await chosen.beat()
        for action, cap in CAPS.items():
            assert believed(replicas, action, clock()) <= cap, (action, [r.lease.shares for r in replicas])
            assert sum((await held(client, account, action)).values()) <= cap
    for _ in range(3):  # without losses the shares fill the cap again
        for r in replicas:
            await r.beat()
    for action, cap in CAPS.items():
        assert believed(replicas, action, clock()) == cap


async def test_a_renewal_read_after_its_accept_by_time_renews_nothing(client: RedisClient) -> None:
    account, clock = f"acct-{uuid.uuid4().hex[:8]}", Clock()
    late = replica(client, account, clock, "late", accept_s=-1.0)  # already past when it arrives
    with pytest.raises(RenewalLate):
        await late.beat()
    assert late.lease.renewed_at is None and late.late == 1
    assert await client.zcard(leases_key(account)) == 0


async def test_the_shared_budget_holds_back_the_share_of_a_replica_whose_renewals_stopped(
        client: RedisClient) -> None:
    account, clock = f"acct-{uuid.uuid4().hex[:8]}", Clock()
    everyone = [replica(client, account, clock, name) for name in ("a", "b", "c")]
    for _ in range(3):
        for r in everyone:
            await r.beat()
    budget = RedisBudget(client, account)
    interval = 0.2
    free = [await budget.reserve(TEMPLATE, interval, 10.0, cap=5) for _ in range(2)]
    assert [r.held_back for r in free] == [0, 0]
    assert free[1].wait_s - free[0].wait_s == pytest.approx(interval, abs=0.01)
    # "c" (share 1) stops renewing: once its last renewal is older than STALE_S, its share is held back.
    redis_ms = int(time.time() * 1000)
    await client.zadd(leases_key(account), {"c": redis_ms - int(STALE_S * 1000) - 100})
    cut = [await budget.reserve(TEMPLATE, interval, 10.0, cap=5) for _ in range(2)]
    assert [r.held_back for r in cut] == [1, 1]
    assert cut[1].wait_s - cut[0].wait_s == pytest.approx(interval * 5 / 4, abs=0.01)  # spaced for 4/s, not 5
    # Its hold ends (lease + window after its last renewal): nothing is held back any more.
    await client.hset(shares_key(account), "c|until", redis_ms - 1)
    assert (await budget.reserve(TEMPLATE, interval, 10.0, cap=5)).held_back == 0
    # ... and the next renewal forgets it, so its share goes to the live ones.
    for _ in range(2):
        for r in everyone[:2]:
            await r.beat()
    assert sorted(r.lease.shares[TEMPLATE] for r in everyone[:2]) == [2, 3]
    assert "c" not in await held(client, account, TEMPLATE)


async def test_leaving_right_after_local_sends_keeps_the_share_held_for_the_rest_of_the_window(
        client: RedisClient) -> None:
    account, clock = f"acct-{uuid.uuid4().hex[:8]}", Clock()
    a, b = replica(client, account, clock, "a"), replica(client, account, clock, "b")
    for _ in range(3):
        await a.beat()
        await b.beat()
    a.lease.spent_locally(clock())  # it has just sent on its own share
    await a.leave()
    budget = RedisBudget(client, account)
    assert (await budget.reserve(TEMPLATE, 0.2, 10.0, cap=5)).held_back == a.lease.shares[TEMPLATE]
    await b.leave()  # nothing sent locally: gone at once
    assert "b" not in await held(client, account, TEMPLATE)
