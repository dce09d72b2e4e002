"""Three real gateway processes, one real redis-server, the simulator: one quota across replicas.

Counted, never timed: upstream calls, throttled calls and ``max_in_any_1s`` come from the simulator.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import requests

from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET
from tests.conftest import start_redis, start_redis_cluster
from tests.support import Process, free_port, many_templates, start_cli

TEMPLATE, WABA = "GetChatappTemplateDetail", "QueryChatappBindWaba"
ADMIN_TOKEN = "replica-test-admin-token-0123456789"
CALLBACK_TOKEN = "replica-test-callback-token-987654"
BULK_SPACE = "77000000000001"


class RedisServer:
    """A redis-server of this test's own, which the test may kill and restart on the same port."""

    args: tuple[str, ...] = ()

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder = binary, folder
        self.proc, self.url = start_redis(binary, folder)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class RedisClusterServers:
    """A three-master Redis Cluster of this test's own (redis-server in cluster mode)."""

    args = ("--redis-cluster",)

    def __init__(self, binary: str, folder: Path) -> None:
        self.procs, self.url = start_redis_cluster(binary, folder)

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


#: For tests that must hold on one redis-server and on a Redis Cluster alike.
BOTH_REDIS = pytest.mark.parametrize("redis_server", ["single", "cluster"], indirect=True)


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, redis_binary: str,
                 tmp_path: Path) -> Iterator[RedisServer | RedisClusterServers]:
    kind = getattr(request, "param", "single")
    server = RedisClusterServers(redis_binary, tmp_path) if kind == "cluster" else RedisServer(redis_binary, tmp_path)
    yield server
    server.kill()


Replicas = Callable[..., list[Process]]


@pytest.fixture
def replicas(redis_server: RedisServer | RedisClusterServers, sim_url: str, tmp_path: Path) -> Iterator[Replicas]:
    started: list[Process] = []

    def start(count: int = 3, *extra: str) -> list[Process]:
        env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID,
               "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET, "LOG_FORMAT": "console",
               "PROXY_ADMIN_TOKEN": ADMIN_TOKEN, "PROXY_CALLBACK_TOKEN": CALLBACK_TOKEN}
        for index in range(count):
            # Three replicas, the load generator and the simulator share two cores here: event-loop lag can
            # exceed the 0.25 s default Redis timeout and open the breaker spuriously, so allow 1 s.
            started.append(start_cli(["serve", "--port", "0", "--upstream", sim_url, "--redis-url", redis_server.url,
                                      "--redis-timeout-s", "1", *redis_server.args, *extra],
                                     tmp_path / f"gateway-{len(started)}-{index}.log", env=env,
                                     ready_text="gateway ready"))
        fresh = started[-count:]
        converge(fresh)
        return fresh

    yield start
    for process in started:
        process.stop()


def converge(gateways: list[Process], limit_s: float = 15.0) -> None:
    """Wait until the replicas' shares of safe capacity add up to each cap (a few heartbeats after start: until
    then the first one holds the whole cap, and killing it would hold every miss back for its lease)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        shares = [requests.get(f"{g.url}/readyz", timeout=5).json()["redis"]["safe_capacity"]["shares"]
                  for g in gateways]
        if all(sum(share.get(action, 0) for share in shares) == cap for action, cap in ((TEMPLATE, 5), (WABA, 10))):
            return
        time.sleep(0.1)
    raise AssertionError(f"the shares did not converge within {limit_s}s: {shares}")


def sim_stats(sim_url: str, action: str) -> dict[str, Any]:
    return dict(requests.get(f"{sim_url}/__sim/stats", timeout=5).json()["actions"][action])


def put_json(url: str, body: object) -> None:
    requests.put(url, data=orjson.dumps(body), timeout=5).raise_for_status()


async def spread(targets: list[str], gateways: list[Process], limit_s: float = 90.0) -> list[tuple[int, dict[str, Any],
                                                                                                    str]]:
    """GET each target on gateways round robin, all at once; (status, body, X-Cache)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=limit_s)) as session:
        async def one(i: int, target: str) -> tuple[int, dict[str, Any], str]:
            async with session.get(gateways[i % len(gateways)].url + target) as response:
                return response.status, orjson.loads(await response.read()), response.headers.get("X-Cache", "")

        return await asyncio.gather(*(one(i, t) for i, t in enumerate(targets)))


BACKLOG = ("--deadline-s", "60", "--upstream-timeout-s", "8", "--queue-bound", f"{TEMPLATE}=1000",
           "--queue-bound", f"{WABA}=1000")


