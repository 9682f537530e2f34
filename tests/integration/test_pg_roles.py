"""Least privilege in PostgreSQL: what each role may do, refused by the server otherwise.

Runs on the embedded server (PostgreSQL 18) and on Debian's PostgreSQL 15, which the
session starts (``system_servers`` in tests/conftest.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg2
import pytest
import redis
import sqlalchemy as sa

from jobs.cli import main
from jobs.lifecycle import registry
from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration.rollback import roll_back
from jobs.platform import services
from jobs.platform.config import ConfigError, Settings
from jobs.platform.db import AuthenticationError, engine_for, set_logins, upgrade
from jobs.platform.redis_client import connect
from jobs.platform.secrets import secret
from jobs.platform.services.postgres import SUPERUSER, EmbeddedPostgres
from jobs.publish.postgres import partition_name
from jobs.publish.reconcile import disagreement, reconcile
from tests.conftest import reset_database
from tests.integration.test_publish import KEYS, publish_day

DENIED = "42501"  # insufficient_privilege
SYSTEM_DATABASE = "batchscore_roles_test"


@dataclass(frozen=True)
class Server:
    """A migrated database and the URL each role logs in with."""

    admin: sa.engine.Engine
    urls: dict[str, str]
    where: str = "embedded"


def add_other_schema(admin: sa.engine.Engine) -> None:
    """A schema none of batchscore's roles was given anything in."""
    with admin.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS other CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA other"))
        conn.execute(sa.text("CREATE TABLE other.notes (n int)"))
        conn.execute(sa.text("INSERT INTO other.notes VALUES (1)"))


@contextmanager
def migrated(where: str, settings: Settings, endpoints: services.Endpoints,
             system_url: str | None = None) -> Iterator[Server]:
    """A freshly migrated database on the embedded or the system server (its superuser's
    ``system_url``), with schema other."""
    if where == "embedded":
        admin = engine_for(endpoints.database_url)
        reset_database(admin)
        upgrade(admin)
        urls = {role: services.database_url(settings, role) for role in services.ROLES}
        add_other_schema(admin)
        try:
            yield Server(admin, urls)
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA IF EXISTS other CASCADE"))
            admin.dispose()
        return
    assert system_url is not None
    root = psycopg2.connect(system_url)
    root.autocommit = True
    with root.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {SYSTEM_DATABASE} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {SYSTEM_DATABASE}")
    url = sa.engine.make_url(system_url).set(database=SYSTEM_DATABASE)
    admin = engine_for(url.render_as_string(hide_password=False))
    try:
        upgrade(admin)
        names = [services.role_name(settings, role) for role in services.ROLES]
        passwords = {name: secret(settings.home, services.postgres_secret(name))
                     for name in names}
        set_logins(admin, passwords)
        urls = {role: url.set(username=services.role_name(settings, role),
                              password=passwords[services.role_name(settings, role)])
                .render_as_string(hide_password=False) for role in services.ROLES}
        add_other_schema(admin)
        yield Server(admin, urls, where)
    finally:
        admin.dispose()
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {SYSTEM_DATABASE} WITH (FORCE)")
        root.close()


def system_url(request: pytest.FixtureRequest) -> str | None:
    """For the ``system`` variant, the superuser's URL of Debian's PostgreSQL."""
    if request.param != "system":
        return None
    return request.getfixturevalue("system_servers").postgres_url


@pytest.fixture(params=["embedded", "system"])
def server(request, settings, endpoints) -> Iterator[Server]:
    """A fresh database for each test."""
    with migrated(request.param, settings, endpoints, system_url(request)) as fresh:
        yield fresh


@pytest.fixture(scope="module", params=["embedded", "system"])
def matrix_server(request, settings, endpoints) -> Iterator[Server]:
    """One database for the whole matrix: every case is rolled back."""
    with migrated(request.param, settings, endpoints, system_url(request)) as fresh:
        yield fresh


