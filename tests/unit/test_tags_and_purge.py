"""Purge tags, the tag index (memory backend, fake clock), what a purge counts, purge/audit request parsing and
the purge command's report: no I/O."""

from __future__ import annotations

import math

import orjson
import pytest

from proxy.actions import ACTIONS, ActionSpec
from proxy.cache.base import CacheError, Entry
from proxy.cache.memory import MemoryCache
from proxy.cache.redis import RedisCache
from proxy.cache.tagindex import GRACE_S, PAIR_BYTES, SET_BYTES, MemoryTagIndex
from proxy.cache.tiered import TieredCache
from proxy.errors import RequestRejected
from proxy.operator import purge_report
from proxy.purge import AuditEvent, Purger, PurgeResult
from proxy.replica.breaker import CircuitBreaker
from proxy.tags import tags_for, waba_link
from proxy.web.admin import audit_events, purge_request
from tests.support import free_port

TEMPLATE, WABA = "GetChatappTemplateDetail", "QueryChatappBindWaba"
WABA_BODY = orjson.dumps({"RequestId": "r", "Code": "OK", "Data": {"Id": "90999", "Name": "w"}})


def test_tags_of_each_action() -> None:
    assert tags_for(TEMPLATE, {"CustSpaceId": "1", "TemplateCode": "t", "Language": "en"}, b"{}") == [
        "space:1", "template:t"]
    assert tags_for(TEMPLATE, {"CustWabaId": "9", "TemplateName": "n", "Language": "en"}, b"{}") == ["waba:9"]
    assert tags_for(WABA, {"CustSpaceId": "1"}, WABA_BODY) == ["space:1", "waba:90999"]
    assert tags_for(WABA, {}, b"not json") == []
    assert waba_link(WABA, {"CustSpaceId": "1"}, WABA_BODY) == ("90999", "1")
    assert waba_link(WABA, {}, WABA_BODY) is None
    assert waba_link(TEMPLATE, {"CustSpaceId": "1"}, WABA_BODY) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_index_expires_sets_after_retention_and_stays_bounded() -> None:
    clock = Clock()
    forgotten: list[str] = []
    three_sets = 3 * SET_BYTES + len("tag:space:1") + len("tag:template:t") + len("tag:space:2") + 3 * PAIR_BYTES
    index = MemoryTagIndex(retention=10, max_bytes=three_sets, clock=clock, forget=forgotten.append)
    await index.add("k1", ["space:1", "template:t"], until=1000)
    await index.add("k2", ["space:1"], until=1000)
    assert await index.keys(["space:1"]) == {"k1", "k2"}
    assert index.bytes_used <= three_sets
    clock.now = 9.9
    await index.add("k3", ["space:2"], until=1000)  # over the bytes: the least recently added-to set goes...
    assert index.bytes_used <= three_sets
    assert await index.keys(["template:t"]) == set()
    assert forgotten == ["k1"]  # ...and the entry it named leaves the cache, so no purge by tag can miss it
    assert await index.keys(["space:1"]) == {"k1", "k2"} and await index.keys(["space:2"]) == {"k3"}
    clock.now = 30
    assert await index.keys(["space:2"]) == set()


async def test_memory_index_full_of_random_tags_keeps_every_cached_entry_purgeable() -> None:
    """Random template codes past the index's bytes: whatever the cache still holds, a purge by tag finds."""
    clock = Clock()
    cache = MemoryCache(clock=clock)
    index = MemoryTagIndex(retention=700, max_bytes=20_000, clock=clock, forget=cache.discard)
    for number in range(500):
        key = f"k{number}"
        await cache.set(key, Entry(200, b"{}", fetched_at=0.0), ttl=600)
        await index.add(key, ["space:1", f"template:random{number}"], until=600.0)
        assert index.bytes_used <= 20_000
    assert index.forgotten > 0
    for number in range(500):
        key = f"k{number}"
        if cache.peek(key) is not None:
            assert await index.keys([f"template:random{number}"]) == {key}


