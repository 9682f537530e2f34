"""Connections to the batchscore database, advisory locks, and the migrations in ``sql/``.

yoyo-migrations reads and applies the migration files; :func:`upgrade` adds
what batchscore needs around it: one transaction for all, an advisory lock,
checksums of the applied files, and taking over databases migrated before.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs.platform.names import Names

if TYPE_CHECKING:
    from psycopg2.sql import Composable, Composed

    # yoyo is imported where it is used: importing it takes tens of milliseconds,
    # which the modules that only connect need not pay.
    from yoyo.backends import DatabaseBackend
    from yoyo.migrations import Migration as YoyoMigration
    from yoyo.migrations import MigrationList

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# Any fixed number; it only has to be the same in every process that migrates.
# The hand-written runner before yoyo took it too (as a transaction lock), so a
# process of an older release never migrates at the same time as this one.
MIGRATION_LOCK_ID = 7_203_114_001
# The checksum of every applied migration file, written by batchscore (yoyo keeps none).
CHECKSUMS_TABLE = "{schema}.schema_migrations"
# The sha256 of each migration as the releases before the migrations were templates
# wrote it (the default names in the text): a database they migrated recorded these.
CHECKSUMS_BEFORE_TEMPLATES = SQL_DIR / "checksums-before-templates.json"
# The migration that creates the roles: every migration after it runs as the owner
# role, so what it creates is the owner's and gets the owner's default privileges.
ROLES_MIGRATION = "009_roles"
# SQL comments, to tell a statement from a comment on its own.
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)


class MigrationError(RuntimeError):
    """The database's migrations disagree with the files in ``sql/``."""


class AuthenticationError(RuntimeError):
    """PostgreSQL refused a login: no password was given, or a wrong one."""


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
    with own_autocommit_connection(engine) as connection:
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
        yield  # the lock is held until the connection closes


@contextmanager
def own_autocommit_connection(engine: Engine) -> Iterator[Any]:
    """A psycopg2 connection of its own to ``engine``'s database, in autocommit mode, closed
    (releasing any session lock it holds) when the block ends. It never goes back to the
    pool, where its autocommit mode would leak into other work."""
    raw = engine.raw_connection()
    raw.detach()
    connection = raw.dbapi_connection
    connection.autocommit = True
    try:
        yield connection
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


def engine_for(database_url: str, names: Names | None = None) -> Engine:
    """A SQLAlchemy engine (psycopg2 driver) for a ``postgresql://`` URL.

    The engine carries ``names`` (the default ones unless given), which
    :func:`names_of` gives back, and so do its psycopg2 connections:
    :func:`statement` and :func:`composed` compose them into SQL.
    A login the server refuses for its password raises
    :class:`AuthenticationError`, naming the role, the server and what to do.
    """
    names = names or Names()
    url = sa.engine.make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(url, pool_pre_ping=True,
                              connect_args={"connection_factory": _connection_class(names)},
                              execution_options={"batchscore_names": names})
    sa.event.listen(engine, "do_connect", _connect_explaining_refusals)
    return engine


def names_of(engine: Engine) -> Names:
    """The deployment names ``engine`` was made for (:func:`engine_for`)."""
    return engine.get_execution_options().get("batchscore_names") or Names()


def composed(cur: Any, template: str, **more: Composable) -> Composed:
    """``template`` composed with the names of the deployment whose engine made ``cur``'s
    connection (:meth:`Names.compose`), for a psycopg2 cursor's ``execute`` or COPY."""
    names = getattr(cur.connection, "deployment_names", None)
    if names is None:
        raise TypeError("this psycopg2 connection was not made by engine_for(), so it "
                        "belongs to no deployment; compose with Names.compose instead")
    return names.compose(template, **more)


def _connection_class(names: Names) -> type:
    """A psycopg2 connection class that knows the deployment it connects for."""
    import psycopg2.extensions

    return type(f"DeploymentConnection[{names.schema}]", (psycopg2.extensions.connection,),
                {"deployment_names": names})


def statement(conn: sa.Connection, template: str, **more: Composable) -> sa.TextClause:
    """``template`` composed with the names of ``conn``'s deployment (:meth:`Names.compose`),
    as a SQLAlchemy text clause: ``:name`` parameters bind as in ``sa.text``."""
    composed = names_of(conn.engine).compose(template, **more)
    return sa.text(composed.as_string(conn.connection.dbapi_connection))