@BOTH_REDIS
def test_150_and_150_misses_across_three_replicas_use_the_cap_and_never_pass_it(replicas: Replicas,
                                                                                  sim_url: str) -> None:
    put_json(f"{sim_url}/__sim/fixtures", many_templates(150))
    put_json(f"{sim_url}/__sim/faults", {"default": {"latency_ms": 80, "jitter_ms": 40}})
    gateways = replicas(3, *BACKLOG)
    targets = [f"/v1/{TEMPLATE}?CustSpaceId={BULK_SPACE}&Language=en_US&TemplateCode={i:032x}" for i in range(150)]
    targets += [f"/v1/{WABA}?CustSpaceId=78{i:012d}" for i in range(150)]
    results = asyncio.run(spread(targets, gateways))
    assert [status for status, _, _ in results] == [200] * 300
    for action, cap in ((TEMPLATE, 5), (WABA, 10)):
        stats = sim_stats(sim_url, action)
        assert (stats["calls"], stats["throttled"], stats["max_in_any_1s"]) == (150, 0, cap), action


@BOTH_REDIS
def test_300_identical_misses_across_three_replicas_make_one_call(replicas: Replicas, sim_url: str) -> None:
    put_json(f"{sim_url}/__sim/faults", {WABA: {"latency_ms": 1500, "jitter_ms": 0}})
    gateways = replicas(3)
    results = asyncio.run(spread([f"/v1/{WABA}?CustSpaceId=28251486512358"] * 300, gateways))
    assert {status for status, _, _ in results} == {200}
    assert len({body["RequestId"] for _, body, _ in results}) == 1
    caches = [cache for _, _, cache in results]
    assert caches.count("MISS") == 1 and caches.count("COALESCED") + caches.count("HIT") == 299
    assert sim_stats(sim_url, WABA)["calls"] == 1


@BOTH_REDIS
def test_a_lease_holder_killed_mid_fill_is_replaced_by_exactly_one_replica(replicas: Replicas,
                                                                           sim_url: str) -> None:
    put_json(f"{sim_url}/__sim/faults", {WABA: {"latency_ms": 4000, "jitter_ms": 0}})
    first, second, third = replicas(3, "--lease-ttl-s", "1.5")
    target = f"/v1/{WABA}?CustSpaceId=39583726150001"

    async def scenario() -> list[tuple[int, dict[str, Any], str]]:
        async with aiohttp.ClientSession() as session:
            doomed = asyncio.ensure_future(session.get(first.url + target))
            for _ in range(200):  # until the first replica's call has reached the simulator
                if sim_stats(sim_url, WABA)["calls"] == 1:
                    break
                await asyncio.sleep(0.02)
            first.proc.kill()
            with pytest.raises(aiohttp.ClientError):
                await doomed
            put_json(f"{sim_url}/__sim/faults", {WABA: {"latency_ms": 50, "jitter_ms": 0}})
        return await spread([target] * 10, [second, third])

    results = asyncio.run(scenario())
    assert {status for status, _, _ in results} == {200}, results[0]
    assert [cache for _, _, cache in results].count("MISS") == 1  # exactly one replica filled
    assert sim_stats(sim_url, WABA)["calls"] == 2  # the dead holder's call, and the one that replaced it