# (statements run first, as the role; the statement tried; the SQLSTATE expected, or
# None when the role may do it). Each case runs in a transaction that is rolled back.
WRITER_CASES = [
    ([], "SELECT count(*) FROM batchscore.interactions", None),
    ([], "INSERT INTO batchscore.interactions (user_id, item_id, rating, event_at)"
         " VALUES (1, 2, 1.0, now())", None),
    ([], "UPDATE batchscore.runs SET error = 'x' WHERE false", None),
    ([], "DELETE FROM batchscore.prediction_lists WHERE false", None),
    ([], "TRUNCATE batchscore.interactions", None),
    ([], "TRUNCATE batchscore.items", None),
    ([], "SELECT count(*) FROM bi.recommendations", None),
    ([], "SELECT count(*) FROM bi.run_metrics", None),
    ([], "SELECT version FROM batchscore.schema_migrations", None),
    ([], "CREATE TEMPORARY TABLE scratch (n int)", None),
    # The publisher's partition steps, through the owner's functions.
    (["SELECT batchscore.create_version_table(900001)",
      "INSERT INTO batchscore.prediction_lists_p900001 VALUES (900001, 1, '{2}', '{0.5}')",
      "SELECT batchscore.index_version_table(900001)"],
     "SELECT batchscore.attach_version_table(900001)", None),
    (["SELECT batchscore.create_version_table(900001)",
      "SELECT batchscore.attach_version_table(900001)"],
     "SELECT batchscore.drop_version_table(900001)", None),
    # What it may not.
    ([], "TRUNCATE batchscore.runs", DENIED),
    ([], "INSERT INTO batchscore.schema_migrations VALUES ('999_x', 'x')", DENIED),
    ([], "DELETE FROM batchscore._yoyo_migration", DENIED),
    ([], "CREATE TABLE batchscore.mine (n int)", DENIED),
    ([], "CREATE TABLE public.mine (n int)", DENIED),
    ([], "CREATE VIEW bi.mine AS SELECT 1 AS n", DENIED),
    ([], "CREATE SCHEMA mine", DENIED),
    ([], "DROP TABLE batchscore.runs", DENIED),
    ([], "ALTER TABLE batchscore.runs ADD COLUMN mine int", DENIED),
    ([], "CREATE INDEX ON batchscore.runs (error)", DENIED),
    ([], "CREATE FUNCTION batchscore.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'", DENIED),
    ([], "SELECT count(*) FROM other.notes", DENIED),
    ([], "CREATE TABLE batchscore.prediction_lists_p900002"
         " (LIKE batchscore.prediction_lists)", DENIED),
    (["SELECT batchscore.create_version_table(900003)"],
     "ALTER TABLE batchscore.prediction_lists ATTACH PARTITION batchscore.prediction_lists_p900003"
     " FOR VALUES IN (900003)", DENIED),
    (["SELECT batchscore.create_version_table(900004)"],
     "DROP TABLE batchscore.prediction_lists_p900004", DENIED),
]
BI_CASES = [
    ([], "SELECT count(*) FROM bi.recommendations", None),
    ([], "SELECT count(*) FROM bi.recommendations_history", None),
    ([], "SELECT count(*) FROM bi.recommendation_lists", None),
    ([], "SELECT count(*) FROM bi.recommendation_lists_history", None),
    ([], "SELECT count(*) FROM bi.prediction_versions", None),
    ([], "SELECT count(*) FROM bi.runs", None),
    ([], "SELECT count(*) FROM bi.run_metrics", None),
    ([], "SELECT count(*) FROM bi.alerts", None),
    ([], "SELECT count(*) FROM bi.item_exposure", None),
    ([], "SELECT count(*) FROM bi.item_exposure_history", None),
    ([], "SELECT count(*) FROM batchscore.predictions", DENIED),
    ([], "SELECT count(*) FROM batchscore.prediction_lists", DENIED),
    ([], "SELECT count(*) FROM batchscore.runs", DENIED),
    ([], "DELETE FROM bi.runs", DENIED),
    ([], "INSERT INTO bi.rejects (run_id, source, row_number, row, reasons)"
         " VALUES ('r', 's', 1, '{}', '{}')", DENIED),
    ([], "CREATE TABLE public.mine (n int)", DENIED),
    ([], "CREATE TABLE bi.mine (n int)", DENIED),
    ([], "CREATE TEMPORARY TABLE scratch (n int)", DENIED),
    ([], "DROP VIEW bi.runs", DENIED),
    ([], "SELECT count(*) FROM other.notes", DENIED),
    ([], "SELECT batchscore.create_version_table(900005)", DENIED),
]
OWNER_CASES = [
    ([], "CREATE TABLE batchscore.mine (n int)", None),
    ([], "CREATE VIEW bi.mine AS SELECT 1 AS n", None),
    ([], "ALTER TABLE batchscore.runs ADD COLUMN mine int", None),
    ([], "DROP VIEW bi.alerts", None),
    ([], "SELECT count(*) FROM other.notes", DENIED),
]


