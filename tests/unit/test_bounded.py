"""The side caches' bounded map and the split of --memory-max-bytes (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.bounded import BoundedMap, memory_shares


@given(max_bytes=st.integers(0, 5_000), max_entries=st.integers(0, 20),
       puts=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2_000)), max_size=200))
def test_both_bounds_hold_after_every_put_and_the_newest_fitting_value_is_kept(
        max_bytes: int, max_entries: int, puts: list[tuple[int, int]]) -> None:
    bounded: BoundedMap[int, int] = BoundedMap(max_bytes, max_entries)
    for key, size in puts:
        kept = bounded.put(key, size, size)
        assert bounded.bytes_used <= max_bytes and len(bounded) <= max_entries
        assert bounded.bytes_used == sum(bounded.mapping.values())  # the counted bytes are the held values'
        assert kept == (size <= max_bytes and max_entries > 0)
        assert (bounded.get(key) == size) if kept else (key not in bounded)


def test_the_oldest_insertion_goes_first_and_a_put_again_counts_as_new() -> None:
    bounded: BoundedMap[str, str] = BoundedMap(max_bytes=30)
    for key in "abc":
        bounded.put(key, key, 10)
    bounded.put("a", "a", 10)  # a is now the newest
    bounded.put("d", "d", 10)
    assert list(bounded) == ["c", "a", "d"]
    assert bounded.pop("c") == "c" and bounded.bytes_used == 20
    bounded.clear()
    assert len(bounded) == 0 and bounded.bytes_used == 0


@pytest.mark.parametrize("redis", [False, True])
@given(max_bytes=st.integers(0, 2**40))
def test_the_shares_never_add_up_to_more_than_the_budget(redis: bool, max_bytes: int) -> None:
    shares = memory_shares(max_bytes, redis=redis)
    assert shares.total == max_bytes
    assert min(shares.cache, shares.hit_headers, shares.call_memo, shares.decoded, shares.tag_index) >= 0
    assert (shares.decoded > 0) == (redis and max_bytes >= 16) and (shares.tag_index == 0) == (redis or max_bytes < 8)


def test_the_default_budget_keeps_most_of_it_for_answers() -> None:
    alone, shared = memory_shares(64 * 2**20, redis=False), memory_shares(64 * 2**20, redis=True)
    assert alone.cache == 48 * 2**20 and alone.tag_index == 8 * 2**20 and alone.decoded == 0
    assert shared.cache == 52 * 2**20 and shared.decoded == 4 * 2**20 and shared.tag_index == 0
    assert alone.hit_headers == alone.call_memo == 4 * 2**20
    with pytest.raises(ValueError):
        memory_shares(-1, redis=False)
