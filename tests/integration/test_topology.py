"""The cluster, two ways: docker-compose.yml and `make cluster` (scripts/cluster.sh), kept in step.

Compose is checked statically here (against the compose-spec JSON schema and the CLI's own option tables), by
``docker-compose config`` (v1, Debian's package, which scripts/ensure-compose.sh installs for `make test`) and by
``docker compose config`` where the compose plugin (v2) exists. The local topology is started for real: its
processes must be the compose services with local addresses (same replicas, flags and gateway environment),
traffic through nginx must reach every gateway without the upstream throttling anyone, SIGTERM must leave no
process behind, Ctrl-C must stop it all with status 0 and no false alarm, and a component that dies must be
reported.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis as redis_sync
import requests
import yaml

from proxy.__main__ import build_parser
from proxy.settings import GATEWAY_OPTIONS, GatewaySettings
from proxy.simulator.settings import SIMULATOR_OPTIONS, SimulatorSettings
from tests.support import ROOT, SEED_SPACE, SEED_TEMPLATE, free_port, many_templates

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_DOTENV = ROOT / ".env"
NGINX_CONF = ROOT / "deploy" / "compose" / "nginx.conf"
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
GATEWAY = re.compile(r"^gateway-(\d+)$")
NGINX_SERVER = re.compile(r"^\s*server\s+(\S+?):(\d+)\b")
GATEWAY_ENVS = frozenset(option.env for option in GATEWAY_OPTIONS)
SIMULATOR_ENVS = frozenset(option.env for option in SIMULATOR_OPTIONS)
TEMPLATE = "GetChatappTemplateDetail"
BULK_SPACE = "77000000000001"


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def compose_schema() -> dict[str, Any]:
    """The compose-spec schema as check-jsonschema vendors it (its ``vendor.compose-spec``), read offline."""
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return dict(json.loads(schema_file.read_text()))


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def gateway_names(compose: Mapping[str, Any]) -> list[str]:
    names = [name for name in compose["services"] if GATEWAY.match(name)]
    return sorted(names, key=lambda name: int(GATEWAY.match(name).group(1)))  # type: ignore[union-attr]


def env_file(path: Path) -> dict[str, str]:
    """An env_file as compose reads it (the subset gateway.env may use: KEY=VALUE, # comments)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, eq, value = line.partition("=")
        assert eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{path.name}: not KEY=VALUE: {line!r}"
        assert not re.search(r"[\s\"'$\\]", value), f"{path.name}: no quotes, spaces, $ or \\ please: {line!r}"
        values[key] = value
    return values


def service_env(compose: Mapping[str, Any], name: str) -> dict[str, str]:
    """A service's environment: its env_file(s), then ``environment`` (compose's order of precedence)."""
    service = compose["services"][name]
    files = service.get("env_file", [])
    env: dict[str, str] = {}
    for entry in [files] if isinstance(files, str | dict) else files:
        path = entry if isinstance(entry, str) else entry["path"]
        env.update(env_file(COMPOSE_FILE.parent / path))
    declared = service.get("environment", {})
    if isinstance(declared, list):
        declared = dict(item.partition("=")[::2] for item in declared)
    env.update({key: str(value) for key, value in declared.items()})
    return env


def parse_cli(argv: Sequence[str]) -> Any:
    try:
        return build_parser().parse_args(list(argv))
    except SystemExit:
        pytest.fail(f"not a valid cams-proxy command line: {list(argv)}")


def masked(argv: Sequence[str]) -> list[str]:
    """A command line with the values of --host and --port masked: what differs between compose and local."""
    out = list(argv)
    for index, arg in enumerate(out[:-1]):
        if arg in {"--host", "--port"}:
            out[index + 1] = "<" + arg[2:] + ">"
    return out


def flag_value(argv: Sequence[str], flag: str) -> str:
    return argv[list(argv).index(flag) + 1]


def healthcheck_command(service: Mapping[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert isinstance(test, list), "healthcheck.test: use the exec form, a list"
    assert test[0] in {"CMD", "CMD-SHELL"}
    return " ".join(test[1:])


# ------------------------------------------------------------------------------------- compose, statically


def test_compose_file_follows_the_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []
    # The schema has teeth: a wrong condition and a misspelt key are both rejected.
    broken = copy.deepcopy(compose)
    broken["services"]["gateway-1"]["depends_on"]["redis"]["condition"] = "service_ready"
    broken["services"]["lb"]["helthcheck"] = broken["services"]["lb"].pop("healthcheck")
    problems = schema_errors(broken)
    assert any("service_ready" in problem for problem in problems), problems
    assert any("helthcheck" in problem for problem in problems), problems


def test_compose_topology_redis_simulator_three_gateways_and_a_balancer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateways = gateway_names(compose)
    assert gateways == ["gateway-1", "gateway-2", "gateway-3"]
    assert set(services) == {"redis", "simulator", "lb", *gateways}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"

    assert services["redis"]["image"].startswith("redis:7")
    assert healthcheck_command(services["redis"]) == "redis-cli ping"

    simulator = services["simulator"]
    assert simulator["command"][0] == "simulate"
    assert "/__sim/health" in healthcheck_command(simulator)
    assert f":{flag_value(simulator['command'], '--port')}/" in healthcheck_command(simulator)

    for name in gateways:
        gateway = services[name]
        assert gateway["image"] == simulator["image"] and "build" in gateway, f"{name}: not the project's image"
        assert gateway["command"][0] == "serve"
        assert f":{flag_value(gateway['command'], '--port')}/readyz" in healthcheck_command(gateway)
        assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"},
                                         "simulator": {"condition": "service_healthy"}}
    # The replicas are one template: identical but for their name.
    assert all(services[name] == services[gateways[0]] for name in gateways)

    lb = services["lb"]
    assert lb["image"].startswith("nginx:")
    assert lb["depends_on"] == {name: {"condition": "service_healthy"} for name in gateways}
    assert any(str(port).endswith("8080:8080") for port in lb["ports"])
    assert "./deploy/compose/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]


def test_every_gateway_and_simulator_setting_in_compose_is_a_real_option(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in gateway_names(compose):
        env = service_env(compose, name)
        unknown = set(env) - GATEWAY_ENVS
        assert not unknown, f"{name}: environment variables that `proxy serve` does not read: {sorted(unknown)}"
        # The real parser and the real settings: every flag exists and every value is valid.
        settings = GatewaySettings.from_sources(parse_cli(services[name]["command"]), env)
        assert settings.host == "0.0.0.0"
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.upstream == f"http://simulator:{flag_value(services['simulator']['command'], '--port')}"
        assert settings.access_key_id  # the demo pair, from gateway.env
    simulator = services["simulator"]
    assert not set(service_env(compose, "simulator")) - SIMULATOR_ENVS
    assert SimulatorSettings.from_sources(parse_cli(simulator["command"]), service_env(compose, "simulator")).host == (
        "0.0.0.0")


def test_nginx_balances_over_exactly_the_gateway_services(compose: dict[str, Any]) -> None:
    text = NGINX_CONF.read_text()
    servers = [match.groups() for match in map(NGINX_SERVER.match, text.splitlines()) if match]
    services = compose["services"]
    assert servers == [(name, flag_value(services[name]["command"], "--port")) for name in gateway_names(compose)]
    assert re.search(r"^\s*listen\s+8080;", text, re.M)
    assert re.search(r"^\s*keepalive\s+\d+;", text, re.M)
    assert re.search(r'^\s*proxy_set_header\s+Connection\s+"";', text, re.M)  # keepalive to the gateways
    # Another replica only on connection errors: the gateways' 502/503/504 are real answers.
    (retry,) = re.findall(r"^\s*proxy_next_upstream\s+([^;]*);", text, re.M)
    assert set(retry.split()) <= {"error", "timeout"}


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed: `docker compose config` not run (the schema check above stands)")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()[:1]
        pytest.skip(f"`docker compose version` failed ({' '.join(reason) or probe.returncode}): the compose plugin "
                    "is not installed, so `docker compose config` was not run (the schema check above stands)")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def compose_command_env() -> dict[str, str]:
    """This environment without what would change how compose reads the file, or which Python runs v1."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("COMPOSE_", "DOCKER_", "PYTHON")) and key != "VIRTUAL_ENV"}


def compose_v2_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
    return probe.returncode == 0


def test_the_compose_file_suits_both_compose_versions(compose: dict[str, Any]) -> None:
    # docker-compose v1 rejects a top-level `name:`, and a `version:` would make it apply an old format (and v2
    # warn): the project name comes from .env, which both read from the compose file's folder.
    assert "name" not in compose and "version" not in compose
    assert env_file(COMPOSE_DOTENV) == {"COMPOSE_PROJECT_NAME": "cams-proxy"}


def test_docker_compose_v1_config_accepts_the_file(compose: dict[str, Any]) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if compose_v2_available():
            pytest.skip("docker-compose (v1) is not installed; the compose plugin (v2) checks the file below")
        pytest.fail("docker-compose is not installed: run scripts/ensure-compose.sh (make test does), or "
                    "apt-get install docker-compose", pytrace=False)
    env = compose_command_env()
    version = subprocess.run([binary, "version", "--short"], capture_output=True, text=True, timeout=60,
                             check=False, env=env, cwd=ROOT).stdout.strip()
    for args in (["config", "--quiet"], ["config", "--services"]):
        result = subprocess.run([binary, "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True,
                                timeout=60, check=False, env=env, cwd=ROOT)
        assert result.returncode == 0, f"docker-compose {version} {' '.join(args)}:\n{result.stderr}"
    assert sorted(result.stdout.split()) == sorted(compose["services"]), result.stdout


# ------------------------------------------------------------------------------------------ make cluster


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(pair.partition("=")[::2] for pair in pairs if pair)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def with_sigint(disposition: int, argv: list[str]) -> list[str]:
    """``argv`` started with SIGINT at ``disposition`` (SIG_DFL as from a shell, SIG_IGN as from a script's ``&``)."""
    name = "SIG_IGN" if disposition == signal.SIG_IGN else "SIG_DFL"
    return [sys.executable, "-c", f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{name}); "
            "os.execvp(sys.argv[1], sys.argv[1:])", *argv]


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        pytest.fail("nginx is not installed: run scripts/ensure-nginx.sh (make test does), or apt-get install "
                    "nginx-light", pytrace=False)
    return path


class Cluster:
    def __init__(self, tmp: Path, sigint: int = signal.SIG_DFL) -> None:
        ports: set[int] = set()
        while len(ports) < 6:
            ports.add(free_port())
        self.redis, self.sim, self.lb, *self.gateways = sorted(ports)
        self.dir = tmp / "cluster"
        self.output = tmp / "cluster.out"
        # Only what the script documents; none of this shell's settings of the two commands.
        env = {key: value for key, value in os.environ.items() if key not in GATEWAY_ENVS | SIMULATOR_ENVS}
        env.update(CLUSTER_DIR=str(self.dir), CLUSTER_PYTHON=sys.executable, REDIS_PORT=str(self.redis),
                   SIM_PORT=str(self.sim), LB_PORT=str(self.lb), GATEWAY_PORTS=" ".join(map(str, self.gateways)))
        env.pop("GATEWAY_PORT_BASE", None)
        with self.output.open("w") as out:
            # A session of its own: its own process group, as a terminal gives a foreground job; SIGINT as asked
            # (ignored: as in the background of another script).
            self.proc = subprocess.Popen(with_sigint(sigint, ["bash", str(CLUSTER_SH)]), stdout=out,
                                         stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.lb}"
        self.sim_url = f"http://127.0.0.1:{self.sim}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the script printed its banner: every health check, the balancer's last, has passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "load balancer" in self.output.read_text():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"scripts/cluster.sh exited ({self.proc.returncode}):\n{self.output.read_text()}")
            time.sleep(0.1)
        pytest.fail(f"scripts/cluster.sh not ready after {timeout} s:\n{self.output.read_text()}")

    def processes(self) -> dict[str, list[int]]:
        """The script's processes by role."""
        roles: dict[str, list[int]] = {"redis": [], "simulator": [], "gateway": [], "nginx": []}
        for pid in children_of(self.proc.pid):
            argv = cmdline(pid)
            if not argv:
                continue
            if "redis-server" in argv[0]:
                roles["redis"].append(pid)
            elif argv[1:4] == ["-m", "proxy", "simulate"]:
                roles["simulator"].append(pid)
            elif argv[1:4] == ["-m", "proxy", "serve"]:
                roles["gateway"].append(pid)
            elif argv[0].startswith("nginx") or argv[0].endswith("/nginx"):
                roles["nginx"].append(pid)
            else:
                roles.setdefault("other", []).append(pid)
        return roles

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session this test started, nothing else
            self.proc.wait()
            pytest.fail(f"scripts/cluster.sh did not stop within 20 s of SIGTERM:\n{self.output.read_text()}")


@contextlib.contextmanager
def running_cluster(tmp: Path, sigint: int = signal.SIG_DFL) -> Iterator[Cluster]:
    nginx_binary()
    started = Cluster(tmp, sigint)
    try:
        yield started
    finally:
        if started.proc.poll() is None:
            started.stop()
        with contextlib.suppress(ProcessLookupError):  # after a failure: what is left of the session it started
            os.killpg(started.proc.pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path, redis_binary: str) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as started:
        yield started


def local_address(compose: Mapping[str, Any], cluster: Cluster) -> Any:
    """Compose's service addresses in a value -> the local processes' ones."""
    services = compose["services"]
    mapping = {"redis:6379": f"127.0.0.1:{cluster.redis}",
               f"simulator:{flag_value(services['simulator']['command'], '--port')}": f"127.0.0.1:{cluster.sim}"}

    def translate(value: str) -> str:
        for remote, local in mapping.items():
            value = value.replace(remote, local)
        return value

    return translate


def check_same_topology(compose: dict[str, Any], cluster: Cluster) -> list[int]:
    """The running processes are compose's services with local addresses; returns their pids."""
    services = compose["services"]
    roles = cluster.processes()
    gateways = gateway_names(compose)
    assert len(roles["redis"]) == 1 and len(roles["simulator"]) == 1, roles
    assert len(roles["gateway"]) == len(gateways) == 3, roles
    assert roles["nginx"], roles
    assert "other" not in roles, {pid: cmdline(pid) for pid in roles["other"]}

    # Redis: compose's settings (asked of the server: redis-server rewrites its command line).
    compose_redis = services["redis"]["command"]
    assert compose_redis[0] == "redis-server"
    client = redis_sync.Redis(host="127.0.0.1", port=cluster.redis, decode_responses=True)
    try:
        for flag, value in zip(compose_redis[1::2], compose_redis[2::2], strict=True):
            assert client.config_get(flag.removeprefix("--")) == {flag.removeprefix("--"): value}
    finally:
        client.close()

    # The simulator: compose's command line, local host and port.
    sim_argv = cmdline(roles["simulator"][0])[3:]
    assert masked(sim_argv) == masked(services["simulator"]["command"])
    assert flag_value(sim_argv, "--port") == str(cluster.sim)
    # Compose's file sets none either (the image's SIM_HOST gives way to --host).
    assert not set(environ(roles["simulator"][0])) & SIMULATOR_ENVS

    # The gateways: compose's command line and, setting by setting, compose's environment.
    translate = local_address(compose, cluster)
    expected_env = {key: translate(value) for key, value in service_env(compose, gateways[0]).items()}
    ports = []
    for pid in roles["gateway"]:
        argv = cmdline(pid)[3:]
        assert masked(argv) == masked(services[gateways[0]]["command"])
        ports.append(int(flag_value(argv, "--port")))
        env = {key: value for key, value in environ(pid).items() if key in GATEWAY_ENVS}
        assert env == expected_env
    assert sorted(ports) == sorted(cluster.gateways)

    # nginx: compose's configuration, but for the local addresses, log files and temp directories.
    local_conf = (cluster.dir / "nginx.conf").read_text()
    for index, port in enumerate(cluster.gateways, start=1):
        local_conf = local_conf.replace(f"server 127.0.0.1:{port} ", f"server gateway-{index}:8080 ")
    local_conf = local_conf.replace(f"listen 127.0.0.1:{cluster.lb};", "listen 8080;")
    local_conf = local_conf.replace(f"error_log {cluster.dir}/lb-error.log", "error_log /dev/stderr")
    local_conf = local_conf.replace(f"access_log {cluster.dir}/lb-access.log", "access_log /dev/stdout")
    lines = [line for line in local_conf.splitlines()
             if "cluster.sh:" not in line and not re.match(rf"\s*\w+_temp_path {re.escape(str(cluster.dir))}/", line)]
    assert lines == NGINX_CONF.read_text().splitlines()
    return [pid for pids in roles.values() for pid in pids]


def test_make_cluster_runs_the_compose_topology_locally(compose: dict[str, Any], cluster: Cluster) -> None:
    cluster.wait_ready()
    pids = check_same_topology(compose, cluster)

    # Enough distinct templates for the upstream budget to matter: 30 at 5/s take 6 s across the replicas.
    http = requests.Session()
    fixtures = http.get(f"{cluster.sim_url}/__sim/fixtures", timeout=5).json()
    fixtures["spaces"].append(many_templates(30, BULK_SPACE)["spaces"][0])
    http.put(f"{cluster.sim_url}/__sim/fixtures", data=json.dumps(fixtures), timeout=5).raise_for_status()
    http.post(f"{cluster.sim_url}/__sim/reset", timeout=5).raise_for_status()

    seed = (f"{cluster.url}/v1/{TEMPLATE}?CustSpaceId={SEED_SPACE}&Language=en_US&TemplateCode={SEED_TEMPLATE}")
    first, second = http.get(seed, timeout=15), http.get(seed, timeout=15)
    assert (first.status_code, second.status_code) == (200, 200), first.text
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")  # shared through Redis
    assert first.content == second.content

    def call(index: int) -> tuple[str, int, str, str]:
        request_id = f"topology-{index:02d}"
        params = {"CustSpaceId": BULK_SPACE, "Language": "en_US", "TemplateCode": f"{index:032x}"}
        response = requests.get(f"{cluster.url}/v1/{TEMPLATE}", params=params, timeout=20,
                                headers={"X-Request-Id": request_id})
        return request_id, response.status_code, response.json().get("Code", ""), response.headers.get("X-Cache", "")

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(call, range(30)))
    assert [(status, code) for _, status, code, _ in answers] == [(200, "OK")] * 30, answers
    assert {cache for *_, cache in answers} <= {"MISS", "COALESCED"}

    # Round robin: every replica answered some of them, each request exactly one replica.
    def read_logs() -> list[str]:
        return [(cluster.dir / f"gateway-{index}.log").read_text() for index in range(1, 4)]

    deadline = time.monotonic() + 10  # access lines are written in batches, every 50 ms
    while (not all(any(f'"request_id":"{request_id}"' in log for log in read_logs()) for request_id, *_ in answers)
           and time.monotonic() < deadline):
        time.sleep(0.05)
    logs = read_logs()
    served = [[request_id for request_id, *_ in answers if f'"request_id":"{request_id}"' in log] for log in logs]
    assert all(served), [len(ids) for ids in served]
    assert sorted(request_id for ids in served for request_id in ids) == [request_id for request_id, *_ in answers]

    # The referee: one upstream call per distinct template, the shared budget kept, nobody throttled.
    stats = http.get(f"{cluster.sim_url}/__sim/stats", timeout=5).json()["actions"][TEMPLATE]
    assert stats["throttled"] == 0, stats
    assert stats["calls"] == 31, stats
    assert stats["max_in_any_1s"] <= 5, stats

    # A callback token in the query string (CAMS is configured with a URL) reaches no log: not nginx's access log,
    # whose format drops query strings, and not a gateway's.
    secret_in_query = "callback-token-in-a-query-never-logged-5d1c"
    refused = http.post(f"{cluster.url}/callbacks/cams/audit?token={secret_in_query}", json=[], timeout=5)
    assert refused.status_code in {401, 403} and refused.json()["Code"], refused.text
    time.sleep(0.5)  # nginx writes its access log line after the answer
    access_log = (cluster.dir / "lb-access.log").read_text()
    assert "/callbacks/cams/audit" in access_log
    for name in ("lb-access.log", "lb.log", "gateway-1.log", "gateway-2.log", "gateway-3.log"):
        assert secret_in_query not in (cluster.dir / name).read_text(), name

    # SIGTERM: the script stops every process it started, and waits for them.
    assert cluster.stop() == 128 + signal.SIGTERM, cluster.output.read_text()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if alive(pid)] == []


def wait_gone(pids: Sequence[int]) -> list[int]:
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["from-a-shell", "sigint-ignored"])
def test_ctrl_c_stops_the_cluster_with_status_0_and_no_alarm(tmp_path: Path, redis_binary: str, sigint: int) -> None:
    with running_cluster(tmp_path, sigint) as cluster:
        cluster.wait_ready()
        pids = [pid for pids in cluster.processes().values() for pid in pids]
        assert len(pids) >= 6, cluster.processes()
        os.killpg(cluster.proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        try:
            status = cluster.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"scripts/cluster.sh did not stop within 20 s of SIGINT:\n{cluster.output.read_text()}")
        output = cluster.output.read_text()
        assert status == 0, output
        assert "cluster: stopping" in output
        assert not [alarm for alarm in ("exited", "Error", "Traceback", "killing") if alarm in output], output
        assert wait_gone(pids) == []


def test_a_component_that_dies_is_reported_and_the_cluster_fails(tmp_path: Path, redis_binary: str) -> None:
    with running_cluster(tmp_path) as cluster:
        cluster.wait_ready()
        roles = cluster.processes()
        pids = [pid for pids in roles.values() for pid in pids]
        victim = roles["gateway"][1]
        name = f"gateway-{cluster.gateways.index(int(flag_value(cmdline(victim), '--port'))) + 1}"
        os.kill(victim, signal.SIGKILL)
        try:
            status = cluster.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"scripts/cluster.sh still running 20 s after {name} died:\n{cluster.output.read_text()}")
        output = cluster.output.read_text()
        assert status == 1, output
        assert f"cluster: {name} exited (status {128 + signal.SIGKILL}): stopping the others" in output
        assert wait_gone(pids) == []