async def test_memory_index_never_outgrows_the_entries_it_indexes() -> None:
    """A space hit with a new random template code every second (each a not-found answer cached 30 s):
    the space's set holds only the keys whose entries are in the cache (or left within the grace)."""
    clock = Clock()
    index = MemoryTagIndex(retention=700, clock=clock)
    for second in range(5000):
        clock.now = float(second)
        await index.add(f"k{second}", ["space:1", f"template:random{second}"], until=second + 30.0)
    live_window = 30 + GRACE_S
    assert len(await index.keys(["space:1"])) <= live_window + 1
    # what is held, not just what is read: at most twice the live members of the one big set, plus the
    # random codes' own sets (each holds its one key until its set expires after the retention)
    assert len(index) <= 2 * (live_window + 1) + 700 + 1
    assert await index.keys(["template:random4999"]) == {"k4999"}
    assert await index.keys(["template:random10"]) == set()  # its entry left long ago


async def test_purger_deletes_by_key_tag_and_waba_and_audits_by_template_within_the_wabas_spaces() -> None:
    cache = MemoryCache()
    index = MemoryTagIndex(retention=100)
    entries = {"a": ("1", "t"), "b": ("2", "t"), "c": ("1", "u")}
    for key, (space, code) in entries.items():
        await cache.set(key, Entry(200, b"{}", 0.0), 60)
        await index.add(key, tags_for(TEMPLATE, {"CustSpaceId": space, "TemplateCode": code}, b"{}"), math.inf)
    await cache.set("w", Entry(200, WABA_BODY, 0.0), 60)
    await index.add("w", tags_for(WABA, {"CustSpaceId": "1"}, WABA_BODY), math.inf)
    await index.link("90999", "1")
    purger = Purger(cache, index)
    assert await purger.audit([AuditEvent("90999", "t")]) == ["a"]  # code t in space 1 only
    assert await purger.index.keys(["template:t"]) == {"a", "b"}
    assert await purger.audit([AuditEvent("unknown-waba", "t")]) == ["b"]  # no link: t everywhere (a is gone)
    assert await purger.audit([AuditEvent("90999", kind="phoneNameUpdate")]) == []
    assert await purger.purge(tags={"WabaId": ["90999"]}) == PurgeResult(purged=["c", "w"], not_cached=[])
    assert await cache.get("c") is None and await cache.get("w") is None
    assert await purger.purge(keys=["zzz"]) == PurgeResult(purged=[], not_cached=["zzz"])


async def test_purger_counts_what_it_removed_not_what_it_was_named() -> None:
    """Issue 15: a never-cached key purges nothing and is reported as not cached; a purge by tag run twice
    removes the entries once (the index still names them the second time); expired entries count as absent."""
    clock = Clock()
    cache = MemoryCache(clock=clock)
    index = MemoryTagIndex(retention=1000, clock=clock)
    for number in range(6):
        key = f"s{number}"
        await cache.set(key, Entry(200, b"{}", 0.0), 60)
        await index.add(key, ["space:1", f"template:t{number}"], until=60.0)
    await cache.set("other", Entry(200, b"{}", 0.0), 60)
    await index.add("other", ["space:2"], until=60.0)
    purger = Purger(cache, index)
    assert await purger.purge(keys=["does-not-exist"]) == PurgeResult(purged=[], not_cached=["does-not-exist"])
    first = await purger.purge(tags={"CustSpaceId": ["1"]})
    assert first == PurgeResult(purged=[f"s{n}" for n in range(6)], not_cached=[])
    assert await index.keys(["space:1"]) == {f"s{n}" for n in range(6)}  # the index still names them...
    assert await purger.purge(tags={"CustSpaceId": ["1"]}) == PurgeResult(purged=[], not_cached=[])  # ...0 purged
    # keys named outright and under a tag, the same key twice: each entry counted once, misses named
    both = await purger.purge(keys=["other", "other", "s1", "nope"], tags={"CustSpaceId": ["2"]})
    assert both == PurgeResult(purged=["other"], not_cached=["nope", "s1"])
    await cache.set("short", Entry(200, b"{}", 0.0), 5)
    clock.now = 5.0  # past its time to live: nothing left to purge
    assert await purger.purge(keys=["short"]) == PurgeResult(purged=[], not_cached=["short"])
    await cache.set("w", Entry(200, b"{}", 0.0), 60)
    await index.add("w", ["waba:9"], until=65.0)
    assert await purger.audit([AuditEvent("9", kind="wabaReviewUpdate")]) == ["w"]
    assert await purger.audit([AuditEvent("9", kind="wabaReviewUpdate")]) == []


