"""The heartbeat (`proxy.replica.heartbeat`), its Python side, on a fake clock: what a renewal sends, what its
answers do to the replica's lease on safe capacity (`proxy.admission.safe_capacity.LocalLease`), and so when the
replica may spend locally and when it must stop.

Redis is an in-test client whose renew script answers what the test says (the live count and grants, or the
"read after its accept-by" answer, or a failure) and whose round trip takes the time the test says; the scripts'
Lua runs on a real Redis in tests/integration/test_safe_capacity_scripts.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.admission.safe_capacity import STALE_S, WINDOW_S, LocalLease
from proxy.replica.clock import RedisClock
from proxy.replica.heartbeat import LEAVE_SCRIPT, RENEW_SCRIPT, Heartbeat, RenewalLate, leases_key, shares_key
from proxy.replica.redis_clients import RedisClient, RedisUnavailable

T, W = "GetChatappTemplateDetail", "QueryChatappBindWaba"
CAPS = {T: 5, W: 10}
OFFSET = 5_000.0  # Redis's clock minus this replica's
ACCEPT_S = 0.5
LEASE_S = 30.0
HORIZON = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


Answer = Callable[[list[Any]], list[Any]]


class FakeRedis:
    """The two heartbeat scripts. Renew reads Redis's TIME ``up`` after the send (this replica's clock plus
    ``OFFSET``), answers "late" (-1) if that is past the accept-by the renewal carries, else ``answer(args)``, and
    the reply takes ``down`` more; ``fail`` makes every call raise it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.up = self.down = 0.001
        self.answer: Answer = lambda args: [1, *args[5::3]]  # alone: the whole of each cap
        self.fail: Exception | None = None
        self.renewals: list[tuple[list[str], list[Any]]] = []
        self.leaves: list[tuple[list[str], list[Any]]] = []

    def register_script(self, source: str) -> Any:
        async def script(*, keys: list[str], args: list[Any]) -> Any:
            (self.renewals if source == RENEW_SCRIPT else self.leaves).append((keys, args))
            if self.fail is not None:
                raise self.fail
            if source == LEAVE_SCRIPT:
                return 0
            assert source == RENEW_SCRIPT
            self.clock.now += self.up
            redis_now = self.clock() + OFFSET
            self.clock.now += self.down
            seconds, micros = divmod(round(redis_now * 1_000_000), 1_000_000)
            time = [str(seconds).encode(), str(micros).encode()]
            if redis_now * 1000 > int(args[1]):
                return [-1, *time]
            count, *grants = self.answer(args)
            return [count, *time, *grants]

        return script


def granting(live: int, **grants: int) -> Answer:
    return lambda args: [live, *(grants.get(name, 0) for name in args[4::3])]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis(clock: Clock) -> FakeRedis:
    return FakeRedis(clock)


def estimate(clock: Clock) -> RedisClock:
    """A clock estimate with one exact sample (binary fractions): offset ``OFFSET``, error bound 125 ms."""
    known = RedisClock()
    known.observe(clock() - 0.25, clock(), clock() - 0.125 + OFFSET)
    return known


def heartbeat(redis: FakeRedis, clock: Clock, *, known: bool = True, lease_s: float = LEASE_S) -> Heartbeat:
    return Heartbeat(cast(RedisClient, redis), "ak-1", "replica-a", CAPS, lease=LocalLease(lease_s, HORIZON),
                     clock=estimate(clock) if known else RedisClock(), accept_s=ACCEPT_S, now=clock)


# --- what a renewal sends --------------------------------------------------------------------------------------


