"""deploy/: the Kubernetes manifests (kustomize base and demo overlay) and the Grafana dashboard.

The kustomizations are rendered here, without kubectl, by a small renderer of the subset of kustomize they use
(it refuses anything else, so a kustomization that grows a feature makes this file grow with it). Every rendered
object, and the Secret example, is validated against the Kubernetes OpenAPI schemas that kubernetes-validate
bundles (strict: unknown fields are errors), offline, for a fixed Kubernetes version and the newest it knows.
Then the contents are checked against the code: every environment variable is a real option of ``proxy serve``
and the whole environment parses into valid settings, the probes hit /readyz and /healthz, the pods run as the
Dockerfile's non-root user on a read-only root, the selectors of the Service, PDB and HPA reach the gateway's
pods and no others, and the demo's gateway really reaches its Redis and its simulator with a key it accepts.

The dashboard's PromQL may name only the gateway's metrics, with their real labels and label values.
(``docker compose config`` is checked in test_topology.py.)
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from proxy.__main__ import build_parser
from proxy.admission.fair import Priority
from proxy.answer import CacheStatus
from proxy.metrics import Metrics
from proxy.settings import GATEWAY_OPTIONS, GatewaySettings
from proxy.simulator.settings import DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, SimulatorSettings
from proxy.upstream.errors import Outcome
from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
DEMO = K8S / "demo"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cams-proxy.json"
DOCKERFILE = ROOT / "Dockerfile"

#: The oldest Kubernetes the manifests target, and the newest whose schemas the validator ships.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
GATEWAY_ENVS = frozenset(option.env for option in GATEWAY_OPTIONS)
SECRET_ENVS = frozenset(option.env for option in GATEWAY_OPTIONS if option.secret) | {"ALIBABA_CLOUD_ACCESS_KEY_ID"}
GATEWAY_LABELS = {"app.kubernetes.io/name": "cams-proxy", "app.kubernetes.io/component": "gateway"}
CLUSTER_SCOPED = frozenset({"Namespace"})


# ------------------------------------------------------------------------------------ a tiny kustomize

KUSTOMIZATION_FIELDS = frozenset({"apiVersion", "kind", "resources", "namespace", "patches", "secretGenerator",
                                  "generatorOptions"})


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert all(isinstance(document, dict) for document in documents), f"{path}: not a list of objects"
    return documents


def strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge for what the patches here use: maps merge (null deletes a key), lists of
    named items (containers, env, volumes, ports) merge by name, any other list or scalar is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        assert not [key for key in patch if str(key).startswith("$")], f"patch directives are not supported: {patch}"
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = strategic_merge(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    if (isinstance(base, list) and isinstance(patch, list)
            and all(isinstance(item, dict) and "name" in item for item in [*base, *patch])):
        items = {item["name"]: item for item in base}
        for item in patch:
            items[item["name"]] = strategic_merge(items[item["name"]], item) if item["name"] in items else item
        return list(items.values())
    return copy.deepcopy(patch)


def render(directory: Path) -> list[dict[str, Any]]:
    """``kustomize build directory`` for the subset this repository uses, in kustomize's order: resources,
    generators, patches, namespace."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    where = directory.relative_to(ROOT)
    unsupported = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unsupported, f"{where}: the test's kustomize renderer does not know {sorted(unsupported)}: extend it"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"

    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects.extend(render(path) if path.is_dir() else yaml_documents(path))

    options = kustomization.get("generatorOptions", {})
    assert set(options) <= {"disableNameSuffixHash"}, f"{where}: generatorOptions {options}"
    for generator in kustomization.get("secretGenerator", []):
        assert set(generator) <= {"name", "literals", "type"}, f"{where}: secretGenerator {generator}"
        assert options.get("disableNameSuffixHash") is True, f"{where}: the renderer does not compute name hashes"
        literals = dict(literal.split("=", 1) for literal in generator.get("literals", []))
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]},
                        "type": generator.get("type", "Opaque"),
                        "data": {key: base64.b64encode(value.encode()).decode() for key, value in literals.items()}})

    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"{where}: only strategic-merge patches from a file are supported: {patch}"
        (document,) = yaml_documents(directory / patch["path"])
        targets = [index for index, obj in enumerate(objects)
                   if (obj["kind"], obj["metadata"]["name"]) == (document["kind"], document["metadata"]["name"])]
        assert len(targets) == 1, f"{where}: patch {patch['path']} matches {len(targets)} objects"
        objects[targets[0]] = strategic_merge(objects[targets[0]], document)

    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]

    keys = [(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]) for obj in objects]
    assert len(keys) == len(set(keys)), f"{where}: an object is defined twice: {keys}"
    return objects


