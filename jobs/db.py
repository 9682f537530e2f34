"""Connections to the batchscore database and its migrations."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# Any fixed number; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 7_203_114_001


class MigrationError(RuntimeError):
    """The database's migrations disagree with the files in ``sql/``."""


@contextmanager
def cursor(engine: Engine) -> Iterator[Any]:
    """A psycopg2 cursor in one transaction: committed on success, rolled back on error.

    For what SQLAlchemy does not wrap: COPY, and identifiers composed with
    ``psycopg2.sql``.
    """
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            yield cur
        raw.commit()
    except BaseException:
        raw.rollback()
        raise
    finally:
        raw.close()


def engine_for(database_url: str) -> Engine:
    """A SQLAlchemy engine (psycopg2 driver) for a ``postgresql://`` URL."""
    url = sa.engine.make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    return sa.create_engine(url, pool_pre_ping=True)


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migration files in apply order (by their numeric prefix)."""
    if not sql_dir.is_dir():
        raise MigrationError(f"migration folder {sql_dir} not found")
    found = sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql"))
    return [Migration(version=path.stem, path=path) for path in found]


def upgrade(engine: Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the migrations not yet applied, all in one transaction.

    Safe to run concurrently and repeatedly: a second run applies nothing.
    Returns the versions applied by this call.
    """
    applied_now: list[str] = []
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS batchscore"))
        conn.execute(sa.text(
            "CREATE TABLE IF NOT EXISTS batchscore.schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        applied = dict(conn.execute(
            sa.text("SELECT version, checksum FROM batchscore.schema_migrations")
        ).all())
        for migration in migrations(sql_dir):
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            logger.info("applying migration %s", migration.version)
            with conn.begin_nested():
                conn.exec_driver_sql(migration.sql)
                conn.execute(
                    sa.text("INSERT INTO batchscore.schema_migrations (version, checksum)"
                            " VALUES (:v, :c)"),
                    {"v": migration.version, "c": migration.checksum},
                )
            applied_now.append(migration.version)
    if applied_now:
        logger.info("%d migration(s) applied", len(applied_now))
    return applied_now


def applied_migrations(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT to_regclass('batchscore.schema_migrations')")
        ).scalar()
        if exists is None:
            return []
        return list(conn.execute(
            sa.text("SELECT version FROM batchscore.schema_migrations ORDER BY version")
        ).scalars())


def ensure_schema(engine: Engine) -> None:
    """Fail with a clear message when ``batchscore db upgrade`` is still owed."""
    pending = {m.version for m in migrations()} - set(applied_migrations(engine))
    if pending:
        raise MigrationError(
            f"the database lacks migrations {sorted(pending)}; run `batchscore db upgrade`"
        )