class FlakyCache(MemoryCache):
    """A memory cache whose delete of ``bad`` cannot reach the backend."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad = bad

    async def delete(self, key: str) -> bool:
        removed = await super().delete(key)
        if key == self.bad:
            raise CacheError("redis DEL failed")
        return removed


async def test_a_purge_that_cannot_reach_the_cache_deletes_the_other_keys_then_raises() -> None:
    cache = FlakyCache(bad="b")
    for key in ("a", "b", "c"):
        await cache.set(key, Entry(200, b"{}", 0.0), 60)
    with pytest.raises(CacheError, match="DEL failed"):
        await Purger(cache, MemoryTagIndex(retention=100)).purge(keys=["a", "b", "c"])
    assert cache.peek("a") is None and cache.peek("c") is None


async def test_tiered_delete_says_what_the_l1_held_and_raises_while_redis_is_marked_down() -> None:
    breaker = CircuitBreaker()
    l1 = MemoryCache()
    l2 = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0")  # never asked: the breaker is open
    tiered = TieredCache(l1, l2, bus=None, breaker=breaker)
    await l1.set("k", Entry(200, b"{}", 0.0), 60)
    breaker.failure(0.0)
    with pytest.raises(CacheError, match="marked down"):
        await tiered.delete("k")  # Redis may still hold it: no purge may claim it is gone, or was never there
    assert l1.peek("k") is None  # this replica stops serving it all the same
    await l2.close()


def test_purge_report_lines() -> None:
    long_key = "cams:" + "x" * 300
    answer = {"Purged": 1, "Keys": [long_key], "NotCached": ["k1", "k2"]}
    assert purge_report(answer) == ["Purged 1 entry.", f"  {long_key}", "Not cached: k1, k2"]
    assert purge_report({"Purged": 0, "Keys": [], "NotCached": []}) == ["Purged 0 entries."]
    assert purge_report({"Purged": 3, "Keys": ["a", "b", "c"]}) == ["Purged 3 entries.", "  a", "  b", "  c"]


def key_for(spec: ActionSpec, params: dict[str, str]) -> str:
    return f"k:{spec.name}:{sorted(params.items())}"


def test_purge_request_parsing() -> None:
    keys, tags = purge_request({"keys": ["k1:x"], "calls": [{"Action": WABA, "CustSpaceId": "1"}],
                                "tags": {"TemplateCode": ["t"]}}, key_for)
    assert keys == ["k1:x", key_for(ACTIONS[WABA], {"CustSpaceId": "1"})] and tags == {"TemplateCode": ["t"]}
    for bad in ({}, [], {"nope": 1}, {"keys": "k"}, {"keys": [""]}, {"tags": {"Space": ["1"]}},
                {"calls": [{"Action": "Nope"}]}, {"calls": [{"Action": WABA, "Bad": "1"}]}, {"calls": ["x"]},
                {"keys": ["k"] * 1001}):
        with pytest.raises(RequestRejected):
            purge_request(bad, key_for)


def test_audit_callback_parsing() -> None:
    events = audit_events([{"WabaId": "9", "TemplateCode": "t", "Language": "en", "AuditStatus": "pass"},
                           {"WabaId": "9", "Type": "wabaReviewUpdate", "Status": "APPROVED"}])
    assert events == [AuditEvent("9", "t", "template"), AuditEvent("9", "", "wabaReviewUpdate")]
    for bad in ({}, [{"TemplateCode": "t"}], [1], [{"WabaId": ""}]):
        with pytest.raises(RequestRejected):
            audit_events(bad)