def test_the_renderer_merges_like_kubernetes() -> None:
    base = {"spec": {"replicas": 3, "containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]},
                                                   {"name": "b", "args": ["serve"]}]}}
    patch = {"spec": {"replicas": None, "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]},
                                                       {"name": "b", "args": ["simulate"]}]}}
    assert strategic_merge(base, patch) == {"spec": {"containers": [
        {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "b", "args": ["simulate"]}]}}


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(BASE)


@pytest.fixture(scope="module")
def demo() -> list[dict[str, Any]]:
    return render(DEMO)


# -------------------------------------------------------------------------------------------- helpers


def one(objects: Iterable[Mapping[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind and name in {None, obj["metadata"]["name"]}]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return dict(found[0])


def schema_errors(obj: Mapping[str, Any], version: str) -> list[str]:
    """kubernetes-validate, strict; a kind it has no schema for is an error too (nothing was checked)."""
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


def dockerfile_user() -> tuple[int, int]:
    """The runtime stage's ``USER uid:gid`` (numeric, as Kubernetes' runAsNonRoot check needs)."""
    stages = re.split(r"^FROM\s", DOCKERFILE.read_text(), flags=re.M)
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", stages[-1], re.M)
    assert users, "the Dockerfile's last stage has no numeric USER uid:gid"
    uid, gid = users[-1]
    return int(uid), int(gid)


def dockerfile_entrypoint() -> list[str]:
    (line,) = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M)
    return list(json.loads(line))


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def port_number(spec: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's port, resolved through the container's named ports."""
    if isinstance(port, int):
        return port
    (number,) = [item["containerPort"] for item in spec["ports"] if item.get("name") == port]
    return int(number)


def parse_cli(argv: Sequence[str]) -> Any:
    try:
        return build_parser().parse_args(list(argv))
    except SystemExit:
        pytest.fail(f"not a valid cams-proxy command line: {list(argv)}")


def config_map_env(objects: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"envFrom: only ConfigMaps, no prefix: {source}"
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    return env


def pod_env(objects: Sequence[Mapping[str, Any]], spec: Mapping[str, Any],
            secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """A container's environment: its ConfigMaps, then its env; Secret values from ``secrets`` or the rendered
    Secret (an optional key that is absent is left unset, as the kubelet does)."""
    env = config_map_env(objects, spec)
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        reference = item["valueFrom"]["secretKeyRef"]
        if secrets is None:
            data = one(objects, "Secret", reference["name"])["data"]
            values = {key: base64.b64decode(value).decode() for key, value in data.items()}
        else:
            values = dict(secrets)
        if reference["key"] in values:
            env[item["name"]] = values[reference["key"]]
        else:
            assert reference.get("optional") is True, f"{item['name']}: no key {reference['key']} in the Secret"
    return env


def check_pod_hardening(deployment: Mapping[str, Any]) -> None:
    """The "restricted" Pod Security Standard and then some: non-root, no privilege escalation, no
    capabilities, the runtime's seccomp profile, a read-only root, resources set, no API token."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    assert pod_security.get("runAsNonRoot") is True, name
    assert pod_security.get("runAsUser", 0) > 0, name
    assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}, name
    assert pod.get("automountServiceAccountToken") is False, name
    assert pod.get("enableServiceLinks") is False, f"{name}: Docker-link variables could shadow settings"
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
    assert all(set(volume) <= {"name", "emptyDir"} for volume in pod.get("volumes", [])), name
    for spec in pod["containers"]:
        security = spec["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        assert "privileged" not in security and "runAsUser" not in security, name  # the pod's user, one place
        resources = spec["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), f"{name}: requests"
        assert {"cpu", "memory"} <= set(resources["limits"]), f"{name}: limits"
        assert spec.get("readinessProbe") and spec.get("livenessProbe"), f"{name}: probes"
        assert spec["imagePullPolicy"] == "IfNotPresent", name


# ------------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_follows_the_kubernetes_schema(version: str, base: list[dict[str, Any]],
                                                             demo: list[dict[str, Any]]) -> None:
    objects = [*base, *demo, *yaml_documents(SECRET_EXAMPLE)]
    assert [problem for obj in objects for problem in schema_errors(obj, version)] == []


def test_the_schema_check_has_teeth(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "cams-proxy")
    misspelt = copy.deepcopy(deployment)
    spec = misspelt["spec"]["template"]["spec"]["containers"][0]
    spec["readinesProbe"] = spec.pop("readinessProbe")
    assert any("readinesProbe" in problem for problem in schema_errors(misspelt, KUBERNETES_VERSIONS[0]))
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    assert schema_errors(wrong_type, KUBERNETES_VERSIONS[0])
    unknown_kind = {"apiVersion": "example.com/v1", "kind": "Gateway", "metadata": {"name": "x"}}
    assert schema_errors(unknown_kind, KUBERNETES_VERSIONS[0])


def test_every_manifest_file_is_rendered_and_the_secret_example_is_not() -> None:
    used: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        document = yaml.safe_load(kustomization.read_text())
        used.add(kustomization)
        for entry in [*document.get("resources", []), *(patch["path"] for patch in document.get("patches", []))]:
            path = (kustomization.parent / entry).resolve()
            used.add(path / "kustomization.yaml" if path.is_dir() else path)
    files = {path.resolve() for path in K8S.rglob("*.yaml")}
    assert files - used == {SECRET_EXAMPLE.resolve()}
    (secret,) = yaml_documents(SECRET_EXAMPLE)
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "cams-proxy-credentials"
    assert all(value.startswith("REPLACE_WITH_") for value in secret["stringData"].values())
    assert set(secret["stringData"]) <= SECRET_ENVS


# -------------------------------------------------------------------------------------------- the base


def test_base_holds_the_gateway_and_no_secret(base: list[dict[str, Any]]) -> None:
    assert sorted(obj["kind"] for obj in base) == sorted(
        ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"])
    assert all("namespace" not in obj["metadata"] for obj in base)  # `kubectl -n` or an overlay chooses


def test_gateway_environment_is_real_options_and_secrets_come_from_a_secret(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "cams-proxy")
    spec = container(deployment)
    config = config_map_env(base, spec)
    names = set(config) | {item["name"] for item in spec.get("env", [])}
    assert not names - GATEWAY_ENVS, f"not settings of `proxy serve`: {sorted(names - GATEWAY_ENVS)}"
    assert not set(config) & SECRET_ENVS, "secrets in the ConfigMap"
    for item in spec["env"]:
        assert set(item) == {"name", "valueFrom"}, f"{item['name']}: a literal value in the base"
        assert set(item["valueFrom"]) == {"secretKeyRef"}
        assert item["valueFrom"]["secretKeyRef"]["name"] == "cams-proxy-credentials"
    required = {item["name"] for item in spec["env"] if not item["valueFrom"]["secretKeyRef"].get("optional")}
    assert required == {"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"}
    assert {"PROXY_ADMIN_TOKEN"} <= {item["name"] for item in spec["env"]}

    # The image runs `python -m proxy ARGS`; with the ConfigMap and some key, the real parser accepts it all.
    assert "command" not in spec and dockerfile_entrypoint() == ["python", "-m", "proxy"]
    assert spec["image"] == "cams-proxy:latest" and spec["args"] == ["serve"]
    some_key = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-test", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"}
    env = pod_env(base, spec, secrets=some_key)
    settings = GatewaySettings.from_sources(parse_cli(spec["args"]), env)
    assert settings.host == "0.0.0.0"
    assert settings.redis_url == "redis://cams-proxy-redis:6379/0"  # replicas must share one budget
    assert settings.upstream == "https://cams.ap-southeast-1.aliyuncs.com"
    assert settings.log_format == "json" and settings.workers == 1
    (http,) = spec["ports"]
    assert http == {"name": "http", "containerPort": settings.port, "protocol": "TCP"}


def test_gateway_probes_lifecycle_and_metrics(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "cams-proxy")
    spec = container(deployment)
    port = spec["ports"][0]["containerPort"]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        assert spec[probe]["httpGet"]["path"] == path, probe
        assert port_number(spec, spec[probe]["httpGet"]["port"]) == port, probe
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30  # time to start before liveness counts
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    # preStop, then the gateway's own drain (--shutdown-grace-s for calls in flight), within the grace period.
    pre_stop = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    some_key = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-test", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s"}
    settings = GatewaySettings.from_sources(parse_cli(spec["args"]), pod_env(base, spec, secrets=some_key))
    assert int(pre_stop[1]) + settings.shutdown_grace_s < pod["terminationGracePeriodSeconds"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": "/metrics"}


def test_gateway_runs_as_the_images_non_root_user_on_a_read_only_root(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "cams-proxy")
    check_pod_hardening(deployment)
    pod = deployment["spec"]["template"]["spec"]
    uid, gid = dockerfile_user()
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert uid != 0
    # The one writable place: /tmp, an emptyDir.
    (mount,) = container(deployment)["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_gateway_replicas_spread_and_are_selected_by_service_pdb_and_hpa(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "cams-proxy")
    labels = pod_labels(deployment)
    assert labels == GATEWAY_LABELS
    assert deployment["spec"]["selector"] == {"matchLabels": GATEWAY_LABELS}
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    spread = pod.get("topologySpreadConstraints", [])
    assert spread or pod.get("affinity", {}).get("podAntiAffinity")
    assert any(item["topologyKey"] == "kubernetes.io/hostname" for item in spread)
    assert all(selects(item["labelSelector"]["matchLabels"], labels) for item in spread)

    service = one(base, "Service", "cams-proxy")
    assert selects(service["spec"]["selector"], labels)
    (port,) = service["spec"]["ports"]
    assert port_number(container(deployment), port["targetPort"]) == container(deployment)["ports"][0]["containerPort"]

    pdb = one(base, "PodDisruptionBudget", "cams-proxy")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert len({"minAvailable", "maxUnavailable"} & set(pdb["spec"])) == 1  # the API server refuses both
    allowed = (pdb["spec"].get("maxUnavailable") == 1
               or 0 < pdb["spec"].get("minAvailable", 0) < deployment["spec"]["replicas"])
    assert allowed, "the PDB must let a drain proceed one pod at a time"

    hpa = one(base, "HorizontalPodAutoscaler", "cams-proxy")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": deployment["apiVersion"], "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert "cpu" in container(deployment)["resources"]["requests"]  # Utilization is relative to the request


# -------------------------------------------------------------------------------------------- the demo


def test_demo_is_the_base_plus_redis_and_the_simulator_in_its_namespace(base: list[dict[str, Any]],
                                                                       demo: list[dict[str, Any]]) -> None:
    namespace = one(demo, "Namespace")["metadata"]["name"]
    assert namespace == "cams-proxy-demo"
    assert all(obj["metadata"].get("namespace") == namespace for obj in demo if obj["kind"] != "Namespace")
    base_keys = {(obj["kind"], obj["metadata"]["name"]) for obj in base}
    demo_keys = {(obj["kind"], obj["metadata"]["name"]) for obj in demo}
    assert demo_keys - base_keys == {("Namespace", namespace), ("Secret", "cams-proxy-credentials"),
                                     ("Deployment", "cams-proxy-redis"), ("Service", "cams-proxy-redis"),
                                     ("Deployment", "cams-simulator"), ("Service", "cams-simulator")}
    assert base_keys <= demo_keys
    for deployment in (obj for obj in demo if obj["kind"] == "Deployment"):
        check_pod_hardening(deployment)
    # Each Service and the PDB select the pods of exactly one Deployment.
    deployments = [obj for obj in demo if obj["kind"] == "Deployment"]
    for selector_owner, selector in [*((obj, obj["spec"]["selector"]) for obj in demo if obj["kind"] == "Service"),
                                     *((obj, obj["spec"]["selector"]["matchLabels"])
                                       for obj in demo if obj["kind"] == "PodDisruptionBudget")]:
        chosen = [obj["metadata"]["name"] for obj in deployments if selects(selector, pod_labels(obj))]
        assert chosen == [selector_owner["metadata"]["name"]], (selector_owner["metadata"]["name"], chosen)


def test_demo_gateway_reaches_its_redis_and_the_simulator_with_a_key_it_accepts(demo: list[dict[str, Any]]) -> None:
    gateway = container(one(demo, "Deployment", "cams-proxy"))
    settings = GatewaySettings.from_sources(parse_cli(gateway["args"]), pod_env(demo, gateway))
    assert (settings.access_key_id, settings.access_key_secret and settings.access_key_secret.reveal()) == (
        DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET)
    assert settings.admin_token is not None

    def service_target(host: str, port: int) -> dict[str, Any]:
        """The container behind ``host:port``: the Service of that name, its port, the pods it selects."""
        service = one(demo, "Service", host)
        (service_port,) = [item for item in service["spec"]["ports"] if item["port"] == port]
        (deployment,) = [obj for obj in demo
                         if obj["kind"] == "Deployment" and selects(service["spec"]["selector"], pod_labels(obj))]
        spec = container(deployment)
        assert port_number(spec, service_port["targetPort"]) in {item["containerPort"] for item in spec["ports"]}
        return spec

    redis_match = re.fullmatch(r"redis://([\w.-]+):(\d+)/\d+", settings.redis_url or "")
    assert redis_match, settings.redis_url
    redis = service_target(redis_match.group(1), int(redis_match.group(2)))
    assert redis["image"].startswith("redis:7") and redis["args"][0] == "redis-server"
    assert int(redis_match.group(2)) == redis["ports"][0]["containerPort"] == 6379
    assert redis["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]  # the image's WORKDIR, writable

    upstream = re.fullmatch(r"http://([\w.-]+):(\d+)", settings.upstream)
    assert upstream, settings.upstream
    simulator = service_target(upstream.group(1), int(upstream.group(2)))
    assert simulator["image"] == gateway["image"]  # one image, two commands
    sim_settings = SimulatorSettings.from_sources(parse_cli(simulator["args"]), pod_env(demo, simulator))
    assert sim_settings.host == "0.0.0.0" and sim_settings.port == simulator["ports"][0]["containerPort"]
    accepted = {(key.access_key_id, key.access_key_secret.reveal()) for key in sim_settings.access_keys}
    assert (DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET) in accepted
    assert simulator["readinessProbe"]["httpGet"]["path"] == "/__sim/health"
    uid, gid = dockerfile_user()
    sim_pod = one(demo, "Deployment", "cams-simulator")["spec"]["template"]["spec"]
    assert (sim_pod["securityContext"]["runAsUser"], sim_pod["securityContext"]["runAsGroup"]) == (uid, gid)


# ---------------------------------------------------------------------------------------- the dashboard

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
#: The gateway's metrics: name -> (type, labels).
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "cams_proxy_requests_total": (COUNTER, frozenset({"action", "cache", "status", "tenant"})),
    "cams_proxy_upstream_calls_total": (COUNTER, frozenset({"action", "outcome"})),
    "cams_proxy_upstream_latency_seconds": (HISTOGRAM, frozenset({"action"})),
    "cams_proxy_queue_wait_seconds": (HISTOGRAM, frozenset({"action", "priority"})),
    "cams_proxy_queue_depth": (GAUGE, frozenset({"action", "priority"})),
    "cams_proxy_budget_cap": (GAUGE, frozenset({"action"})),
    "cams_proxy_redis_up": (GAUGE, frozenset()),
    "cams_proxy_l1_entries": (GAUGE, frozenset()),
}
LABEL_VALUES = {
    "cache": {"HIT", "STALE", "MISS", "COALESCED", "ERROR"},
    "outcome": {"success", "not_found", "denied", "business_error", "throttled", "auth_error", "fault", "no_answer"},
    "priority": {"interactive", "refresh", "warm"},
}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"instance", "job", "pod", "namespace"})
PROMQL_FUNCTIONS = frozenset({"sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "irate", "increase",
                              "histogram_quantile", "vector", "clamp_min", "clamp_max", "abs"})
PROMQL_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                             "unless", "offset"})
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*(?:,|$)')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?")


