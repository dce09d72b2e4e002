"""The bounded nonce registry (pure: times given by the test): a nonce is never accepted twice, memory is bounded,
and when full the accepted skew shrinks instead of forgetting a nonce that could still be replayed."""

from __future__ import annotations

import random

from proxy.nonces import MemoryNonces

SKEW = 900.0


def test_a_nonce_is_accepted_once_per_key_and_forgotten_after_twice_the_skew() -> None:
    nonces = MemoryNonces(SKEW)
    assert nonces.use("ak", "n1", signed_at=1000.0, now=1000.0) == "fresh"
    assert nonces.use("ak", "n1", signed_at=1000.0, now=1001.0) == "replayed"
    assert nonces.use("other", "n1", signed_at=1000.0, now=1001.0) == "fresh"  # per AccessKey
    assert nonces.use("ak", "n2", signed_at=1000.0 + 2 * SKEW + 10, now=1000.0 + 2 * SKEW + 10) == "fresh"
    assert len(nonces) == 1  # the first two were past their retention: the date check refuses them anyway


def test_when_full_the_oldest_is_forgotten_and_requests_it_could_have_been_are_refused() -> None:
    nonces = MemoryNonces(SKEW, max_entries=3)
    for i in range(3):
        assert nonces.use("ak", f"n{i}", signed_at=100.0 + i, now=100.0 + i) == "fresh"
    assert nonces.use("ak", "n3", signed_at=103.0, now=103.0) == "fresh"  # n0 (seen at 100) forgotten
    assert len(nonces) == 3 and nonces.floor == 100.0
    # n0 replayed: its date (100) is within the skew of the floor, so it is refused, not accepted again
    assert nonces.use("ak", "n0", signed_at=100.0, now=104.0) == "too_old"
    # a new request signed now is refused until its date is later than floor + skew: the skew shrank
    assert nonces.use("ak", "n9", signed_at=104.0, now=104.0) == "too_old"
    assert nonces.use("ak", "n9", signed_at=100.0 + SKEW + 1, now=100.0 + SKEW + 1) == "fresh"


def test_no_sequence_of_requests_accepts_a_nonce_twice_and_the_bound_holds() -> None:
    rng = random.Random(5)
    nonces = MemoryNonces(60.0, max_entries=50)
    accepted: dict[str, float] = {}
    now = 0.0
    for _ in range(20_000):
        now += rng.expovariate(20.0)
        nonce = f"n{rng.randrange(400)}"
        signed_at = now - rng.uniform(0, 60.0)  # the date check (±skew) already passed
        verdict = nonces.use("ak", nonce, signed_at, now)
        if verdict == "fresh":
            assert nonce not in accepted or now - accepted[nonce] > 60.0, nonce
            accepted[nonce] = now
        assert len(nonces) <= 50
    assert nonces.stats.forgotten > 0 and nonces.stats.too_old > 0 and nonces.stats.replayed > 0