def _connect_explaining_refusals(dialect: Any, connection_record: Any, cargs: Any,
                                 cparams: dict[str, Any]) -> Any:
    dbapi = dialect.loaded_dbapi
    try:
        return dbapi.connect(*cargs, **cparams)
    except dbapi.OperationalError as exc:
        refused = login_refusal(str(exc), cparams)
        if refused is None:
            raise
        raise refused from None


def login_refusal(message: str, params: dict[str, Any]) -> AuthenticationError | None:
    """The error to raise for a connection error ``message`` when the server refused the
    password of the login in ``params`` (user, host, port); None for any other error."""
    if "no password supplied" in message:
        what = "asks for a password and none was given"
    elif "password authentication failed" in message:
        what = "refused its password"
    else:
        return None
    role = params.get("user") or "(no role given)"
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    return AuthenticationError(
        f"PostgreSQL at {where} {what} for role {role}. Put the role's password in its URL: "
        f"for the embedded server `batchscore db url --role owner|writer|bi` prints each "
        f"(passwords are kept in BATCHSCORE_HOME/secrets); for a configured server, set "
        f"BATCHSCORE_DATABASE_URL (owner), BATCHSCORE_WRITER_DATABASE_URL or "
        f"BATCHSCORE_BI_DATABASE_URL, or the Airflow connection batchscore_postgres")


def set_logins(engine: Engine, passwords: dict[str, str]) -> None:
    """Let each role of ``passwords`` log in with its password.

    The server is sent each password's SCRAM verifier, never the password itself,
    so no statement log can show it. Done under the migration lock: two sessions
    altering one role at once would fail with "tuple concurrently updated".
    """
    from psycopg2 import sql
    from psycopg2.extensions import encrypt_password

    with _migration_lock(engine), cursor(engine) as cur:
        for role, password in passwords.items():
            verifier = encrypt_password(password, role, cur.connection, "scram-sha-256")
            cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier)))




@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the file name without extension) and path."""

    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        """The sha256 of the file's bytes, as ``batchscore.schema_migrations`` records it."""
        return _file_checksum(self.path)


def _file_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(sql_dir: Path) -> MigrationList:
    """yoyo's list of the migrations in ``sql_dir``, in file-name order: read again only
    when a file in it is added, removed or changed (yoyo parses each file's SQL, which
    takes longer than applying it to an empty database)."""
    if not sql_dir.is_dir():
        raise MigrationError(f"migration folder {sql_dir} not found")
    contents = tuple(sorted((path.name, path.read_bytes()) for path in sql_dir.iterdir()
                            if path.is_file()))
    return _read_folder(sql_dir, contents)