def outcome(url: str, setup: list[str], statement: str) -> str | None:
    """The SQLSTATE the server answered ``statement`` with (None: done), run as the login
    of ``url`` after ``setup``, all in one transaction that is then rolled back."""
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cur:
            for step in setup:
                cur.execute(step)
            try:
                cur.execute(statement)
            except psycopg2.Error as refused:
                return refused.pgcode
            return None
    finally:
        connection.rollback()
        connection.close()


@pytest.mark.parametrize(("role", "setup", "statement", "expected"),
                         [("writer", *case) for case in WRITER_CASES]
                         + [("bi", *case) for case in BI_CASES]
                         + [("owner", *case) for case in OWNER_CASES],
                         ids=lambda value: value if isinstance(value, str) else None)
def test_each_role_may_do_its_job_and_the_server_refuses_the_rest(
        matrix_server, role, setup, statement, expected) -> None:
    assert outcome(matrix_server.urls[role], setup, statement) == expected


def test_each_login_is_its_role(server, settings) -> None:
    for role in services.ROLES:
        with psycopg2.connect(server.urls[role]) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user, rolsuper, rolcreaterole, rolcreatedb"
                        " FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == (services.role_name(settings, role), False, False, False)
        conn.close()


def test_a_migration_after_the_roles_is_the_owners_and_granted(server, tmp_path) -> None:
    for migration in sorted(Path("sql").glob("*.sql")):
        shutil.copyfile(migration, tmp_path / migration.name)
    (tmp_path / "999_later.sql").write_text(
        "CREATE TABLE batchscore.later (n int);\n"
        "CREATE VIEW bi.later AS SELECT n FROM batchscore.later;\n")
    assert upgrade(server.admin, tmp_path) == ["999_later"]
    with server.admin.connect() as conn:
        owners = dict(conn.execute(sa.text(
            "SELECT oid::regclass::text, pg_get_userbyid(relowner) FROM pg_class"
            " WHERE oid IN ('batchscore.later'::regclass, 'bi.later'::regclass)")).all())
    assert owners == {"batchscore.later": "batchscore_owner", "bi.later": "batchscore_owner"}
    writer, bi = server.urls["writer"], server.urls["bi"]
    assert outcome(writer, [], "INSERT INTO batchscore.later VALUES (1)") is None
    assert outcome(writer, [], "SELECT n FROM bi.later") is None
    assert outcome(writer, [], "DROP TABLE batchscore.later") == DENIED
    assert outcome(bi, [], "SELECT n FROM bi.later") is None
    assert outcome(bi, [], "SELECT n FROM batchscore.later") == DENIED


@pytest.fixture
def store_redis(request, server: Server) -> Iterator[redis.Redis]:
    """The Redis writer beside ``server``: the embedded Redis for the embedded PostgreSQL,
    Debian's Redis 7 for Debian's PostgreSQL 15; emptied first."""
    if server.where == "embedded":
        yield request.getfixturevalue("redis_client")
        return
    servers = request.getfixturevalue("system_servers")
    admin = connect(servers.redis_admin_url)
    admin.flushdb()
    assert admin.info("server")["redis_version"].startswith("7.")  # the version users run
    writer = connect(servers.redis_writer_url)
    try:
        yield writer
    finally:
        writer.close()
        admin.close()


