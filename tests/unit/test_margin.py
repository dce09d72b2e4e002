"""The adaptive margin δ(t), pure: answer times and throttles in, δ out, on times given by the test."""

from __future__ import annotations

import random

import pytest

from proxy.admission.margin import CEILING_S, MIN_SAMPLES, AdaptiveMargin


def answers(jitter_ms: float, count: int, seed: int = 1) -> list[float]:
    """Answer times of a path with 40 ms each way and uniform ±jitter on both legs."""
    rng = random.Random(seed)
    return [0.080 + rng.uniform(-jitter_ms, jitter_ms) / 1000 + rng.uniform(-jitter_ms, jitter_ms) / 1000
            for _ in range(count)]


def test_the_floor_holds_until_enough_answers_and_on_a_quiet_path() -> None:
    margin = AdaptiveMargin(0.02)
    for sample in answers(25, MIN_SAMPLES - 1):
        margin.observe(sample)
    assert margin.value(0.0) == 0.02  # too few answers to estimate anything
    quiet = AdaptiveMargin(0.02)
    for sample in answers(0.5, 64):
        quiet.observe(sample)
    assert quiet.value(0.0) == 0.02  # loopback-like jitter stays under the floor


def test_the_margin_covers_the_measured_one_way_spread() -> None:
    margin = AdaptiveMargin(0.02)
    for sample in answers(25, 64):
        margin.observe(sample)
    # one-way ±25 ms: arrivals spread by up to 50 ms; δ must cover it plus the guard (5 ms)
    assert 0.05 <= margin.spread_s <= 0.07
    assert margin.value(0.0) == pytest.approx(margin.guard_s + margin.spread_s)
    assert margin.value(0.0) < 0.08  # and costs little more (utilisation >= 0.925)


@pytest.mark.parametrize("count", [20, 64])
def test_the_estimate_errs_wide_on_a_small_sample(count: int) -> None:
    # A replica of three sees a third of the answers. Over many samples of the same ±25 ms path, the estimate
    # covers the true 50 ms one-way spread nearly always, and is never far over it.
    covered, widest = 0, 0.0
    for seed in range(200):
        margin = AdaptiveMargin(0.02)
        for sample in answers(25, count, seed=seed):
            margin.observe(sample)
        covered += margin.spread_s >= 0.05
        widest = max(widest, margin.spread_s)
    assert covered >= 180, covered  # >= 90 % (a plain sqrt6 x std covers about half)
    assert widest < 0.11, widest


def test_a_learning_margin_is_the_ceiling_until_the_path_is_measured() -> None:
    margin = AdaptiveMargin(0.01, learning=True)
    assert margin.value(0.0) == CEILING_S and margin.status(0.0)["learning"] is True
    for sample in answers(25, MIN_SAMPLES - 1):
        margin.observe(sample)
    assert margin.value(0.0) == CEILING_S  # a guess is never sent on
    margin.observe(answers(25, 1, seed=9)[0])
    assert margin.learned and margin.status(0.0)["learning"] is False
    assert margin.value(0.0) == pytest.approx(max(0.01, margin.guard_s + margin.spread_s))
    assert margin.value(0.0) < CEILING_S
    quiet = AdaptiveMargin(0.01, learning=True)
    for sample in answers(0.2, MIN_SAMPLES):
        quiet.observe(sample)
    assert quiet.value(0.0) == 0.01  # a loopback-like path learns down to the floor


def test_the_guard_is_five_ms_or_the_floor() -> None:
    assert AdaptiveMargin(0.04).guard_s == pytest.approx(0.005)
    assert AdaptiveMargin(0.003).guard_s == pytest.approx(0.003)
    assert AdaptiveMargin(0.0).value(0.0) == 0.0


def test_a_throttle_widens_at_once_then_decays_back_slowly() -> None:
    margin = AdaptiveMargin(0.02, half_life_s=60.0)
    for sample in answers(10, 64):
        margin.observe(sample)
    measured = margin.value(0.0)
    margin.throttled(100.0)
    assert margin.value(100.0) == pytest.approx(max(1.5 * measured, measured + 0.02, 0.04))
    assert margin.value(160.0) == pytest.approx(max(measured, 0.75 * measured, 0.02, margin.bump(160.0)))
    assert margin.bump(160.0) == pytest.approx(margin.bump(100.0) / 2)
    assert margin.value(100.0 + 600.0) == pytest.approx(measured, abs=1e-4)  # back to what is measured


def test_throttles_do_not_compound_and_the_ceiling_holds() -> None:
    margin = AdaptiveMargin(0.02)
    for _ in range(20):
        margin.throttled(5.0)
    assert margin.value(5.0) == pytest.approx(0.04)  # 2 × floor, not 1.5**20 × it
    wide = AdaptiveMargin(0.02)
    for sample in answers(400, 64):
        wide.observe(sample)
    assert wide.value(0.0) == CEILING_S


def test_a_large_change_is_reported_once() -> None:
    margin = AdaptiveMargin(0.02)
    assert not margin.changed_much(0.0)
    for sample in answers(25, 64):
        margin.observe(sample)
    assert margin.changed_much(0.0)
    assert not margin.changed_much(0.0)


def test_nonsense_answer_times_are_ignored() -> None:
    margin = AdaptiveMargin(0.02)
    for sample in [float("nan"), -1.0, float("inf")] * 10:
        margin.observe(sample)
    assert margin.status(0.0)["samples"] == 0 and margin.value(0.0) == 0.02