@functools.lru_cache(maxsize=16)
def _read_folder(sql_dir: Path, contents: tuple[tuple[str, bytes], ...]) -> MigrationList:
    from yoyo import read_migrations
    from yoyo.exceptions import MigrationConflict

    try:
        # yoyo takes a glob pattern; escaped, a folder with [ or * in its name is itself.
        found = read_migrations(glob.escape(str(sql_dir)))
    except MigrationConflict as exc:
        raise MigrationError(f"two files in {sql_dir} are both migration {exc}") from exc
    if found.post_apply:
        # yoyo would run these after every upgrade; upgrade() does not, so say so.
        raise MigrationError(f"post-apply hooks are not supported: "
                             f"{sorted(m.path for m in found.post_apply)}")
    return found


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migrations in ``sql_dir``, in file-name order, as yoyo reads that folder.

    Every ``.sql`` file there is one (a ``.py`` file is refused when applied);
    ``NAME.rollback.sql`` files are the rollbacks of ``NAME.sql``, not migrations. Raises
    :class:`MigrationError` when the folder is missing.
    """
    return [Migration(version=m.id, path=Path(m.path)) for m in _read(sql_dir)]


def upgrade(engine: Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply the migrations in ``sql_dir`` not applied yet; return their versions.

    The versions come in the order applied, e.g. ``["007_publish_protocol"]``;
    ``[]`` when there was nothing to do. All of them are applied in one
    transaction, so a migration that fails leaves the database as it was and
    raises :class:`MigrationError` naming it; so does an applied migration
    whose file has changed since. Safe to run again and from several processes
    at once: they take turns, and the later ones find nothing to do.

    Each file is a template (:meth:`Names.compose`): its statements are
    composed with ``engine``'s deployment names before they run. yoyo-migrations
    splits the files into statements and keeps its record of what is applied in
    the deployment's core schema (``batchscore`` by default: ``_yoyo_migration``,
    ``_yoyo_log``, ``_yoyo_version``, ``yoyo_lock``); ``schema_migrations`` there
    keeps each applied file's checksum. A
    database migrated before yoyo kept that record has only the checksums: its
    migrations are verified against them and marked applied, not run again.
    """
    source = _read(sql_dir)
    with _migration_lock(engine):
        with engine.begin() as conn:
            # yoyo connects with search_path set to this schema, so it must exist
            # first; and under the lock, as CREATE SCHEMA IF NOT EXISTS fails when
            # another session creates the schema at the same moment.
            conn.execute(statement(conn, "CREATE SCHEMA IF NOT EXISTS {schema}"))
        backend = _yoyo_backend(engine)
        try:
            applied_now = _apply(backend, source, names_of(engine))
        finally:
            backend.connection.close()
    if applied_now:
        logger.info("%d migration(s) applied", len(applied_now))
    return applied_now


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the advisory lock ``MIGRATION_LOCK_ID`` for the block, waiting as long as it takes.

    yoyo's own lock is a row in its ``yoyo_lock`` table, which a process killed
    while holding it leaves behind (the next run then fails until someone runs
    ``yoyo break-lock``); the server releases an advisory lock with the
    connection. The lock is taken on a connection of its own, as yoyo opens its
    own and commits on it as it goes.
    """
    with own_autocommit_connection(engine) as connection:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        yield


def _yoyo_backend(engine: Engine) -> DatabaseBackend:
    """A yoyo backend on a connection of its own to ``engine``'s database."""
    from yoyo import get_backend

    names = names_of(engine)
    url = engine.url.set(drivername="postgresql")
    # yoyo's PostgreSQL backend sets search_path to the URL's schema, where it
    # then keeps its tables: keep them beside ours, out of the bi contract. The
    # migrations name their schemas, so the search path does not move them.
    query = {"schema": names.schema}
    if "application_name" not in url.query:
        query["application_name"] = "batchscore db upgrade"
    backend = get_backend(url.update_query_dict(query).render_as_string(hide_password=False))
    return backend