def metric_of(name: str) -> tuple[str, str]:
    """A series name -> (the metric, the series suffix): histograms have _bucket, _sum and _count."""
    if name in METRICS:
        return name, ""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("", ""))[0] == HISTOGRAM:
            return base, suffix
    raise AssertionError(f"{name!r} is not one of the gateway's metrics")


def promql_problems(expr: str) -> tuple[set[str], set[str], list[str]]:
    """(metrics used, grouping labels, problems) of a PromQL expression with Grafana variables."""
    problems: list[str] = []
    metrics: set[str] = set()
    grouping: set[str] = set()

    def selector(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            problems.append(f"a selector without a metric name: {match.group(0)}")
            return " "
        try:
            metric, suffix = metric_of(name)
        except AssertionError as error:
            problems.append(str(error))
            return " "
        metrics.add(metric)
        allowed = METRICS[metric][1] | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
        body = match.group(2)
        matchers = MATCHER.findall(body)
        if MATCHER.sub("", body).strip():
            problems.append(f"cannot read the matchers {body!r}")
        for label, operator, value in matchers:
            if label not in allowed:
                problems.append(f"{metric} has no label {label!r}")
            if label in LABEL_VALUES and not value.startswith("$"):
                values = set(value.split("|")) if operator in {"=~", "!~"} else {value}
                if values - LABEL_VALUES[label]:
                    problems.append(f"{label} is never {sorted(values - LABEL_VALUES[label])}")
        return " "

    text = SELECTOR.sub(selector, expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors: [1m], [$__rate_interval]
    for keyword, labels in GROUPING.findall(text):
        grouping |= {label.strip() for label in labels.split(",") if label.strip()}
        del keyword
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    for name, call in IDENTIFIER.findall(text):
        if call:
            if name not in PROMQL_FUNCTIONS:
                problems.append(f"unexpected function {name}()")
        elif name not in PROMQL_KEYWORDS:
            try:
                metrics.add(metric_of(name)[0])
            except AssertionError as error:
                problems.append(str(error))
    known = frozenset().union(*(METRICS[metric][1] for metric in metrics)) | TARGET_LABELS | {"le"}
    problems += [f"grouping by {label!r}, a label none of {sorted(metrics)} has" for label in grouping - known]
    if not metrics:
        problems.append("names no metric")
    return metrics, grouping, problems


def test_the_dashboards_metric_table_is_the_gateways() -> None:
    """METRICS and LABEL_VALUES above are what proxy/metrics.py exports and the code's enums hold."""
    exported = {}
    for collector in vars(Metrics()).values():
        if isinstance(collector, MetricWrapperBase):
            (family,) = collector.describe()
            name = family.name + ("_total" if family.type == COUNTER else "")
            exported[name] = (family.type, frozenset(collector._labelnames))  # no public accessor
    assert {name: exported.get(name) for name in METRICS} == METRICS
    assert LABEL_VALUES["outcome"] == {outcome.value for outcome in Outcome} | {"no_answer"}
    assert LABEL_VALUES["priority"] == {priority.name.lower() for priority in Priority}
    assert LABEL_VALUES["cache"] == {status.value for status in CacheStatus} | {"ERROR"}


def test_the_promql_check_has_teeth() -> None:
    assert promql_problems('sum by (action) (rate(cams_proxy_requests_total{cache="HIT"}[5m]))')[2] == []
    assert promql_problems("rate(cams_proxy_requets_total[5m])")[2]
    assert promql_problems('sum(rate(cams_proxy_requests_total{cache="MISSED"}[5m]))')[2]
    assert promql_problems('sum(rate(cams_proxy_upstream_calls_total{tenant="a"}[5m]))')[2]
    assert promql_problems("sum by (tenant) (cams_proxy_queue_depth)")[2]
    assert promql_problems("histogram_quantile(0.9, rate(cams_proxy_queue_depth_bucket[5m]))")[2]
    assert promql_problems("absent(cams_proxy_redis_up)")[2]
    assert promql_problems("up")[2]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


def panels_of(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_dashboard_has_a_prometheus_datasource_variable_used_everywhere(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels_of(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == reference, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == reference for target in panel["targets"]), panel["title"]
    for name, variable in variables.items():
        if variable["type"] == "query":
            assert variable["datasource"] == reference, name
            label_values = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert label_values, f"{name}: {variable['definition']}"
            metric, label = label_values.groups()
            assert label in METRICS[metric_of(metric)[0]][1], name


def test_dashboard_layout_is_sound(dashboard: dict[str, Any]) -> None:
    panels = panels_of(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        ref_ids = [target["refId"] for target in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_queries_name_only_the_gateways_metrics(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    problems: list[str] = []
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            metrics, grouping, found = promql_problems(target["expr"])
            used |= metrics
            problems += [f"{panel['title']}: {problem}" for problem in found]
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            problems += [f"{panel['title']}: legend {{{{{label}}}}} is not kept by the query"
                         for label in legend - grouping]
    assert problems == []
    assert used == set(METRICS), f"metrics no panel shows: {sorted(set(METRICS) - used)}"


def test_dashboard_shows_quota_hit_ratio_queue_wait_and_tenants(dashboard: dict[str, Any]) -> None:
    exprs = {panel["title"]: [target["expr"] for target in panel["targets"]]
             for panel in panels_of(dashboard) if panel["type"] != "row"}

    def panel_with(*needles: str) -> str:
        found = [title for title, queries in exprs.items() if any(all(n in q for n in needles) for q in queries)]
        assert found, f"no panel queries {needles}"
        return found[0]

    # Quota use per action: upstream calls/s over the cap, and the cap drawn next to the calls.
    quota = panel_with("rate(cams_proxy_upstream_calls_total", ") / on (action) max by (action) (cams_proxy_budget_cap")
    assert "sum by (action)" in exprs[quota][0]
    assert any(any(q.startswith("sum by (action) (rate(cams_proxy_upstream_calls_total") for q in queries)
               and any(q.startswith("max by (action) (cams_proxy_budget_cap") for q in queries)
               for queries in exprs.values()), "no panel draws the calls per action next to their cap"
    panel_with('cams_proxy_requests_total{action=~"$action", cache=~"HIT|STALE"}', ") / sum by (action)")
    panel_with("sum by (cache)", "cams_proxy_requests_total")
    panel_with("histogram_quantile(0.5", "cams_proxy_queue_wait_seconds_bucket", "by (le, action, priority)")
    panel_with("histogram_quantile(0.99", "cams_proxy_queue_wait_seconds_bucket", "by (le, action, priority)")
    panel_with("topk(10", "sum by (tenant)", "cams_proxy_requests_total")
    panel_with('outcome="throttled"')
    panel_with("sum by (outcome)", "cams_proxy_upstream_calls_total")
    panel_with("cams_proxy_redis_up")
    panel_with("cams_proxy_l1_entries")
    panel_with("cams_proxy_queue_depth")
