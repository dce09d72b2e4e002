"""One contract suite over every cache backend, then what is specific to each (LRU bounds; Redis layout, faults;
the tiered cache's L1).

Backends: ``memory``; ``redis`` (`RedisCache` on the suite's real redis-server, ``redis_url``); ``tiered`` (the default
with Redis: `TieredCache`, an L1 `MemoryCache` in front of a `RedisCache`, with its notice bus running, built the way
`proxy.gateway.replicas.ReplicaKit.build` builds it); ``cluster`` (`RedisCache` over the Redis Cluster client of
`proxy.replica.redis_clients.connect`, on a real three-master cluster of this module's own) and ``tiered-cluster``
(the default with ``--redis-cluster``). Each test runs under its own key prefix.

Where the tiered cache's contract differs, the test says so and checks the tiered expectation, never skips: ``peek``
answers from its L1 (the process), and an entry removed from Redis other than through this replica (another
replica's write whose notice was lost, an eviction) is still served from L1 until its L1 time to live
(``l1_max_ttl`` at most), the documented staleness bound; in step with Redis's own expiry it never outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio
from redis.exceptions import RedisError

from proxy.cache import Cache, CacheError, Entry, MemoryCache, RedisCache
from proxy.cache.redis import HEADER, MAGIC, pack_entry, ttl_ms, unpack_entry
from proxy.cache.tiered import TieredCache
from proxy.replica.breaker import CircuitBreaker
from proxy.replica.bus import Bus
from proxy.replica.redis_clients import call_bound_s, connect
from tests.conftest import start_redis_cluster
from tests.support import free_port

BACKENDS = ["memory", "redis", "tiered", "cluster", "tiered-cluster"]
REDIS_TIMEOUT_S = 2.0  # the replicas' per-reply timeout here (the gateway's --redis-timeout-s)
ENTRY = Entry(status=200, body=b'{"ok":true}', fetched_at=1_718_000_000.123456)
FAST_TIMEOUT = 1.0  # seconds a failing Redis call may take before the test calls it slow


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture(scope="module")
def cluster_url(redis_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-master Redis Cluster of this module's own (about 2 s to start), killed at the end."""
    procs, url = start_redis_cluster(redis_binary, tmp_path_factory.mktemp("cluster"))
    yield url
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def redis_on(url: str, prefix: str, *, cluster: bool) -> RedisCache:
    """The L2 the replicas build: a client from `connect`, each operation bounded by `call_bound_s`."""
    client = connect(url, cluster=cluster, timeout=REDIS_TIMEOUT_S, connect_timeout=REDIS_TIMEOUT_S)
    return RedisCache(client, prefix=prefix, timeout=call_bound_s(REDIS_TIMEOUT_S))


@contextlib.asynccontextmanager
async def open_tiered(url: str, prefix: str, *, cluster: bool = False, l1_max_ttl: float = 10.0,
                      l1_clock: Callable[[], float] = time.monotonic, redis_timeout_s: float = REDIS_TIMEOUT_S,
                      wait_connected: bool = True) -> AsyncIterator[TieredCache]:
    """One replica's tiered cache as `ReplicaKit.build` makes it (command client, pub/sub client without a read
    timeout, breaker, bus), with its bus reader running; the L1 on ``l1_clock`` (the gateway's: monotonic). The
    breaker is opened by the tier itself on a Redis failure (the gateway passes the coordinator's hook instead)."""
    client = connect(url, cluster=cluster, timeout=redis_timeout_s, connect_timeout=redis_timeout_s)
    pubsub_client = connect(url, cluster=cluster, timeout=None, connect_timeout=redis_timeout_s)
    breaker = CircuitBreaker(cooldown=1.0, probe_timeout=call_bound_s(redis_timeout_s))
    bus = Bus(pubsub_client, f"replica-{uuid.uuid4().hex[:6]}")
    l2 = RedisCache(client, prefix=prefix, timeout=call_bound_s(redis_timeout_s))
    tier = TieredCache(MemoryCache(max_entries=10_000, max_bytes=64 * 1024 * 1024, clock=l1_clock), l2, bus,
                       breaker, l1_max_ttl)
    reader = asyncio.get_running_loop().create_task(bus.run())
    try:
        if wait_connected:
            async with asyncio.timeout(5):
                await bus.connected.wait()
        yield tier
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        with contextlib.suppress(CacheError):
            await tier.close()
        await pubsub_client.aclose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def cache(backend: str, request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Cache]:
    """Each backend, empty; the memory one on the fake ``clock``, the Redis ones under a prefix of their own (the
    tiered ones' L1 on the monotonic clock, as in the gateway)."""
    if backend == "memory":
        memory = MemoryCache(clock=clock)
        yield memory
        await memory.close()
        return
    cluster = backend.endswith("cluster")
    url = request.getfixturevalue("cluster_url" if cluster else "redis_url")
    if backend.startswith("tiered"):
        async with open_tiered(url, unique_prefix(), cluster=cluster) as tier:
            yield tier
        return
    shared = redis_on(url, unique_prefix(), cluster=cluster)
    yield shared
    await shared.close()