async def test_a_renewal_sends_its_accept_by_on_redis_clock_the_stale_and_hold_times_and_each_caps_belief(
        redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    redis.answer = granting(2, **{T: 3, W: 5})
    asked = clock()
    await beat.beat()
    keys, args = redis.renewals[-1]
    assert keys == [leases_key("ak-1"), shares_key("ak-1")] == ["cams:leases:{ak-1}", "cams:shares:{ak-1}"]
    assert args == ["replica-a", int((asked + OFFSET + ACCEPT_S) * 1000), int(STALE_S * 1000),
                    int((LEASE_S + WINDOW_S) * 1000), T, 5, 0, W, 10, 0]  # beliefs 0: nothing granted yet
    await beat.beat()
    assert redis.renewals[-1][1][4:] == [T, 5, 3, W, 10, 5]  # then what it was granted


async def test_once_the_lease_ran_out_a_renewal_reports_believing_nothing(redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock, lease_s=10.0)
    redis.answer = granting(1, **{T: 5, W: 10})
    await beat.beat()
    renewed_at = beat.lease.renewed_at
    assert renewed_at is not None
    clock.now = renewed_at + 10.0  # no renewal landed for a whole lease (replies lost, say)
    redis.fail = RedisConnectionError("down")
    with pytest.raises(RedisUnavailable):
        await beat.beat()
    assert redis.renewals[-1][1][4:] == [T, 5, 0, W, 10, 0]


# --- what the answers do -----------------------------------------------------------------------------------


async def test_an_acknowledged_renewal_grants_the_shares_and_counts_the_live_replicas(redis: FakeRedis,
                                                                                      clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    redis.answer = granting(3, **{T: 2, W: 4})
    assert await beat.beat() == 3
    assert beat.live == 3 and beat.lease.shares == {T: 2, W: 4}
    assert beat.lease.share(T, clock()) == 2 and beat.lease.status(clock())["granted"] is True


async def test_the_live_count_is_never_below_this_replica(redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    redis.answer = granting(0)
    assert await beat.beat() == 1 and beat.live == 1


async def test_the_lease_lasts_from_the_send_of_the_renewal_not_from_its_reply(redis: FakeRedis,
                                                                             clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    redis.up = redis.down = 0.15
    sent = clock()
    await beat.beat()
    assert beat.lease.renewed_at == sent and beat.lease.lease_until() == sent + LEASE_S
    assert beat.lease.share(T, sent + LEASE_S - 0.001) == 5 and beat.lease.share(T, sent + LEASE_S) == 0


async def test_every_renewal_feeds_the_estimate_of_redis_clock(redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    assert beat.clock.uncertainty == 0.125
    await beat.beat()  # a faster round trip than the estimate's: it becomes the estimate
    assert beat.clock.observed == 2 and beat.clock.uncertainty == pytest.approx(0.001)
    assert beat.clock.offset == pytest.approx(OFFSET, abs=1e-6)


async def test_a_renewal_before_the_clock_estimate_is_known_carries_a_void_accept_by(redis: FakeRedis,
                                                                                  clock: Clock) -> None:
    """Why `due` waits for the estimate: without it the accept-by is on this replica's clock, long past on Redis's."""
    beat = heartbeat(redis, clock, known=False)
    with pytest.raises(RenewalLate):
        await beat.beat()
    assert beat.lease.renewed_at is None and beat.clock.known  # not renewed, but now the clock is known
    await beat.beat()
    assert beat.lease.renewed_at is not None


async def test_a_renewal_redis_read_after_its_accept_by_renews_nothing(redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    redis.answer = granting(2, **{T: 3, W: 5})
    await beat.beat()
    before = (beat.lease.renewed_at, dict(beat.lease.shares), beat.live)
    clock.now += 1.0
    redis.up = ACCEPT_S - 0.01  # read just before its accept-by (with the estimate's 1 ms error): renewed
    await beat.beat()
    assert beat.late == 0 and beat.lease.renewed_at == pytest.approx(before[0] + 1.002)
    before = (beat.lease.renewed_at, dict(beat.lease.shares), beat.live)
    clock.now += 1.0
    redis.up = ACCEPT_S + 0.01  # read after its accept-by: Redis ignores it
    with pytest.raises(RenewalLate):
        await beat.beat()
    assert beat.late == 1
    assert (beat.lease.renewed_at, beat.lease.shares, beat.live) == before  # the lease was not extended
    assert beat.clock.observed == 4  # but its TIME is still a clock sample


async def test_a_failed_renewal_renews_nothing_and_is_redis_unavailable(redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    await beat.beat()
    renewed_at = beat.lease.renewed_at
    clock.now += 1.0
    redis.fail = RedisConnectionError("reset")
    with pytest.raises(RedisUnavailable) as caught:
        await beat.beat()
    assert caught.value.__cause__ is redis.fail
    assert beat.lease.renewed_at == renewed_at


# --- when the replica may spend locally, and when it must stop ---------------------------------------------


async def test_local_spending_waits_for_every_renewal_that_could_still_land_even_a_failed_or_late_one(
        redis: FakeRedis, clock: Clock) -> None:
    """A renewal whose reply is lost may still have reached Redis, up to its accept-by plus the clock estimate's
    error: the replica may spend locally only once that renewal would be stale too, and its shared slots are past."""
    beat = heartbeat(redis, clock)
    await beat.beat()
    first = beat.lease.renewed_at
    assert first is not None
    clock.now += 1.0
    sent = clock()
    redis.fail = RedisConnectionError("reply lost")
    with pytest.raises(RedisUnavailable):
        await beat.beat()
    may_land_until = sent + ACCEPT_S + beat.clock.uncertainty
    assert beat.lease.may_land_until == may_land_until
    assert beat.lease.local_from(failed_at=clock()) == may_land_until + STALE_S + HORIZON + WINDOW_S
    redis.fail = None
    clock.now += 1.0
    sent = clock()
    redis.up = ACCEPT_S + 0.01
    with pytest.raises(RenewalLate):
        await beat.beat()  # ignored by Redis, yet it could have landed as far as this replica can tell
    assert beat.lease.may_land_until == pytest.approx(sent + ACCEPT_S + beat.clock.uncertainty)
    assert beat.lease.lease_until() == first + LEASE_S  # neither extended the lease


async def test_an_outage_spends_from_local_from_until_lease_s_after_the_last_acknowledged_renewal(
        redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock, lease_s=10.0)
    redis.answer = granting(2, **{T: 3, W: 5})
    for _ in range(3):  # renewals at 1000, 1001, 1002
        await beat.beat()
        clock.now = round(clock.now) + 1.0
    last_acknowledged = beat.lease.renewed_at
    assert last_acknowledged == 1002.0
    redis.fail = RedisConnectionError("down")
    with pytest.raises(RedisUnavailable):
        await beat.beat()  # sent at 1003, lost
    lease = beat.lease
    starts = lease.local_from(failed_at=clock())
    assert starts == pytest.approx(1003.0 + ACCEPT_S + beat.clock.uncertainty + STALE_S + HORIZON + WINDOW_S)
    assert lease.share(T, starts) == 3 and lease.share(W, starts) == 5  # from here it may spend its shares
    assert lease.share(T, 1002.0 + 10.0 - 0.001) == 3 and lease.share(T, 1012.0) == 0  # and must stop here
    assert "ran out" in lease.why_none(T, 1012.0)


async def test_a_replica_renews_again_only_a_window_after_its_last_local_send(redis: FakeRedis,
                                                                              clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    await beat.beat()
    assert beat.due(clock())
    beat.lease.spent_locally(clock() + 0.2)  # a local send, by 0.2 s from now
    assert not beat.due(clock() + 0.2 + WINDOW_S - 0.001)
    assert beat.due(clock() + 0.2 + WINDOW_S)


def test_no_renewal_is_due_before_the_clock_estimate_is_known(redis: FakeRedis, clock: Clock) -> None:
    assert not heartbeat(redis, clock, known=False).due(clock())
    assert heartbeat(redis, clock).due(clock())


# --- leaving -----------------------------------------------------------------------------------------------


async def test_leaving_drops_the_record_at_once_or_keeps_the_shares_held_back_for_the_rest_of_the_window(
        redis: FakeRedis, clock: Clock) -> None:
    beat = heartbeat(redis, clock)
    await beat.leave()
    assert redis.leaves[-1] == ([leases_key("ak-1"), shares_key("ak-1")], ["replica-a", 0, T, W])
    beat.lease.spent_locally(clock() - 0.5)  # sent locally half a second ago: a second of its window is left
    await beat.leave()
    assert redis.leaves[-1][1][:2] == ["replica-a", 1000]


async def test_leaving_while_redis_is_down_is_harmless(redis: FakeRedis, clock: Clock) -> None:
    redis.fail = RedisConnectionError("down")
    await heartbeat(redis, clock).leave()
    assert len(redis.leaves) == 1
