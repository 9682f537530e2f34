"""The house: one package per stage, dependencies running one way, no import circles.

Every import counts, those inside functions too: a circle through a function-level
import is still a circle for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[2] / "jobs"
# A package may import only packages of a lower rank.
RANKS = {
    "platform": 0,
    "data": 1,
    "contracts": 2,
    "lifecycle": 3,
    "scoring": 4,
    "bundles": 4,
    "training": 5,
    "publish": 5,
    "client": 5,
    "monitoring": 6,
    "orchestration": 7,
    "cli": 9,
    "bench": 8,
    "__main__": 10,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(JOBS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in JOBS.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The batchscore modules a file imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("jobs")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jobs"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "jobs"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, set(known)) - {name} for name, path in known.items()}


def test_every_package_is_ranked_and_says_what_it_owns() -> None:
    packages = {path.parent.name for path in JOBS.glob("*/__init__.py")}
    assert packages | {"__main__"} == set(RANKS)
    for package in packages:
        tree = ast.parse((JOBS / package / "__init__.py").read_text())
        assert ast.get_docstring(tree), f"jobs.{package} has no docstring"


def test_dependencies_run_from_orchestration_down_to_the_platform(graph) -> None:
    wrong = sorted(
        f"{importer} imports {imported}"
        for importer, targets in graph.items() for imported in targets
        if package_of(importer) != package_of(imported)
        and package_of(imported) != "jobs"
        and RANKS[package_of(importer)] <= RANKS[package_of(imported)])
    assert wrong == []


def test_there_is_no_import_circle(graph) -> None:
    circles = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


# The nightly's modules in jobs.orchestration, each importing only those before it: the
# run's request and state, the steps, the plans that string the publish steps together,
# how a run ends, monitoring, then the in-process driver and the Airflow tasks.
NIGHTLY = ["run_state", "model_choice", "prepare", "publish_steps", "checks", "plans",
           "outcome", "after_monitor", "nightly", "airflow_tasks"]


def test_the_nightlys_modules_depend_one_way(graph) -> None:
    order = {f"jobs.orchestration.{name}": rank for rank, name in enumerate(NIGHTLY)}
    wrong = sorted(f"{importer} imports {imported}"
                   for importer, rank in order.items() for imported in graph[importer]
                   if imported in order and order[imported] >= rank)
    assert wrong == []


def test_the_nightly_leaves_its_sql_to_the_packages_that_own_the_tables() -> None:
    found = sorted(
        f"jobs.orchestration.{name} line {node.lineno}: .{node.func.attr}()"
        for name in NIGHTLY[:-1]
        for node in ast.walk(ast.parse((JOBS / "orchestration" / f"{name}.py").read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("text", "execute"))
    assert found == []


def test_nothing_is_looked_up_by_name_in_a_modules_globals() -> None:
    found = sorted(
        f"{module} line {node.lineno}"
        for module, path in modules().items() for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "globals")
    assert found == []