def test_redis_killed_mid_load_every_request_answered_cap_held_then_resumed(replicas: Replicas, sim_url: str,
                                                                            redis_server: RedisServer) -> None:
    put_json(f"{sim_url}/__sim/fixtures", many_templates(200))
    gateways = replicas(3, "--deadline-s", "8", "--queue-bound", f"{WABA}=1000")
    hot = f"/v1/{WABA}?CustSpaceId=78{0:012d}"
    asyncio.run(spread([hot] * 3, gateways))  # warm every replica's L1 with one hot key

    async def load() -> list[tuple[int, dict[str, Any], str]]:
        first = asyncio.ensure_future(spread([hot if i % 2 else f"/v1/{WABA}?CustSpaceId=78{i:012d}"
                                              for i in range(1, 120)], gateways, limit_s=30))
        await asyncio.sleep(1.0)
        redis_server.kill()
        during = await spread([hot if i % 2 else f"/v1/{WABA}?CustSpaceId=78{i:012d}"
                               for i in range(120, 200)], gateways, limit_s=30)
        return [*(await first), *during]

    results = asyncio.run(load())
    assert len(results) == 199
    for status, body, cache in results:
        assert status in {200, 503, 504}, body
        if status == 200:
            assert cache in {"HIT", "MISS", "COALESCED"}
        else:
            assert body["Code"] in {"Throttling.Proxy", "Proxy.DeadlineExceeded"}
    assert sum(1 for status, _, _ in results if status == 200) >= 100  # hits and local-share misses
    stats = sim_stats(sim_url, WABA)
    assert stats["throttled"] == 0 and stats["max_in_any_1s"] <= 10
    modes = [requests.get(f"{g.url}/readyz", timeout=5).json() for g in gateways]
    assert all(m["status"] == "degraded" for m in modes)
    redis_server.restart()
    for _ in range(150):  # until every replica has rejoined the shared budget
        modes = [requests.get(f"{g.url}/readyz", timeout=5).json() for g in gateways]
        if all(m["status"] == "ready" and m["redis"]["quiet_for_s"] == 0 for m in modes):
            break

        time.sleep(0.1)
    assert all(m["redis"]["mode"] == "shared" for m in modes)
    before = sum(m["redis"]["shared_slots"] for m in modes)
    after_results = asyncio.run(spread([f"/v1/{WABA}?CustSpaceId=78{i:012d}" for i in range(150, 160)], gateways))
    assert [status for status, _, _ in after_results] == [200] * 10
    modes = [requests.get(f"{g.url}/readyz", timeout=5).json() for g in gateways]
    assert sum(m["redis"]["shared_slots"] for m in modes) >= before + 10
    assert sim_stats(sim_url, WABA)["max_in_any_1s"] <= 10


def test_workers_without_redis_split_the_cap(sim_url: str, tmp_path: Path) -> None:
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
           "LOG_FORMAT": "console"}
    put_json(f"{sim_url}/__sim/fixtures", many_templates(60))
    port = free_port()
    supervisor = start_cli(["serve", "--port", str(port), "--upstream", sim_url, "--workers", "2", *BACKLOG],
                           tmp_path / "workers.log", env=env, ready_text="supervising")
    try:
        gateway = Process(supervisor.proc, f"http://127.0.0.1:{port}", supervisor.log)
        for _ in range(100):
            if supervisor.log.read_text().count("gateway ready") == 2:
                break

            time.sleep(0.1)
        results = asyncio.run(spread([f"/v1/{WABA}?CustSpaceId=78{i:012d}" for i in range(60)], [gateway]))
        assert [status for status, _, _ in results] == [200] * 60
        stats = sim_stats(sim_url, WABA)
        assert stats["throttled"] == 0 and stats["max_in_any_1s"] <= 10
        assert supervisor.log.read_text().count("worker=") >= 2
        def scraped_total() -> float:
            text = requests.get(f"{gateway.url}/metrics", timeout=5).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("cams_proxy_requests_total{"))

        deadline = time.monotonic() + 5
        while scraped_total() < 60:  # each worker flushes its counts every second
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for _ in range(4):  # whichever worker answers, /metrics covers both (prometheus multi-process mode)
            assert scraped_total() == 60
    finally:
        supervisor.stop()


def admin(gateway: Process, method: str, path: str, body: object | None = None) -> dict[str, Any]:
    response = requests.request(method, f"{gateway.url}{path}", timeout=10,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                data=None if body is None else orjson.dumps(body))
    assert response.status_code == 200, response.text
    return dict(response.json())


def invalidations(gateway: Process) -> int:
    return int(admin(gateway, "GET", "/admin/status")["cache"]["invalidations"])


def wait_for_invalidations(gateways: list[Process], at_least: list[int]) -> None:
    """Until each replica has counted the invalidations it must have received (bounded; no blind sleep)."""

    deadline = time.monotonic() + 10
    while True:
        counts = [invalidations(g) for g in gateways]
        if all(n >= want for n, want in zip(counts, at_least, strict=True)):
            return
        assert time.monotonic() < deadline, f"invalidations {counts}, expected at least {at_least}"
        time.sleep(0.02)


