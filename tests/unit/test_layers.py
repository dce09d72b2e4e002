"""The house rules of `proxy/`, read from the import statements of every module (pure: no module is imported).

The layers, lowest first, are the ones `docs/architecture.md` draws: the pure core, the process foundation, the
I/O edges, the read-through flow, the composition root, the web layer and the entry points; the simulator and
the network stand-in are products of their own beside them. A module may import its own layer and the layers
below it, never one above; a new module must be given a layer here (and a row in the architecture's table).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROXY = ROOT / "proxy"

CORE, FOUNDATION, EDGES, FLOW, COMPOSITION, WEB, ENTRY, PRODUCT = range(8)
LAYER_NAMES = ["core", "foundation", "edges", "flow", "composition", "web", "entry", "product"]

#: Pure decisions over values: no clock, no event loop, no socket, no logging.
PURE_CORE = {
    "proxy.actions", "proxy.keys", "proxy.freshness", "proxy.validation", "proxy.signing", "proxy.bounded",
    "proxy.tags", "proxy.secret", "proxy.errors", "proxy.cache.base", "proxy.upstream.errors",
    "proxy.admission.spacing", "proxy.admission.fair", "proxy.admission.margin", "proxy.admission.aimd",
    "proxy.admission.limits", "proxy.admission.backlog", "proxy.admission.demand", "proxy.admission.send_pacing",
    "proxy.admission.shadow", "proxy.admission.safe_capacity", "proxy.replica.clock", "proxy.replica.breaker",
}
FOUNDATION_MODULES = {
    "proxy", "proxy.logs", "proxy.access_log", "proxy.metrics", "proxy.tasks", "proxy.loops", "proxy.runner",
    "proxy.options", "proxy.settings",
}
FLOW_MODULES = {
    "proxy.readthrough", "proxy.fill", "proxy.flights", "proxy.revalidation", "proxy.answer", "proxy.coalesce",
    "proxy.refresh", "proxy.purge", "proxy.replica.flight",
}
ENTRY_MODULES = {"proxy.__main__", "proxy.operator", "proxy.reference"}
EDGE_PACKAGES = ("proxy.upstream.", "proxy.cache.", "proxy.replica.", "proxy.admission.")
EDGE_MODULES = {"proxy.cache", "proxy.upstream", "proxy.replica", "proxy.admission", "proxy.nonces",
                "proxy.tenants", "proxy.credentials"}

#: What the simulator and the network stand-in may use of the gateway's house: nothing that sends, caches,
#: admits or serves a gateway call.
PRODUCT_KIT = {"proxy.actions", "proxy.logs", "proxy.options", "proxy.runner", "proxy.secret", "proxy.signing",
               "proxy.nonces", "proxy.replica.redis_clients"}
#: Libraries that mean I/O, a clock or process state; the pure core imports none of them.
IMPURE_LIBRARIES = {"asyncio", "aiohttp", "redis", "structlog", "prometheus_client", "time", "os", "socket",
                    "threading", "logging", "subprocess", "uvloop", "h11", "ssl"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PROXY.rglob("*.py"))}


def layer_of(module: str) -> int:
    if module.startswith(("proxy.simulator", "proxy.netem")):
        return PRODUCT
    if module in PURE_CORE:
        return CORE
    if module in FOUNDATION_MODULES:
        return FOUNDATION
    if module in FLOW_MODULES:
        return FLOW
    if module in ENTRY_MODULES:
        return ENTRY
    if module.startswith("proxy.gateway"):
        return COMPOSITION
    if module.startswith("proxy.web"):
        return WEB
    if module in EDGE_MODULES or module.startswith(EDGE_PACKAGES):
        return EDGES
    raise LookupError(module)


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """Every name `module` imports (absolute, the imported module itself and each ``from`` name), with its line."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def internal_imports(module: str) -> set[str]:
    return {name for name, _ in imports_of(module) if name in MODULES and name != module}


GRAPH = {module: internal_imports(module) for module in MODULES}


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for module in MODULES:
        try:
            layer_of(module)
        except LookupError:
            unplaced.append(module)
    assert not unplaced, f"give these a layer in tests/unit/test_layers.py and docs/architecture.md: {unplaced}"


def test_the_layer_table_names_only_modules_that_exist() -> None:
    named = PURE_CORE | FOUNDATION_MODULES | FLOW_MODULES | ENTRY_MODULES | EDGE_MODULES | PRODUCT_KIT
    assert named <= set(MODULES), sorted(named - set(MODULES))


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({LAYER_NAMES[layer_of(module)]}) -> {target} ({LAYER_NAMES[layer_of(target)]})"
        for module, targets in graph.items() for target in sorted(targets)
        if layer_of(module) != PRODUCT and layer_of(target) != PRODUCT and layer_of(target) > layer_of(module)
    ]


def import_circles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    circles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target == "proxy":
                continue  # the package's own __init__ holds only the version
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, path)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return circles


def test_no_import_goes_up_a_layer() -> None:
    assert not upward_arrows(GRAPH), upward_arrows(GRAPH)


def test_there_is_no_import_circle() -> None:
    assert not import_circles(GRAPH), import_circles(GRAPH)


def test_the_checks_see_a_planted_upward_arrow_and_a_planted_circle() -> None:
    upward = {module: set(targets) for module, targets in GRAPH.items()}
    upward["proxy.fill"].add("proxy.web.app")
    assert upward_arrows(upward) == ["proxy.fill (flow) -> proxy.web.app (web)"]
    circular = {module: set(targets) for module, targets in GRAPH.items()}
    circular["proxy.keys"].add("proxy.validation")
    circular["proxy.validation"].add("proxy.keys")
    assert upward_arrows(circular) == []
    assert import_circles(circular) in (["proxy.keys -> proxy.validation -> proxy.keys"],
                                        ["proxy.validation -> proxy.keys -> proxy.validation"])


@pytest.mark.parametrize("module", sorted(PURE_CORE))
def test_the_pure_core_does_no_io(module: str) -> None:
    impure = sorted({f"{name} (line {line})" for name, line in imports_of(module)
                     if name.split(".")[0] in IMPURE_LIBRARIES})
    inside = sorted(target for target in GRAPH[module] if target not in PURE_CORE)
    assert not impure and not inside, f"{module} imports {impure + inside}"


def test_the_simulator_and_the_stand_in_use_only_the_shared_kit() -> None:
    borrowed = [
        f"{module} -> {target}" for module, targets in GRAPH.items() if layer_of(module) == PRODUCT
        for target in sorted(targets) if layer_of(target) != PRODUCT and target not in PRODUCT_KIT
    ]
    assert not borrowed, borrowed


def test_only_the_web_layer_and_the_cli_know_the_composition_root_and_only_the_cli_knows_the_web() -> None:
    knows_root = sorted(module for module, targets in GRAPH.items()
                        if any(target.startswith("proxy.gateway") for target in targets)
                        and not module.startswith(("proxy.gateway", "proxy.web")) and module != "proxy.__main__")
    knows_web = sorted(module for module, targets in GRAPH.items()
                       if any(target.startswith("proxy.web") for target in targets)
                       and not module.startswith("proxy.web") and module != "proxy.__main__")
    assert not knows_root and not knows_web, (knows_root, knows_web)


def test_web_modules_do_not_import_each_other_in_a_circle_through_the_app() -> None:
    """The app module wires the routes; no route module imports it back (app keys live in `proxy.web.keys`)."""
    back = sorted(module for module, targets in GRAPH.items()
                  if module.startswith("proxy.web.") and module != "proxy.web.app" and "proxy.web.app" in targets)
    assert not back, back