@pytest.fixture
async def redis_cache(redis_url: str) -> AsyncIterator[RedisCache]:
    backend = RedisCache.from_url(redis_url, prefix=unique_prefix())
    yield backend
    await backend.close()


async def wait_until_gone(cache: Cache, key: str, clock: FakeClock, ttl: float) -> None:
    """Let ``ttl`` pass: on the fake clock for memory, in real time (bounded polling) for Redis."""
    if isinstance(cache, MemoryCache):
        clock.advance(ttl)
        return
    deadline = time.monotonic() + ttl + 2.0
    while await cache.get(key) is not None:
        assert time.monotonic() < deadline, f"{key} outlived its {ttl}s TTL"
        await asyncio.sleep(0.005)


# --- the contract -------------------------------------------------------------------------------------------


async def test_miss_returns_none(cache: Cache) -> None:
    assert await cache.get("absent") is None


@pytest.mark.parametrize("entry", [
    ENTRY,
    Entry(status=200, body="{\"Name\":\"Grüße, 你好 👋\"}".encode(), fetched_at=1_718_000_000.000_001),
    Entry(status=404, body=bytes(range(256)) * 3, fetched_at=0.1 + 0.2, content_type="application/octet-stream"),
    Entry(status=503, body=b"", fetched_at=1e-300, content_type=""),
    Entry(status=200, body=b"\x00c2\x00", fetched_at=1_718_000_000.5, content_type="text/plain; charset=ü",
          fresh_until=1_718_000_300.25, stale_until=float("inf")),
], ids=["json", "non-ascii", "binary", "empty", "header-like"])
async def test_set_then_get_returns_an_equal_entry(cache: Cache, entry: Entry) -> None:
    await cache.set("k", entry, ttl=60)
    got = await cache.get("k")
    assert got == entry
    assert got is not None and type(got.body) is bytes and got.fetched_at == entry.fetched_at


async def test_overwrite_replaces(cache: Cache) -> None:
    newer = Entry(status=500, body=b"newer", fetched_at=ENTRY.fetched_at + 1, content_type="text/plain")
    await cache.set("k", ENTRY, ttl=60)
    await cache.set("k", newer, ttl=60)
    assert await cache.get("k") == newer


async def test_delete_returns_true_then_false(cache: Cache) -> None:
    await cache.set("k", ENTRY, ttl=60)
    assert await cache.delete("k") is True
    assert await cache.get("k") is None
    assert await cache.delete("k") is False


async def test_entries_expire(cache: Cache, clock: FakeClock) -> None:
    ttl = 0.05
    await cache.set("k", ENTRY, ttl=ttl)
    if isinstance(cache, MemoryCache):  # the exact boundary is only observable on the fake clock
        clock.advance(ttl / 2)
        assert await cache.get("k") == ENTRY
    await wait_until_gone(cache, "k", clock, ttl)
    assert await cache.get("k") is None
    assert await cache.delete("k") is False


async def test_overwrite_sets_a_new_ttl(cache: Cache, clock: FakeClock) -> None:
    await cache.set("k", ENTRY, ttl=0.05)
    await cache.set("k", ENTRY, ttl=60)
    if isinstance(cache, MemoryCache):
        clock.advance(0.06)
    else:
        await asyncio.sleep(0.06)  # just past the first TTL, which the overwrite must have replaced
    assert await cache.get("k") == ENTRY


