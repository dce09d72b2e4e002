"""The Redis tag index on a real redis-server never outgrows the entries it indexes: a customer space asked for
with a new random template code every second (each a not-found answer, cached 30 s) keeps a set of the keys
still cached, not of every key ever seen. The scores are wall-clock times; the test moves a fake wall clock."""

from __future__ import annotations

import uuid

from proxy.cache.tagindex import GRACE_S, RedisTagIndex
from proxy.replica.redis_clients import RedisClient


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_space_hit_with_random_template_codes_keeps_only_the_live_keys(client: RedisClient) -> None:
    clock = Clock()
    index = RedisTagIndex(client, retention=700, prefix=f"t{uuid.uuid4().hex[:8]}:", clock=clock)
    start = clock.now
    for second in range(2000):
        clock.now = start + second
        await index.add(f"k{second}", ["space:1", f"template:random{second}"], until=clock.now + 30)
    live_window = int(30 + GRACE_S)
    held = await index.members("space:1")
    assert live_window - 1 <= held <= live_window + 2, held  # not 2,000
    assert len(await index.keys(["space:1"])) == held
    assert await index.keys(["template:random1999"]) == {"k1999"}
    assert await index.keys(["template:random5"]) == set()  # its entry left long ago; its set expires on its own
    ttl_ms = await client.pttl(index.tag_key("template:random1999"))
    assert 0 < ttl_ms <= 700_000


async def test_a_key_stored_again_keeps_one_member_with_the_latest_expiry(client: RedisClient) -> None:
    clock = Clock()
    index = RedisTagIndex(client, retention=700, prefix=f"t{uuid.uuid4().hex[:8]}:", clock=clock)
    await index.add("k", ["space:1"], until=clock.now + 300)
    await index.add("k", ["space:1"], until=clock.now + 30)  # replaced by a shorter-lived answer
    assert await index.members("space:1") == 1
    clock.now += 30 + GRACE_S + 1
    assert await index.keys(["space:1"]) == set()  # the latest entry's expiry counts, not the first one's
