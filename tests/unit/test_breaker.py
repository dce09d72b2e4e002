"""The circuit breaker, on a fake clock: transitions, the probe lease, and probes that end without a verdict."""

from __future__ import annotations

import asyncio

import pytest

from proxy.replica.breaker import BreakerState, CircuitBreaker


def state(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call (so a type checker does not narrow it across transitions)."""
    return breaker.state


def opened(now: float = 100.0, cooldown: float = 1.0, probe_timeout: float = 5.0) -> CircuitBreaker:
    breaker = CircuitBreaker(cooldown=cooldown, probe_timeout=probe_timeout)
    breaker.failure(now)
    return breaker


def test_closed_allows_everything_and_a_failure_opens() -> None:
    breaker = CircuitBreaker()
    assert breaker.healthy and all(breaker.allow(t) for t in (0.0, 0.0, 1.0))
    breaker.failure(10.0)
    assert (state(breaker), breaker.healthy, breaker.failures, breaker.opened_at) == (BreakerState.OPEN, False, 1,
                                                                                    10.0)


def test_open_refuses_until_the_cooldown_then_one_probe_goes() -> None:
    breaker = opened(100.0)
    assert not breaker.allow(100.5)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.allow(101.0)  # cooldown passed: the one probe
    assert state(breaker) is BreakerState.HALF_OPEN and breaker.probe_in_flight
    assert not breaker.allow(101.1) and not breaker.allow(105.9)  # one probe at a time


def test_a_successful_probe_closes_and_records_the_recovery() -> None:
    breaker = opened(100.0)
    assert breaker.allow(101.0)
    breaker.success(101.2)
    assert breaker.healthy and breaker.recovered_at == 101.2 and not breaker.probe_in_flight
    breaker.success(150.0)  # a success while closed is no recovery
    assert breaker.recovered_at == 101.2


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    breaker = opened(100.0)
    assert breaker.allow(101.0)
    breaker.failure(101.3)
    assert state(breaker) is BreakerState.OPEN and breaker.failures == 2 and not breaker.probe_in_flight
    assert not breaker.allow(102.2)
    assert breaker.allow(102.3)


def test_probe_done_gives_the_verdict_or_only_releases_the_probe() -> None:
    breaker = opened(100.0)
    assert breaker.allow(101.0)
    breaker.probe_done(None, 101.1)  # no verdict: still half-open, but the next caller may probe at once
    assert state(breaker) is BreakerState.HALF_OPEN and not breaker.probe_in_flight
    assert breaker.allow(101.1)
    breaker.probe_done(False, 101.2)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.allow(102.2)
    breaker.probe_done(True, 102.3)
    assert breaker.healthy and breaker.recovered_at == 102.3


def test_a_lost_probe_expires_after_its_lease_and_a_new_one_goes() -> None:
    breaker = opened(100.0, probe_timeout=5.0)
    assert breaker.allow(101.0)  # this probe never reports (its task vanished)
    assert not breaker.allow(105.9)
    assert breaker.allow(106.0)  # lease over: lost, another probe may go
    assert breaker.lost_probes == 1 and state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow(106.1)
    breaker.success(106.2)
    assert breaker.healthy


def test_a_late_report_from_a_lost_probe_never_releases_the_newer_probe() -> None:
    breaker = opened(100.0, probe_timeout=5.0)
    assert breaker.allow(101.0)
    old_start = 101.0
    assert breaker.allow(106.0)  # the first probe is lost; the second is in flight
    breaker.probe_done(None, 106.5, started=old_start)  # the first one's caller finally gives up
    assert breaker.probe_in_flight and not breaker.allow(106.6)  # the second probe still holds the lease


def test_probing_releases_a_probe_that_raised() -> None:
    breaker = opened(100.0)
    assert breaker.allow(101.0)
    with pytest.raises(RuntimeError), breaker.probing():
        raise RuntimeError("a bug in the probe")
    assert state(breaker) is BreakerState.HALF_OPEN and breaker.allow(101.0)


def test_probing_keeps_a_verdict_given_inside_the_block() -> None:
    breaker = opened(100.0)
    assert breaker.allow(101.0)
    with breaker.probing():
        breaker.success(101.1)
    assert breaker.healthy
    breaker.failure(102.0)
    assert breaker.allow(103.0)
    with pytest.raises(ConnectionError), breaker.probing():
        breaker.failure(103.1)
        raise ConnectionError("redis refused")
    assert state(breaker) is BreakerState.OPEN and breaker.opened_at == 103.1


async def test_a_cancelled_probe_is_released_at_once() -> None:
    """The bug this guards: a probe cancelled by its caller's deadline left the breaker half-open for good."""
    breaker = opened(100.0, probe_timeout=5.0)
    assert breaker.allow(101.0)
    hang = asyncio.Event()

    async def probe() -> None:
        with breaker.probing():
            await hang.wait()  # Redis never answers

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):  # the caller's deadline
            await probe()
    assert state(breaker) is BreakerState.HALF_OPEN and not breaker.probe_in_flight
    assert breaker.abandoned_probes == 1
    assert breaker.allow(101.0)  # no need to wait out the lease
    breaker.success(101.2)
    assert breaker.healthy


async def test_without_probing_a_cancelled_probe_still_expires_with_its_lease() -> None:
    breaker = opened(100.0, probe_timeout=5.0)
    assert breaker.allow(101.0)
    task = asyncio.get_running_loop().create_task(asyncio.Event().wait())
    task.cancel()  # the probe's task is gone without reporting
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not breaker.allow(102.0)
    assert breaker.allow(106.0) and breaker.lost_probes == 1


def test_only_probes_without_a_verdict_count_as_abandoned() -> None:
    breaker = opened(100.0)
    assert breaker.allow(101.0)
    with pytest.raises(ConnectionError), breaker.probing():
        raise ConnectionError("redis refused")  # an error: its caller reports the failure
    breaker.failure(101.1)
    assert breaker.allow(102.1)
    breaker.probe_done(None, 102.2)
    assert breaker.abandoned_probes == 1 and breaker.lost_probes == 0