async def test_keys_are_independent(cache: Cache) -> None:
    a, b = ENTRY, Entry(status=201, body=b"b", fetched_at=2.0)
    await cache.set("a", a, ttl=60)
    await cache.set("b", b, ttl=60)
    assert (await cache.get("a"), await cache.get("b")) == (a, b)
    assert await cache.delete("a") is True
    assert (await cache.get("a"), await cache.get("b")) == (None, b)


async def test_large_body_round_trips(cache: Cache) -> None:
    entry = Entry(status=200, body=random.Random(7).randbytes(1024 * 1024), fetched_at=3.25)
    await cache.set("big", entry, ttl=60)
    assert await cache.get("big") == entry


@pytest.mark.parametrize("ttl", [0, -1, float("nan")])
async def test_non_positive_ttl_is_rejected(cache: Cache, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", ENTRY, ttl=ttl)
    assert await cache.get("k") is None


# --- memory: LRU bounds, recency, expiry bookkeeping --------------------------------------------------------


def sized(n: int) -> Entry:
    return Entry(status=200, body=b"x" * n, fetched_at=1.0)


async def present(cache: MemoryCache, *keys: str) -> list[str]:
    return [key for key in keys if await cache.get(key) is not None]


async def test_memory_evicts_least_recently_used_by_count() -> None:
    cache = MemoryCache(max_entries=3, clock=FakeClock())
    for key in "abcd":
        await cache.set(key, sized(1), ttl=60)
    assert (len(cache), cache.evictions) == (3, 1)
    assert await present(cache, "a", "b", "c", "d") == ["b", "c", "d"]


async def test_memory_evicts_least_recently_used_by_bytes() -> None:
    cache = MemoryCache(max_bytes=10, clock=FakeClock())
    for key in "abc":
        await cache.set(key, sized(3), ttl=60)
    assert (cache.bytes_used, cache.evictions) == (9, 0)
    await cache.set("d", sized(7), ttl=60)  # needs 6 bytes freed: a and b go, c stays
    assert (len(cache), cache.bytes_used, cache.evictions) == (2, 10, 2)
    assert await present(cache, "a", "b", "c", "d") == ["c", "d"]


async def test_memory_does_not_store_an_entry_larger_than_max_bytes() -> None:
    cache = MemoryCache(max_bytes=10, clock=FakeClock())
    await cache.set("small", sized(4), ttl=60)
    await cache.set("k", sized(4), ttl=60)
    await cache.set("k", sized(11), ttl=60)  # not stored, and the value it replaces is gone too
    assert await cache.get("k") is None
    assert (len(cache), cache.bytes_used, cache.evictions) == (1, 4, 0)
    assert await cache.get("small") == sized(4)
    await cache.set("exact", sized(10), ttl=60)
    assert await present(cache, "small", "exact") == ["exact"]


async def test_memory_get_refreshes_recency() -> None:
    cache = MemoryCache(max_entries=2, clock=FakeClock())
    await cache.set("a", sized(1), ttl=60)
    await cache.set("b", sized(1), ttl=60)
    assert await cache.get("a") is not None
    await cache.set("c", sized(1), ttl=60)
    assert await present(cache, "a", "b", "c") == ["a", "c"]


async def test_memory_overwrite_refreshes_recency_and_size() -> None:
    cache = MemoryCache(max_entries=2, clock=FakeClock())
    await cache.set("a", sized(5), ttl=60)
    await cache.set("b", sized(1), ttl=60)
    await cache.set("a", sized(2), ttl=60)
    assert cache.bytes_used == 3
    await cache.set("c", sized(1), ttl=60)
    assert await present(cache, "a", "b", "c") == ["a", "c"]


async def test_memory_expiry_is_exact_on_its_clock_and_drops_the_entry() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    await cache.set("k", sized(4), ttl=10)
    clock.advance(9.999)
    assert await cache.get("k") is not None
    assert (len(cache), cache.bytes_used) == (1, 4)
    clock.advance(0.001)
    assert await cache.get("k") is None
    assert (len(cache), cache.bytes_used, cache.evictions) == (0, 0, 0)


@pytest.mark.parametrize(("max_entries", "max_bytes"), [(0, 10), (1, -1)])
def test_memory_rejects_impossible_bounds(max_entries: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_"):
        MemoryCache(max_entries=max_entries, max_bytes=max_bytes)


# --- redis: value layout, TTL, unreadable values, faults ----------------------------------------------------


async def raw_value(cache: RedisCache, key: str) -> bytes:
    value = await cache.client.get(cache.key(key))
    assert isinstance(value, bytes)
    return value


async def test_redis_value_is_header_then_the_body_bytes(redis_cache: RedisCache) -> None:
    entry = Entry(status=203, body=bytes(range(256)), fetched_at=12.5, content_type="application/x-test")
    await redis_cache.set("k", entry, ttl=60)
    raw = await raw_value(redis_cache, "k")
    content_type = entry.content_type.encode()
    assert raw[:2] == MAGIC
    assert len(raw) == HEADER.size + len(content_type) + len(entry.body)
    assert raw[HEADER.size:HEADER.size + len(content_type)] == content_type
    assert raw[-len(entry.body):] == entry.body
    assert raw == pack_entry(entry)


async def test_redis_sets_a_ttl_in_milliseconds(redis_cache: RedisCache) -> None:
    await redis_cache.set("k", ENTRY, ttl=30)
    assert 0 < await redis_cache.client.pttl(redis_cache.key("k")) <= 30_000
    await redis_cache.set("tiny", ENTRY, ttl=0.0001)  # rounded up to 1 ms, never 0 (which Redis rejects)
    assert await redis_cache.client.pttl(redis_cache.key("tiny")) in {-2, 0, 1}


@pytest.mark.parametrize(("seconds", "milliseconds"), [(0.0001, 1), (0.05, 50), (0.07, 70), (1.0001, 1001),
                                                       (30, 30_000)])
def test_redis_ttl_rounds_up_to_whole_milliseconds(seconds: float, milliseconds: int) -> None:
    assert ttl_ms(seconds) == milliseconds


@pytest.mark.parametrize("value", [b"", b"c", b"c1" + bytes(30), pack_entry(ENTRY)[:HEADER.size - 1],
                                   HEADER.pack(MAGIC, 200, 1.0, 2.0, 3.0, 50) + b"short",
                                   HEADER.pack(MAGIC, 200, 1.0, 2.0, 3.0, 2) + b"\xff\xfe" + b"body",
                                   b'{"status":200}'],
                         ids=["empty", "one-byte", "other-version", "cut-header", "cut-type", "bad-utf8", "json"])
async def test_redis_unreadable_value_is_a_miss(redis_cache: RedisCache, value: bytes) -> None:
    assert unpack_entry(value) is None
    await redis_cache.client.set(redis_cache.key("k"), value)
    assert await redis_cache.get("k") is None
    await redis_cache.set("k", ENTRY, ttl=60)  # and the next set overwrites it
    assert await redis_cache.get("k") == ENTRY


@pytest.mark.parametrize("entry", [Entry(status=70_000, body=b"", fetched_at=1.0),
                                   Entry(status=200, body=b"", fetched_at=1.0, content_type="x" * 70_000)])
def test_redis_rejects_entries_the_header_cannot_hold(entry: Entry) -> None:
    with pytest.raises(ValueError, match=r"status|content type"):
        pack_entry(entry)


async def test_redis_client_must_return_bytes(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisCache(client)
    finally:
        await client.aclose()


async def assert_every_call_fails_fast(cache: RedisCache) -> None:
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: cache.get("k"), "set": lambda: cache.set("k", ENTRY, ttl=60),
        "delete": lambda: cache.delete("k"),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(CacheError, match="redis") as caught:
            await call()
        assert time.monotonic() - started < FAST_TIMEOUT, name
        assert isinstance(caught.value.__cause__, RedisError | OSError), name


async def test_redis_down_raises_cache_error_quickly() -> None:
    cache = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=unique_prefix())
    try:
        await assert_every_call_fails_fast(cache)
    finally:
        await cache.close()


async def test_redis_that_never_answers_raises_cache_error_after_the_socket_timeout() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.05, prefix=unique_prefix())
    try:
        await assert_every_call_fails_fast(cache)
    finally:
        await cache.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


# --- batched reads --------------------------------------------------------------------------------------------


async def test_concurrent_gets_share_one_mget_and_each_gets_its_own_entry(redis_cache: RedisCache,
                                                                          redis_url: str) -> None:
    import redis.asyncio

    for i in range(50):
        await redis_cache.set(f"k{i}", Entry(200, f"body {i}".encode(), 1.0), 60)
    stats = redis.asyncio.Redis.from_url(redis_url)

    async def mget_calls() -> int:
        info = await stats.info("commandstats")
        return int(info.get("cmdstat_mget", {}).get("calls", 0))

    before = await mget_calls()
    found = await asyncio.gather(*(redis_cache.get(f"k{i % 60}") for i in range(120)))
    assert await mget_calls() - before == 1  # 120 lookups of 60 keys, one round trip
    for i, entry in enumerate(found):
        if i % 60 < 50:
            assert entry is not None and entry.body == f"body {i % 60}".encode()
        else:
            assert entry is None
    await stats.aclose()


async def test_an_unchanged_value_is_unpacked_once_and_a_changed_one_is_read_anew(redis_cache: RedisCache) -> None:
    """Reads of the same bytes share one `Entry` (hits reuse its rendered headers); any change to the stored
    bytes, even one that keeps the header and the length, gives the new value."""
    first = Entry(200, b'{"Name":"a"}', 1.0, fresh_until=61.0)
    await redis_cache.set("k", first, 60)
    one, two = await redis_cache.get("k"), await redis_cache.get("k")
    assert one == first and two is one
    same_header_and_length = Entry(200, b'{"Name":"b"}', 1.0, fresh_until=61.0)
    await redis_cache.set("k", same_header_and_length, 60)
    assert await redis_cache.get("k") == same_header_and_length
    same_body_new_header = Entry(200, b'{"Name":"b"}', 2.0, fresh_until=62.0)
    await redis_cache.set("k", same_body_new_header, 60)
    assert await redis_cache.get("k") == same_body_new_header
    await redis_cache.delete("k")
    assert await redis_cache.get("k") is None


async def test_peek_answers_only_from_the_process(cache: Cache, clock: FakeClock) -> None:
    """``peek`` is `get` without I/O: the memory backend answers it (never past the TTL), Redis never does, and the
    tiered cache answers from its L1 only (a copy it no longer holds is None, though Redis has the entry)."""
    await cache.set("k", ENTRY, ttl=5)
    if isinstance(cache, MemoryCache):
        assert cache.peek("k") == ENTRY
        clock.advance(5)
        assert cache.peek("k") is None
    elif isinstance(cache, TieredCache):
        assert cache.peek("k") == ENTRY
        cache.l1.discard("k")  # as another replica's notice would
        assert cache.peek("k") is None
        assert await cache.get("k") == ENTRY  # read from Redis, and copied into L1 again
        assert cache.peek("k") == ENTRY
    else:
        assert isinstance(cache, RedisCache)
        assert cache.peek("k") is None and await cache.get("k") == ENTRY


async def test_concurrent_gets_of_many_keys_each_get_their_own_entry(cache: Cache) -> None:
    """Many keys (on a cluster: spread over every node's slots) read at once, in one batch for Redis."""
    for i in range(40):
        await cache.set(f"key-{i}", Entry(200, f"body {i}".encode(), float(i)), 60)
    found = await asyncio.gather(*(cache.get(f"key-{i % 50}") for i in range(150)))
    for i, entry in enumerate(found):
        if i % 50 < 40:
            assert entry == Entry(200, f"body {i % 50}".encode(), float(i % 50))
        else:
            assert entry is None


async def test_a_batch_to_an_unreachable_redis_fails_every_caller_with_cache_error() -> None:
    from tests.support import free_port

    cache = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2)
    results = await asyncio.gather(*(cache.get(f"k{i}") for i in range(5)), return_exceptions=True)
    assert all(isinstance(result, CacheError) for result in results)
    await cache.close()