def get(gateway: Process, target: str) -> tuple[str, str]:
    """(X-Cache, RequestId of the upstream answer) for one call."""
    response = requests.get(gateway.url + target, timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["X-Cache"], response.json()["RequestId"]


@BOTH_REDIS
def test_purges_by_key_call_and_every_tag_reach_every_replicas_l1(replicas: Replicas, sim_url: str) -> None:
    gateways = replicas(3)
    space = "28251486512358"
    template = f"/v1/{TEMPLATE}?CustSpaceId={space}&Language=en_US&TemplateCode=744c4b5c79c9432497a075bdfca36bf5"
    waba = f"/v1/{WABA}?CustSpaceId={space}"
    key_of = {}
    for target in (template, waba):  # the answer that fills an entry names its key
        filled = requests.get(gateways[0].url + target, timeout=10)
        assert filled.headers["X-Cache"] == "MISS"
        key_of[target] = filled.headers["X-Cache-Key"]
    waba_id = requests.get(gateways[0].url + waba, timeout=10).json()["Data"]["Id"]
    rounds: list[tuple[dict[str, Any], set[str]]] = [
        ({"keys": [key_of[template]]}, {template}),
        ({"calls": [{"Action": WABA, "CustSpaceId": space}]}, {waba}),
        ({"tags": {"CustSpaceId": [space]}}, {template, waba}),
        ({"tags": {"TemplateCode": ["744c4b5c79c9432497a075bdfca36bf5"]}}, {template}),
        ({"tags": {"WabaId": [waba_id]}}, {template, waba}),  # the WABA, and its space's templates
    ]
    for number, (selector, purged) in enumerate(rounds):
        origin = gateways[number % 3]
        others = [g for g in gateways if g is not origin]
        seen: dict[str, str] = {}
        for target in (template, waba):  # every replica holds both entries in its L1
            for gateway in gateways:
                for _ in range(2):
                    cache, request_id = get(gateway, target)
                    assert cache == "HIT"
                    assert seen.setdefault(target, request_id) == request_id
        calls_before = sim_stats(sim_url, TEMPLATE)["calls"] + sim_stats(sim_url, WABA)["calls"]
        counted = [invalidations(g) for g in others]
        answer = admin(origin, "POST", "/admin/purge", selector)
        assert answer["Purged"] == len(purged) and set(answer["Keys"]) == {key_of[t] for t in purged}, selector
        wait_for_invalidations(others, [n + len(purged) for n in counted])
        for target in (template, waba):
            refill = others[0]
            cache, request_id = get(refill, target)
            if target in purged:  # refilled once, upstream; the two other replicas read the refill
                assert cache == "MISS" and request_id != seen[target], selector
                for gateway in (origin, others[1]):
                    assert get(gateway, target) == ("HIT", request_id), selector
            else:
                assert (cache, request_id) == ("HIT", seen[target]), selector
        calls_after = sim_stats(sim_url, TEMPLATE)["calls"] + sim_stats(sim_url, WABA)["calls"]
        assert calls_after - calls_before == len(purged), selector


def test_admin_api_needs_its_own_token(replicas: Replicas) -> None:
    (gateway,) = replicas(1)
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": ADMIN_TOKEN}):
        response = requests.post(f"{gateway.url}/admin/purge", headers=headers, data=b'{"keys": ["k1:x"]}',
                                 timeout=5)
        assert response.status_code == 401 and response.json()["Code"] == "Proxy.Unauthorized"
        assert ADMIN_TOKEN not in response.text
    bad = requests.post(f"{gateway.url}/admin/purge", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                        data=b'{"tags": {"Nope": ["1"]}}', timeout=5)
    assert bad.status_code == 400 and bad.json()["Code"] == "InvalidParameter.Body"
    assert ADMIN_TOKEN not in gateway.log.read_text()


def test_a_redis_that_refuses_scripts_runs_the_redis_down_policy_spends_nothing_and_says_so(
        redis_binary: str, sim_url: str, tmp_path: Path) -> None:
    from tests.support import free_port

    port = free_port()
    server = subprocess.Popen(
        [redis_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--rename-command", "EVAL", "", "--rename-command", "EVALSHA", "",
         "--rename-command", "SCRIPT", ""], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis as redis_sync

    for _ in range(200):  # up and answering, so what the gateway meets is the refusal, not a dead server
        try:
            assert redis_sync.Redis(port=port).ping()
            break
        except redis_sync.ConnectionError:

            time.sleep(0.025)
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": DEMO_ACCESS_KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": DEMO_ACCESS_KEY_SECRET,
           "LOG_FORMAT": "console"}
    gateway = start_cli(["serve", "--port", "0", "--upstream", sim_url, "--redis-url", f"redis://127.0.0.1:{port}/0"],
                        tmp_path / "gateway.log", env=env, ready_text="gateway ready")
    try:
        ready = requests.get(f"{gateway.url}/readyz", timeout=5).json()
        assert ready["status"] == "degraded" and ready["redis"]["mode"] == "local", ready
        log = gateway.log.read_text()
        assert "scripts disabled" in log and "unknown command" in log.lower(), log
        results = asyncio.run(spread([f"/v1/{WABA}?CustSpaceId=28251486512358"] * 5, [gateway]))
        # It never got a lease on safe capacity (the lease is a script too): misses are refused, saying why,
        # and cost no quota; other replicas (with a Redis that runs scripts) keep the whole cap.
        assert {status for status, _, _ in results} == {503}
        for _, body, _ in results:
            assert body["Code"] == "Throttling.Proxy" and "has not reached Redis since it started" in body["Message"]
        stats = sim_stats(sim_url, WABA)
        assert stats["calls"] == 0
    finally:
        gateway.stop()
        server.kill()
        server.wait()


@BOTH_REDIS
def test_stale_entries_are_served_at_once_and_refreshed_once_across_three_replicas(replicas: Replicas,
                                                                                   sim_url: str) -> None:

    put_json(f"{sim_url}/__sim/fixtures", many_templates(3))
    gateways = replicas(3, "--ttl", f"{TEMPLATE}=2", "--stale-while-revalidate-s", "30", "--refresh-ahead", "0")
    code = f"{1:032x}"
    target = f"/v1/{TEMPLATE}?CustSpaceId={BULK_SPACE}&Language=en_US&TemplateCode={code}"
    assert [get(g, target)[0] for g in gateways] == ["MISS", "HIT", "HIT"]
    requests.patch(f"{sim_url}/__sim/spaces/{BULK_SPACE}/templates/{code}/en_US", data=orjson.dumps(
        {"Name": "renamed"}), timeout=5).raise_for_status()
    time.sleep(2.1)  # the 2 s TTL passes: every replica's copy is stale
    results = asyncio.run(spread([target] * 30, gateways))
    for status, body, cache in results:
        assert status == 200 and (cache, body["Data"]["Name"]) in {("STALE", "bulk_1"), ("HIT", "renamed")}
    assert sum(1 for _, _, cache in results if cache == "STALE") >= 3
    deadline = time.monotonic() + 10
    for gateway in gateways:  # each replica's next request (once the refresh has landed) sees the new data
        while True:
            response = requests.get(gateway.url + target, timeout=10)
            if response.json()["Data"]["Name"] == "renamed":
                assert response.headers["X-Cache"] == "HIT"
                break
            assert time.monotonic() < deadline, "the refresh never reached this replica"
            time.sleep(0.02)
    assert sim_stats(sim_url, TEMPLATE)["calls"] == 2  # the first fill and exactly one refresh
    assert sum(admin(g, "GET", "/admin/status")["counters"]["refreshes"] for g in gateways) == 1


def test_an_audit_callback_purges_the_template_it_names_on_every_replica(replicas: Replicas, sim_url: str) -> None:
    gateways = replicas(3)
    space, code = "28251486512358", "744c4b5c79c9432497a075bdfca36bf5"
    template = f"/v1/{TEMPLATE}?CustSpaceId={space}&Language=en_US&TemplateCode={code}"
    waba_id = requests.get(gateways[0].url + f"/v1/{WABA}?CustSpaceId={space}", timeout=10).json()["Data"]["Id"]
    first = [get(g, template) for g in gateways]
    assert [cache for cache, _ in first] == ["MISS", "HIT", "HIT"]
    counted = [invalidations(g) for g in gateways[1:]]
    refused = requests.post(f"{gateways[0].url}/callbacks/cams/audit?token=wrong-token", timeout=5,
                            data=b"[]")
    assert refused.status_code == 401
    refused = requests.post(f"{gateways[0].url}/callbacks/cams/audit", timeout=5, data=b"[]",
                            headers={"X-Callback-Token": "wrong-token"})
    assert refused.status_code == 401
    # The token in a header (out of every URL and access log); ?token= stays for CAMS, configured with a URL.
    response = requests.post(f"{gateways[0].url}/callbacks/cams/audit", timeout=5,
                             headers={"X-Callback-Token": CALLBACK_TOKEN},
                             data=orjson.dumps([{"WabaId": waba_id, "TemplateCode": code, "Language": "en_US",
                                                 "AuditStatus": "pass", "Reason": ""}]))
    assert response.status_code == 200 and response.json()["Purged"] == 1
    assert requests.post(f"{gateways[0].url}/callbacks/cams/audit?token={CALLBACK_TOKEN}", timeout=5,
                         data=b"[]").status_code == 200
    wait_for_invalidations(gateways[1:], [n + 1 for n in counted])
    after = [get(g, template) for g in (gateways[1], gateways[2], gateways[0])]
    assert after[0][0] == "MISS" and after[0][1] != first[0][1]
    assert after[1:] == [("HIT", after[0][1])] * 2
    assert sim_stats(sim_url, TEMPLATE)["calls"] == 2
