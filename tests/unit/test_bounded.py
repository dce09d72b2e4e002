"""The side caches' bounded map and the split of --memory-max-bytes (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.bounded import CALL_MEMO_BYTES_PER_ENTRY, CALL_MEMO_MAX_SHARE, BoundedMap, memory_shares


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
@given(max_bytes=st.integers(0, 2**40), max_entries=st.integers(0, 2**24))
def test_the_shares_never_add_up_to_more_than_the_budget(redis: bool, max_bytes: int, max_entries: int) -> None:
    shares = memory_shares(max_bytes, redis=redis, max_entries=max_entries)
    assert shares.total == max_bytes
    assert min(shares.cache, shares.hit_headers, shares.call_memo, shares.decoded, shares.tag_index) >= 0
    assert (shares.decoded > 0) == (redis and max_bytes >= 16) and (shares.tag_index == 0) == (redis or max_bytes < 8)
    assert shares.call_memo <= max_bytes // CALL_MEMO_MAX_SHARE


def test_the_default_budget_keeps_most_of_it_for_answers_and_remembers_a_call_per_entry() -> None:
    alone, shared = memory_shares(64 * 2**20, redis=False), memory_shares(64 * 2**20, redis=True)
    memo = 10_000 * CALL_MEMO_BYTES_PER_ENTRY
    assert alone.call_memo == shared.call_memo == memo
    assert alone.cache == 52 * 2**20 - memo and alone.tag_index == 8 * 2**20 and alone.decoded == 0
    assert shared.cache == 56 * 2**20 - memo and shared.decoded == 4 * 2**20 and shared.tag_index == 0
    assert alone.hit_headers == 4 * 2**20
    # what is left for answers still holds the default 10,000 entries of a 1,752-byte template answer
    assert alone.cache > 10_000 * 2_300 and shared.cache > 10_000 * 2_300
    with pytest.raises(ValueError):
        memory_shares(-1, redis=False)
    with pytest.raises(ValueError):
        memory_shares(64 * 2**20, redis=False, max_entries=-1)


@pytest.mark.parametrize(("max_bytes", "max_entries", "memo"), [
    (64 * 2**20, 1_000, 1_000 * CALL_MEMO_BYTES_PER_ENTRY),  # a small cache: a small memo, the rest for answers
    (64 * 2**20, 1_000_000, 16 * 2**20),  # more entries than the budget holds: the memo stops at a quarter
    (8 * 2**30, 1_000_000, 1_000_000 * CALL_MEMO_BYTES_PER_ENTRY),  # a large budget: one call per entry again
    (0, 10_000, 0),
])
def test_the_call_memo_follows_the_entry_bound_up_to_a_quarter(max_bytes: int, max_entries: int, memo: int) -> None:
    shares = memory_shares(max_bytes, redis=False, max_entries=max_entries)
    assert shares.call_memo == memo
    assert shares.cache == max_bytes - shares.hit_headers - memo - shares.tag_index
