"""Every SQL statement in the code and the migrations names its schemas and roles through
template fields, so each deployment's names are composed in and none is ever rewritten."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jobs.platform.db import migrations

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "jobs").rglob("*.py"), *(REPO / "dags").rglob("*.py")])
# What a statement that names the default deployment's schemas or roles itself looks like.
DEFAULT_NAMES = re.compile(
    r"""(?<![\w."$])"?(batchscore|bi)"?\.[A-Za-z_"%{]"""
    r"""|(?i:\bSCHEMA\s+(IF\s+(NOT\s+)?EXISTS\s+)?)"?(batchscore|bi)\b"""
    r"""|\bbatchscore_(owner|writer|bi)\b|'(batchscore|bi)'""")
SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|COPY|CREATE|ALTER|DROP|GRANT|REVOKE"
                       r"|TRUNCATE|LOCK|SET ROLE|FROM|JOIN)\b")
COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)


def docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def statements_naming_defaults(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in skip and SQL_WORDS.search(node.value)
                and DEFAULT_NAMES.search(node.value)):
            found.append(f"{path.name}:{node.lineno}: {node.value[:80]!r}")
    return found


def test_the_guard_sees_a_statement_that_names_a_default_schema(tmp_path: Path) -> None:
    for text in ('"SELECT run_id FROM batchscore.runs"', '"GRANT USAGE ON SCHEMA bi TO x"',
                 '"SET ROLE batchscore_owner"', """"WHERE nspname = 'bi' AND 1 = 1 FROM x" """):
        source = tmp_path / "module.py"
        source.write_text(f"QUERY = {text}\n")
        assert statements_naming_defaults(source), text


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_code_names_schemas_and_roles_by_template_fields(source: Path) -> None:
    assert statements_naming_defaults(source) == []


@pytest.mark.parametrize("migration", migrations(), ids=lambda m: m.version)
def test_migrations_name_schemas_and_roles_by_template_fields(migration) -> None:
    assert DEFAULT_NAMES.findall(COMMENTS.sub("", migration.sql)) == []
