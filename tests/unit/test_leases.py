"""Fill leases (`proxy.replica.leases`), the Python side, on a fake clock: who may fill a key, renewal, release.

Redis is a small in-test store with ``SET NX PX`` and expiry on the test's clock, and the two scripts (release:
compare-and-delete; renew: compare-and-``PEXPIRE``) modelled by what their Lua says; it checks that `Leases` sends
each script its own text, key and arguments. What is tested is what `Leases` asks Redis and what it makes of the
answers and of failures; the scripts' Lua itself runs on a real Redis only in the integration suite.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.replica.leases import RELEASE, RENEW, Leases, LeaseUnavailable, lease_key
from proxy.replica.redis_clients import RedisClient, RedisUnavailable

KEY = "GetChatappTemplateDetail|abc"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeRedis:
    """Strings with a millisecond expiry on ``clock``; ``fail`` makes every call raise it (Redis down)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.values: dict[str, tuple[bytes, float]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail: Exception | None = None

    def _live(self, key: str) -> bytes | None:
        found = self.values.get(key)
        if found is None or self.clock() >= found[1]:
            self.values.pop(key, None)
            return None
        return found[0]

    def pttl(self, key: str) -> int:
        return -2 if self._live(key) is None else round((self.values[key][1] - self.clock()) * 1000)

    async def set(self, key: str, value: str, *, nx: bool = False, px: int | None = None) -> bool | None:
        self.calls.append(("set", (key, value, nx, px)))
        if self.fail is not None:
            raise self.fail
        assert px is not None and px > 0, "Redis refuses SET PX 0"
        if nx and self._live(key) is not None:
            return None
        self.values[key] = (value.encode(), self.clock() + px / 1000)
        return True

    def register_script(self, source: str) -> Any:
        async def script(*, keys: list[str], args: list[Any]) -> int:
            self.calls.append(("script", (source, keys, args)))
            if self.fail is not None:
                raise self.fail
            (key,) = keys
            mine = self._live(key) == str(args[0]).encode()
            if source == RELEASE:
                return int(mine and self.values.pop(key) is not None)
            assert source == RENEW
            if not mine:
                return 0
            self.values[key] = (self.values[key][0], self.clock() + int(args[1]) / 1000)
            return 1

        return script


def leases(redis: FakeRedis, replica: str, ttl_s: float = 2.0, healthy: bool = True) -> Leases:
    return Leases(cast(RedisClient, redis), replica, ttl_s, healthy=lambda: healthy)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis(clock: Clock) -> FakeRedis:
    return FakeRedis(clock)


async def test_one_replica_takes_the_lease_with_set_nx_px_for_its_ttl_the_others_are_refused(
        redis: FakeRedis) -> None:
    a, b = leases(redis, "a", ttl_s=2.0), leases(redis, "b", ttl_s=2.0)
    assert await a.acquire(KEY) is True
    assert await b.acquire(KEY) is False
    assert await a.acquire(KEY) is False  # not re-entrant: the holder asking again is refused too
    assert redis.calls[0] == ("set", (lease_key(KEY), "a", True, 2000))
    assert redis.pttl(lease_key(KEY)) == 2000


def test_the_lease_key_carries_the_cache_key_as_its_hash_tag() -> None:
    assert lease_key(KEY) == "cams:lease:{" + KEY + "}"


async def test_a_holder_that_dies_loses_the_lease_after_ttl_and_exactly_one_waiter_takes_it_over(
        redis: FakeRedis, clock: Clock) -> None:
    holder = leases(redis, "dead", ttl_s=2.0)
    assert await holder.acquire(KEY)
    waiters = [leases(redis, f"w{i}", ttl_s=2.0) for i in range(5)]
    clock.now += 1.999
    assert [await w.acquire(KEY) for w in waiters] == [False] * 5
    clock.now += 0.001
    assert [await w.acquire(KEY) for w in waiters] == [True, False, False, False, False]


async def test_renewal_by_the_holder_extends_the_lease_by_a_full_ttl_from_now(redis: FakeRedis,
                                                                               clock: Clock) -> None:
    a = leases(redis, "a", ttl_s=1.5)
    await a.acquire(KEY)
    clock.now += 1.0
    assert await a.renew(KEY) is True
    assert redis.calls[-1] == ("script", (RENEW, [lease_key(KEY)], ["a", 1500]))
    assert redis.pttl(lease_key(KEY)) == 1500
    clock.now += 1.4  # 2.4 s after the acquire, past the first ttl: still held thanks to the renewal
    assert await leases(redis, "b", ttl_s=1.5).acquire(KEY) is False


async def test_renewal_of_a_lease_that_is_no_longer_ours_says_so_and_extends_nothing(redis: FakeRedis,
                                                                                    clock: Clock) -> None:
    a, b = leases(redis, "a"), leases(redis, "b")
    await a.acquire(KEY)
    clock.now += 2.0  # a's lease expired (a stalled), b took it over
    assert await b.acquire(KEY)
    clock.now += 0.5
    assert await a.renew(KEY) is False
    assert redis.pttl(lease_key(KEY)) == 1500  # b's expiry, untouched
    assert await leases(redis, "c").renew("never-leased") is False


async def test_release_removes_only_the_callers_own_lease(redis: FakeRedis, clock: Clock) -> None:
    a, b = leases(redis, "a"), leases(redis, "b")
    await a.acquire(KEY)
    clock.now += 2.0
    await b.acquire(KEY)  # a's lease ran out meanwhile
    await a.release(KEY)  # a late release must not remove b's lease
    assert redis.calls[-1] == ("script", (RELEASE, [lease_key(KEY)], ["a"]))
    assert await leases(redis, "c").acquire(KEY) is False
    await b.release(KEY)
    assert await leases(redis, "c").acquire(KEY) is True


async def test_a_ttl_in_fractions_of_a_second_is_sent_in_milliseconds(redis: FakeRedis) -> None:
    a = leases(redis, "a", ttl_s=0.25)
    await a.acquire(KEY)
    await a.renew(KEY)
    assert redis.calls[0][1][3] == 250 and redis.calls[1][1][2] == ["a", 250]


async def test_while_the_breaker_says_redis_is_down_acquire_raises_without_asking_redis(redis: FakeRedis) -> None:
    down = leases(redis, "a", healthy=False)
    with pytest.raises(LeaseUnavailable, match="marked down"):
        await down.acquire(KEY)
    assert redis.calls == []


@pytest.mark.parametrize("failure", [RedisConnectionError("refused"), RedisTimeoutError("slow"), OSError("reset")],
                         ids=["refused", "timeout", "socket"])
async def test_a_redis_failure_on_acquire_or_renew_is_lease_unavailable_chained_from_the_original(
        redis: FakeRedis, failure: Exception) -> None:
    a = leases(redis, "a")
    redis.fail = failure
    for call in (a.acquire, a.renew):
        with pytest.raises(LeaseUnavailable) as caught:
            await call(KEY)
        assert isinstance(caught.value, RedisUnavailable) and caught.value.__cause__ is failure


async def test_a_failed_release_is_harmless_the_lease_expires_on_its_own(redis: FakeRedis, clock: Clock) -> None:
    a = leases(redis, "a")
    await a.acquire(KEY)
    redis.fail = RedisConnectionError("gone")
    await a.release(KEY)  # no exception
    redis.fail = None
    assert await leases(redis, "b").acquire(KEY) is False  # still held: the release never reached Redis
    clock.now += 2.0
    assert await leases(redis, "b").acquire(KEY) is True


async def test_a_bug_is_not_translated_into_lease_unavailable(redis: FakeRedis) -> None:
    redis.fail = TypeError("a bug in a caller")
    with pytest.raises(TypeError):
        await leases(redis, "a").acquire(KEY)