# --- tiered: the L1 in front of Redis, and what differs from the contract ----------------------------------

TIERED = pytest.mark.parametrize("kind", ["single", "cluster"])


def url_of(kind: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("cluster_url" if kind == "cluster" else "redis_url"))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the pub/sub delivery bound"
        await asyncio.sleep(0.005)


@TIERED
async def test_tiered_another_replicas_write_or_delete_is_seen_once_its_notice_drops_the_l1_copy(
        kind: str, request: pytest.FixtureRequest) -> None:
    url, prefix = url_of(kind, request), unique_prefix()
    newer = Entry(200, b"newer", 2.0)
    async with open_tiered(url, prefix, cluster=kind == "cluster") as a, \
            open_tiered(url, prefix, cluster=kind == "cluster") as b:
        await a.set("k", ENTRY, ttl=60)
        assert await b.get("k") == ENTRY and b.peek("k") == ENTRY  # from Redis, now in b's L1
        await a.set("k", newer, ttl=60)

        async def b_sees_newer() -> bool:
            return await b.get("k") == newer

        await eventually(b_sees_newer)
        assert b.invalidations >= 1
        assert await a.delete("k") is True

        async def b_sees_it_gone() -> bool:
            return await b.get("k") is None

        await eventually(b_sees_it_gone)


