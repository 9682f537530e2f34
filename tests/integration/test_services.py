"""The embedded default and the configured path."""

import socket
from pathlib import Path

import psycopg2
import pytest
import redis

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, migrations, upgrade
from jobs.platform.redis_client import connect


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


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.system_services
@pytest.mark.skipif(not (reachable(5432) and reachable(6379)),
                    reason="no PostgreSQL on 127.0.0.1:5432 or Redis on 127.0.0.1:6379")
def test_configured_urls_start_nothing(tmp_path: Path) -> None:
    admin = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS batchscore_config_test")
        cur.execute("CREATE DATABASE batchscore_config_test")
    settings = Settings.from_env({
        "BATCHSCORE_HOME": str(tmp_path),
        "BATCHSCORE_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/batchscore_config_test",
        "BATCHSCORE_REDIS_URL": "redis://127.0.0.1:6379/15",
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
        assert redis.Redis.from_url(resolved.redis_url).ping()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS batchscore_config_test WITH (FORCE)")
        admin.close()
