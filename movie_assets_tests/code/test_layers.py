"""The three layers the folders show, and imports that only point down.

Every import counts, the lazy ones inside functions too. The checker is tested on a
made-up graph as well, so a layer violation is shown to fail, not only the real tree
to pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("movie_assets", "movie_platform")

# Floors of the code location, bottom first. A module imports floors below its own; within a
# floor only its own folder (resources may use resources, domain may use domain). Asset
# modules name upstream assets by key, so they never import each other.
FLOORS: list[tuple[str, ...]] = [
    ("movie_assets.domain", "movie_assets.settings", "movie_assets.object_layout", "movie_assets.dagster_private"),
    ("movie_assets.partitions", "movie_assets.feature_definitions"),
    ("movie_assets.resources",),
    ("movie_assets.checks",),
    ("movie_assets.assets", "movie_assets.jobs", "movie_assets.automation", "movie_assets.airflow_bridge"),
    ("movie_assets.definitions",),
    ("movie_assets",),  # the package: `movie_assets.defs`, loaded lazily from definitions
    ("movie_platform",),
]
NO_IMPORTS_WITHIN = ("movie_assets.assets",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` names in the file (top level or inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from movie_assets import notebook` imports a module, not a name
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Our modules and the modules each one imports (ours and third-party)."""
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    ours = {module_name(p) for p in files}
    graph = {}
    for path in files:
        graph[module_name(path)] = {
            name for name in imports_of(path) if name in ours or name.split(".")[0] not in PACKAGES
        }
    return graph


def floor_of(module: str) -> tuple[int, str]:
    """(floor number, the folder/module prefix that placed it there)."""
    best = None
    for number, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (number, prefix)
    if best is None:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS")
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up or sideways, and imports of movie_platform from the code location."""
    problems = []
    for module, imported in sorted(graph.items()):
        floor, room = floor_of(module)
        for target in sorted(t for t in imported if t in graph):
            target_floor, target_room = floor_of(target)
            if target_floor < floor:
                continue
            if target_floor == floor and target_room == room and room not in NO_IMPORTS_WITHIN:
                continue
            problems.append(f"{module} (floor {floor}) imports {target} (floor {target_floor})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among our modules (depth-first search)."""
    found, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(t for t in graph[module] if t in graph):
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_imports_only_point_down():
    assert layer_violations(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_domain_imports_no_dagster_and_nothing_of_the_code_location():
    graph = import_graph()
    domain = {m: imported for m, imported in graph.items() if m.startswith("movie_assets.domain")}
    assert len(domain) >= 7
    for module, imported in domain.items():
        assert not {i for i in imported if i.split(".")[0].startswith("dagster")}, module
        ours = {i for i in imported if i.split(".")[0] in PACKAGES}
        assert all(i.startswith("movie_assets.domain") for i in ours), (module, ours)


# Each library's private API (names with a leading underscore) is imported in one guarded module only.
PRIVATE_API_HOMES = {"dagster": "movie_assets.dagster_private", "feast": "movie_assets.resources.feast_private"}


def private_imports(graph: dict[str, set[str]]) -> list[str]:
    """(module, private name) pairs outside each library's one guarded module."""
    return sorted(
        f"{module} imports {name}"
        for module, imported in graph.items()
        for name in imported
        if name.split(".")[0] in PRIVATE_API_HOMES
        and any(part.startswith("_") for part in name.split(".")[1:])
        and module != PRIVATE_API_HOMES[name.split(".")[0]]
    )


def test_private_dagster_and_feast_api_is_imported_in_one_guarded_module_each():
    assert private_imports(import_graph()) == []


def test_the_private_import_checker_catches_one():
    graph = {"movie_assets.automation.executor": {"dagster._core.launcher", "dagster"}}
    assert private_imports(graph) == ["movie_assets.automation.executor imports dagster._core.launcher"]


def test_dagster_private_refuses_another_dagster_version():
    from movie_assets.dagster_private import DAGSTER_PRIVATE_VERSION, DagsterPrivateApiError, check_dagster_version

    check_dagster_version()  # the installed one: the pin
    with pytest.raises(DagsterPrivateApiError, match="dagster_private.py") as refused:
        check_dagster_version("1.14.0")
    assert DAGSTER_PRIVATE_VERSION in str(refused.value) and "1.14.0" in str(refused.value)


def test_code_location_never_imports_movie_platform():
    graph = import_graph()
    for module, imported in graph.items():
        if module.startswith("movie_assets"):
            assert not {i for i in imported if i.split(".")[0] == "movie_platform"}, module


@pytest.mark.parametrize(
    "graph,expected",
    [
        # an arrow up: the domain reaching into a resource
        (
            {
                "movie_assets.domain.cleaning": {"movie_assets.resources.postgres"},
                "movie_assets.resources.postgres": set(),
            },
            "movie_assets.domain.cleaning (floor 0) imports movie_assets.resources.postgres (floor 2)",
        ),
        # an asset module importing another asset module
        (
            {"movie_assets.assets.training": {"movie_assets.assets.features"}, "movie_assets.assets.features": set()},
            "movie_assets.assets.training (floor 4) imports movie_assets.assets.features (floor 4)",
        ),
        # the code location importing the laptop tooling
        (
            {"movie_assets.resources.feast": {"movie_platform.local_stack"}, "movie_platform.local_stack": set()},
            "movie_assets.resources.feast (floor 2) imports movie_platform.local_stack (floor 7)",
        ),
    ],
)
def test_the_checker_catches_a_violation(graph, expected):
    assert layer_violations(graph) == [expected]


def test_the_cycle_finder_catches_a_cycle():
    graph = {
        "movie_assets.settings": {"movie_assets.resources.object_store"},
        "movie_assets.resources.object_store": {"movie_assets.settings"},
    }
    assert cycles(graph) == [
        ["movie_assets.resources.object_store", "movie_assets.settings", "movie_assets.resources.object_store"]
    ]