@TIERED
async def test_tiered_l1_serves_an_entry_redis_lost_behind_its_back_until_its_l1_time_to_live(
        kind: str, request: pytest.FixtureRequest) -> None:
    """The documented staleness bound when no notice comes (an eviction, a notice lost with the subscription):
    ``l1_max_ttl``. The plain Redis backend would answer None at once: this is where the contracts differ."""
    clock = FakeClock()
    async with open_tiered(url_of(kind, request), unique_prefix(), cluster=kind == "cluster", l1_max_ttl=10.0,
                           l1_clock=clock) as tier:
        await tier.set("k", ENTRY, ttl=60)
        assert await tier.l2.client.delete(tier.l2.key("k")) == 1  # gone from Redis, no notice
        assert await tier.l2.get("k") is None
        clock.advance(9.999)
        assert await tier.get("k") == ENTRY  # still the L1 copy
        clock.advance(0.001)
        assert await tier.get("k") is None  # its L1 time (capped at l1_max_ttl) is over: Redis is asked


@TIERED
async def test_tiered_a_redis_hit_stays_in_l1_for_what_it_has_left_in_redis_at_most_l1_max_ttl(
        kind: str, request: pytest.FixtureRequest) -> None:
    url, prefix, clock = url_of(kind, request), unique_prefix(), FakeClock()
    async with open_tiered(url, prefix, cluster=kind == "cluster") as writer, \
            open_tiered(url, prefix, cluster=kind == "cluster", l1_max_ttl=10.0, l1_clock=clock) as reader:
        await writer.set("short", ENTRY, ttl=0.5)
        await writer.set("long", ENTRY, ttl=60)
        assert await reader.get("short") == ENTRY and await reader.get("long") == ENTRY
        clock.advance(0.4)
        assert reader.peek("short") == ENTRY
        clock.advance(0.1)
        assert reader.peek("short") is None  # never longer than Redis keeps it (its PTTL when read)
        clock.advance(9.4)
        assert reader.peek("long") == ENTRY
        clock.advance(0.1)
        assert reader.peek("long") is None  # capped at l1_max_ttl


async def test_tiered_with_redis_down_answers_from_l1_stores_in_l1_and_only_delete_raises() -> None:
    """The fault contract differs too: where the Redis backend raises `CacheError` on every call, the tiered one
    pays one failure (the breaker opens), then answers from L1 alone; a delete drops the L1 copy and raises (Redis
    may still hold the entry)."""
    async with open_tiered(f"redis://127.0.0.1:{free_port()}/0", unique_prefix(), redis_timeout_s=0.2,
                           wait_connected=False) as tier:
        started = time.monotonic()
        assert await tier.get("k") is None
        assert not tier.breaker.healthy
        await tier.set("k", ENTRY, ttl=60)
        assert await tier.get("k") == ENTRY  # from L1; Redis is not asked while the breaker is open
        with pytest.raises(CacheError, match="marked down"):
            await tier.delete("k")
        assert tier.peek("k") is None
        assert time.monotonic() - started < FAST_TIMEOUT
