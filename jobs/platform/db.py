"""Connections to the batchscore database and its migrations."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# Any fixed number; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 7_203_114_001


class MigrationError(RuntimeError):
    """The database's migrations disagree with the files in ``sql/``."""


class LockWaitError(RuntimeError):
    """An advisory lock stayed held by another session for longer than the wait allowed."""


@contextmanager
def session_lock(engine: Engine, key: tuple[int, int], what: str, wait_seconds: float,
                 application_name: str) -> Iterator[None]:
    """Hold the advisory lock ``key`` on a connection of its own for the block.

    Waits at most ``wait_seconds`` for another session to release it, then
    raises :class:`LockWaitError` naming who holds it. The connection is in
    autocommit mode, so holding the lock holds no snapshot; if this process
    dies, the server releases the lock with the connection.
    """
    raw = engine.raw_connection()
    raw.detach()  # autocommit must not leak back into the pool
    connection = raw.dbapi_connection
    connection.autocommit = True
    try:
        with connection.cursor() as cur:
            cur.execute("SET application_name = %s", (application_name[:63],))
            deadline = time.monotonic() + wait_seconds
            delay = 0.05
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
                if cur.fetchone()[0]:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LockWaitError(f"{what} is held by {lock_holder(cur, key)}; gave "
                                          f"up after waiting {wait_seconds:g}s")
                time.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)
        yield
    finally:
        raw.close()


def try_session_lock(engine: Engine, key: tuple[int, int]) -> bool:
    """Whether the advisory lock ``key`` is free (taken and released at once)."""
    with engine.connect() as conn:
        taken = conn.execute(sa.text("SELECT pg_try_advisory_lock(:a, :b)"),
                             {"a": key[0], "b": key[1]}).scalar_one()
        if taken:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"),
                         {"a": key[0], "b": key[1]})
        conn.rollback()
    return bool(taken)


def lock_holder(cur: Any, key: tuple[int, int]) -> str:
    """Who holds the advisory lock ``key``, as pg_stat_activity tells."""
    cur.execute(
        "SELECT a.pid, a.application_name, a.client_addr, a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid"
        " AND l.objid = %s::oid AND l.objsubid = 2", key)
    row = cur.fetchone()
    if row is None:
        return "another session (gone by now)"
    pid, name, addr, since = row
    return (f"server process {pid} ({name or 'no application name'}"
            f"{f' from {addr}' if addr else ''}, connected since {since:%Y-%m-%d %H:%M:%S})")


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