def _apply(backend: DatabaseBackend, source: MigrationList, names: Names) -> list[str]:
    """Verify, mark and apply under the migration lock; the versions applied."""
    from yoyo.exceptions import BadMigration

    def text_of(template: str) -> str:
        return names.compose(template).as_string(backend.connection)

    accepted_before = json.loads(CHECKSUMS_BEFORE_TEMPLATES.read_text())

    try:
        # Also creates or upgrades yoyo's own tables, in a transaction of its own.
        pending = list(backend.to_apply(source))
    except BadMigration as exc:
        raise MigrationError(f"yoyo cannot read a migration: {exc}") from exc
    pending_ids = {m.id for m in pending}
    applied_now: list[str] = []
    # One transaction for all: yoyo's own apply_migrations() commits each
    # migration, then marks it in another transaction, which a crash between
    # the two turns into a migration run twice.
    with backend.transaction():
        backend.execute(text_of(
            f"CREATE TABLE IF NOT EXISTS {CHECKSUMS_TABLE} ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        recorded = dict(backend.execute(text_of(
            f"SELECT version, checksum FROM {CHECKSUMS_TABLE}"
        )).fetchall())
        for migration in source:
            if migration.id in recorded:
                if recorded[migration.id] not in _accepted_checksums(migration,
                                                                     accepted_before):
                    raise MigrationError(
                        f"migration {migration.id} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                if migration.id in pending_ids:
                    logger.info("migration %s was applied before yoyo kept track; "
                                "marking it applied", migration.id)
                    backend.mark_one(migration)
            elif migration.id not in pending_ids:
                raise MigrationError(
                    f"migration {migration.id} is marked applied in yoyo's table but its "
                    f"checksum is not in {names.schema}.schema_migrations; was it applied "
                    "with the yoyo command? Record its checksum there, or unmark it, and "
                    "try again"
                )
        for migration in pending:
            if migration.id in recorded:
                continue
            _check_applicable(migration)
            logger.info("applying migration %s", migration.id)
            as_owner = migration.id > ROLES_MIGRATION
            try:
                if as_owner:
                    backend.execute(text_of("SET ROLE {owner}"))
                _apply_statements(backend, migration, names)
                if as_owner:
                    backend.execute("RESET ROLE")
            except backend.DatabaseError as exc:
                raise MigrationError(f"migration {migration.id} failed, so this upgrade "
                                     f"applied none: {exc}") from exc
            backend.log_migration(migration, "apply")
            backend.mark_one(migration, log=False)
            backend.execute(
                text_of(f"INSERT INTO {CHECKSUMS_TABLE} (version, checksum)"
                        " VALUES (:version, :checksum)"),
                {"version": migration.id, "checksum": _file_checksum(Path(migration.path))},
            )
            applied_now.append(migration.id)
    return applied_now


def _accepted_checksums(migration: YoyoMigration, before: dict[str, str]) -> set[str]:
    """The checksums a database may have recorded for ``migration``: its file's, and the
    one its text had before its names were template fields (``before``, by version, from
    :data:`CHECKSUMS_BEFORE_TEMPLATES`)."""
    path = Path(migration.path)
    accepted = {_file_checksum(path)}
    if path.parent == SQL_DIR and migration.id in before:
        accepted.add(before[migration.id])
    return accepted


def _apply_statements(backend: DatabaseBackend, migration: YoyoMigration,
                      names: Names) -> None:
    """Run ``migration``'s statements, each composed with ``names`` (a file is a template:
    :meth:`Names.compose`), in the upgrade's transaction."""
    statements = _statements(migration.path)
    with backend.connection.cursor() as cur:
        for text in statements:
            try:
                cur.execute(names.compose(text))
            except (KeyError, IndexError, ValueError) as exc:
                raise MigrationError(
                    f"migration {migration.id} is not a valid template ({exc!r}): its "
                    "names are fields such as {schema}, and a literal brace is doubled"
                ) from exc


def _statements(path: str) -> tuple[str, ...]:
    """The statements of the SQL migration at ``path``, as yoyo splits them; split once
    per text (yoyo's splitting is most of an upgrade's time)."""
    return _split(path, Path(path).read_text())


@functools.lru_cache(maxsize=256)
def _split(path: str, text: str) -> tuple[str, ...]:
    from yoyo.migrations import read_sql_migration

    _, _, statements = read_sql_migration(path)
    return tuple(statements)


def _check_applicable(migration: YoyoMigration) -> None:
    """Refuse, before it runs, a migration yoyo would apply wrongly inside one transaction."""
    migration.load()  # reads its directives; already done when yoyo sorted the pending ones
    if not migration.use_transactions:
        # yoyo runs such a migration after a ROLLBACK, which would undo this upgrade's
        # earlier migrations and leave them marked applied.
        raise MigrationError(f"migration {migration.id} asks to run outside a transaction "
                             "(-- transactional: false), which upgrade() does not support")
    if not migration.is_raw_sql():
        raise MigrationError(f"migration {migration.id} is a Python file; batchscore's "
                             "migrations are SQL templates (.sql), so that every "
                             "deployment's names can be composed into them")
    statements = _statements(migration.path)
    if any(not _COMMENTS.sub("", statement).strip() for statement in statements):
        # yoyo sends a comment after the last statement on its own, and psycopg2
        # refuses that as "can't execute an empty query".
        raise MigrationError(f"migration {migration.id} ends with a comment after its "
                             "last statement; move the comment above a statement")


def applied_migrations(engine: Engine) -> list[str]:
    """The versions applied to the database, in version order; none on an empty database.

    Read from ``batchscore.schema_migrations``, which databases migrated before
    yoyo was used have too.
    """
    with engine.connect() as conn:
        exists = conn.execute(
            statement(conn, f"SELECT to_regclass('{CHECKSUMS_TABLE}')")
        ).scalar()
        if exists is None:
            return []
        return list(conn.execute(
            statement(conn, f"SELECT version FROM {CHECKSUMS_TABLE} ORDER BY version")
        ).scalars())


def ensure_schema(engine: Engine) -> None:
    """Fail with a clear message when ``batchscore db upgrade`` is still owed."""
    pending = {m.version for m in migrations()} - set(applied_migrations(engine))
    if pending:
        raise MigrationError(
            f"the database lacks migrations {sorted(pending)}; run `batchscore db upgrade`"
        )