def test_a_publish_rollback_and_reconcile_work_as_the_writer(server, store_redis,
                                                            tmp_path) -> None:
    redis_client = store_redis
    if server.where == "system":  # the version users run
        with server.admin.connect() as conn:
            assert conn.exec_driver_sql("SHOW server_version").scalar().startswith("15")
    writer = engine_for(server.urls["writer"])
    try:
        day1, day2 = date(2026, 11, 18), date(2026, 11, 19)
        gates = {"passed": True, "reason": "all gates passed", "serving_version": None,
                 "checks": []}
        first = register(writer, NewModel(
            created_by="test", trained_as_of=day1, params={}, metrics={}, data_snapshot={},
            code_version="test", artifact_uri="file:///nowhere", gates=gates)).version
        v1, _ = publish_day(writer, redis_client, first, day1, {1: [(10, 0.9), (11, 0.5)]})
        second = register(writer, NewModel(
            created_by="test", trained_as_of=day2, params={}, metrics={}, data_snapshot={},
            code_version="test", artifact_uri="file:///nowhere", gates=gates)).version
        registry.promote(writer, second, "test", "gates passed")
        v2, outcome_ = publish_day(writer, redis_client, second, day2, {1: [(90, 0.7)]})
        assert outcome_.served

        done = roll_back(writer, redis_client, KEYS, "oncall", "v2 is junk")
        assert (done.rolled_back, done.restored) == (v2.publish_id, v1.publish_id)
        with writer.connect() as conn:
            served = conn.execute(sa.text(
                "SELECT user_id, rank, item_id FROM bi.recommendations ORDER BY rank")).all()
            tables = dict(conn.execute(sa.text(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
                " WHERE c.relname IN (:a, :b)"),
                {"a": partition_name(v1.publish_id), "b": partition_name(v2.publish_id)}).all())
        assert [tuple(row) for row in served] == [(1, 1, 10), (1, 2, 11)]
        # The writer's versions are the owner's tables, made by the owner's functions.
        assert set(tables.values()) == {"batchscore_owner"}
        assert registry.get(writer, second).status == "rolled_back"

        # A crash left a staged table behind: reconcile, as the writer, drops it.
        with writer.begin() as conn:
            conn.execute(sa.text("SELECT batchscore.create_version_table(777)"))
        report = reconcile(writer, redis_client, KEYS, tmp_path)
        assert report.tables_dropped == [partition_name(777)]
        assert disagreement(writer, redis_client, KEYS) is None
    finally:
        writer.dispose()


def without_password(url: str) -> str:
    parsed = sa.engine.make_url(url)
    return sa.engine.URL.create(parsed.drivername, parsed.username, None, parsed.host,
                                parsed.port, parsed.database).render_as_string()


def with_password(url: str, password: str) -> str:
    return sa.engine.make_url(url).set(password=password).render_as_string(hide_password=False)


def test_no_password_or_a_wrong_one_is_a_clear_error(server) -> None:
    writer = sa.engine.make_url(server.urls["writer"])
    where = f"PostgreSQL at {writer.host}:{writer.port}"
    with pytest.raises(AuthenticationError) as missing:
        engine_for(without_password(server.urls["writer"])).connect()
    assert str(missing.value).startswith(
        f"{where} asks for a password and none was given for role batchscore_writer. "
        "Put the role's password in its URL")
    with pytest.raises(AuthenticationError) as wrong:
        engine_for(with_password(server.urls["bi"], "not-the-password")).connect()
    assert str(wrong.value).startswith(
        f"{where} refused its password for role batchscore_bi. Put the role's password")
    assert "batchscore db url --role" in str(wrong.value)


def test_the_cli_names_the_refused_role_without_a_traceback(server, monkeypatch, capsys,
                                                             tmp_path) -> None:
    owner = server.urls["owner"]
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path))
    monkeypatch.setenv("BATCHSCORE_DATABASE_URL", with_password(owner, "wrong-secret"))
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    host = sa.engine.make_url(owner)
    assert (f"error: PostgreSQL at {host.host}:{host.port} refused its password for role "
            "batchscore_owner") in err
    assert "Traceback" not in err and "wrong-secret" not in err


