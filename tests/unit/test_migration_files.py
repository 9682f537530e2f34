"""The files in sql/ as yoyo-migrations reads them: each statement whole, nothing lost."""

import re

import pytest
from yoyo.migrations import read_sql_migration

from jobs.platform.db import migrations

COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)


def bare(sql: str) -> str:
    """The SQL without its comments and whitespace."""
    return "".join(COMMENTS.sub("", sql).split())


def statements_of(version: str) -> list[str]:
    path = next(m.path for m in migrations() if m.version == version)
    return read_sql_migration(str(path))[2]


@pytest.mark.parametrize("migration", migrations(), ids=lambda m: m.version)
def test_yoyo_runs_every_statement_as_written(migration) -> None:
    directives, _, statements = read_sql_migration(str(migration.path))
    # No leading comment is taken for a "-- depends:" or "-- transactional:" directive.
    assert directives == {}
    assert bare("".join(statements)) == bare(migration.sql)
    # A comment on its own would be sent alone, and psycopg2 refuses an empty query.
    assert all(bare(statement) for statement in statements)


def test_a_do_block_is_one_statement() -> None:
    blocks = [s for s in statements_of("003_bi") if s.startswith("DO $$")]
    assert len(blocks) == 1
    assert blocks[0].endswith("$$;") and "CREATE ROLE {bi_role} NOLOGIN;" in blocks[0]


def test_comments_between_statements_go_with_the_next_one() -> None:
    assert any(s.startswith("-- At most one version serves at a time.\nCREATE UNIQUE INDEX")
               for s in statements_of("001_core"))
