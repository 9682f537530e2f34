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
    "monitoring": 5,
    "orchestration": 6,
    "cli": 8,
    "bench": 7,
    "__main__": 9,
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