def test_db_url_prints_each_roles_login(settings, endpoints, engine, capsys,
                                        monkeypatch) -> None:
    monkeypatch.setenv("BATCHSCORE_HOME", str(settings.home))
    for role, name in (("owner", "batchscore_owner"), ("writer", "batchscore_writer"),
                       ("bi", "batchscore_bi")):
        assert main(["db", "url", "--role", role]) == 0
        url = capsys.readouterr().out.strip()
        parsed = sa.engine.make_url(url)
        assert (parsed.username, parsed.password) == (
            name, secret(settings.home, services.postgres_secret(name)))
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (name,)
        conn.close()
    assert main(["db", "url"]) == 0
    assert sa.engine.make_url(capsys.readouterr().out.strip()).username == "batchscore_owner"


def test_configured_roles_come_from_their_variables(tmp_path) -> None:
    settings = Settings.from_env({
        "BATCHSCORE_HOME": str(tmp_path),
        "BATCHSCORE_DATABASE_URL": "postgresql://batchscore_owner:o@db:5432/batchscore",
        "BATCHSCORE_WRITER_DATABASE_URL": "postgresql://batchscore_writer:w@db:5432/batchscore",
    })
    assert services.database_url(settings) == settings.database_url
    assert services.database_url(settings, "writer") == settings.writer_database_url
    with pytest.raises(ConfigError, match="BATCHSCORE_BI_DATABASE_URL is not set"):
        services.database_url(settings, "bi")
    assert not (tmp_path / "services").exists()


def test_a_server_initialised_with_trust_is_switched_to_passwords() -> None:
    """A data folder made by an earlier release (initdb --auth=trust): the next start
    gives the superuser its password and requires passwords of everyone."""
    root = Path(tempfile.mkdtemp(prefix="batchscore-trust-"))
    server = EmbeddedPostgres(root, "s3cret-Pw")
    user = server._system_user()
    try:
        # What the earlier release did: trust every local login.
        root.mkdir(exist_ok=True)
        server.data_dir.mkdir()
        server._hand_over(user)
        server._run("initdb", "-D", str(server.data_dir), "--auth=trust", "--encoding=UTF8",
                    "--locale=C", "-U", SUPERUSER, user=user)
        assert server.trusts_logins()
        server.ensure_running()
        assert not server.trusts_logins()
        port = server._port()
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, password="guess",
                             dbname="postgres")
        with psycopg2.connect(server.url()) as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("batchscore",)
        conn.close()

        # Found running with trust again (pg_hba.conf edited by hand): switched back.
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        with psycopg2.connect(server.url()) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_reload_conf()")
        conn.close()
        assert server.trusts_logins()
        server.ensure_running()
        assert not server.trusts_logins()
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_new_server_never_trusts_and_keeps_no_password_file() -> None:
    home = Path(tempfile.mkdtemp(prefix="batchscore-new-"))
    settings = Settings.from_env({"BATCHSCORE_HOME": str(home)})
    try:
        url = services.admin_url(settings)
        server = services.embedded_postgres(settings)
        assert not server.trusts_logins()
        assert not list(server.root.glob(".initdb-password*"))
        assert sa.engine.make_url(url).password == secret(home, SUPERUSER)
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            psycopg2.connect(host="127.0.0.1", port=server._port(), user=SUPERUSER,
                             dbname="postgres")
    finally:
        services.stop_embedded(settings)
        shutil.rmtree(home, ignore_errors=True)


def test_logins_set_at_once_by_many_commands_take_turns(settings, engine) -> None:
    """Every command on the embedded server sets the logins after migrating. Without
    taking turns, two sessions altering one role fail ("tuple concurrently updated":
    most of 120 did, 6 at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    password = secret(settings.home, "postgres_batchscore_bi")
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: set_logins(engine, {"batchscore_bi": password}), range(60)))
    with psycopg2.connect(services.database_url(settings, "bi")) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user")
        assert cur.fetchone() == ("batchscore_bi",)
    conn.close()
