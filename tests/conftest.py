"""Fixtures shared by every tier: one local Spark session, one pair of embedded servers,
and one pair of Debian's servers (PostgreSQL 15, Redis 7) for the tests that run on both."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, upgrade
from jobs.platform.names import Names
from jobs.platform.redis_client import connect
from jobs.platform.services.postgres import EmbeddedPostgres
from jobs.platform.services.redis import EmbeddedRedis

# Debian's packages, the servers many users run (.ci/run installs them):
# postgresql-15 and redis-server.
DEBIAN_POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
DEBIAN_REDIS_SERVER = Path("/usr/bin/redis-server")


@pytest.fixture(scope="session")
def spark():
    from jobs.platform.spark import spark_session

    session = spark_session("batchscore-tests", "local[1]", driver_memory="1g",
                            shuffle_partitions=1)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Embedded servers under a fresh home, whatever the caller's environment says.

    Not under pytest's own temporary folder: every pytest session run as root
    makes that folder private again, which would cut the embedded PostgreSQL
    (run as its own user) off from its data while another session runs.
    """
    home = Path(tempfile.mkdtemp(prefix="batchscore-test-home-"))
    yield Settings.from_env({"BATCHSCORE_HOME": str(home)})
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoints(settings: Settings) -> Iterator[services.Endpoints]:
    resolved = services.resolve(settings)
    yield resolved
    services.stop_embedded(settings)


@pytest.fixture
def engine(endpoints: services.Endpoints) -> Iterator[sa.engine.Engine]:
    """The embedded database, emptied and migrated afresh for each test."""
    engine = engine_for(endpoints.database_url)
    reset_database(engine)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_admin(settings: Settings, endpoints: services.Endpoints) -> Iterator[redis.Redis]:
    """The embedded Redis's administrator; the server is emptied for each test."""
    client = connect(services.redis_url(settings, "admin"))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def redis_client(endpoints: services.Endpoints, redis_admin: redis.Redis
                 ) -> Iterator[redis.Redis]:
    """The writer, as publishing connects: the default prefix's keys and publishing's
    commands only, so every test that publishes also checks the writer's ACL."""
    client = connect(endpoints.redis_url)
    yield client
    client.close()


@dataclass(frozen=True)
class SystemServers:
    """Debian's PostgreSQL and Redis, each started for the test session on loopback."""

    postgres_url: str  # the superuser's, database batchscore
    redis_admin_url: str
    redis_writer_url: str  # the default prefix's writer


@pytest.fixture(scope="session")
def system_servers() -> Iterator[SystemServers]:
    """Debian's PostgreSQL 15 and Redis 7, started from their packages' programs under a
    temporary folder on free loopback ports with authentication on, as the embedded
    servers are, and stopped at the end of the session. A test that needs them fails,
    never skips, when the packages are missing."""
    missing = [str(path) for path in (DEBIAN_POSTGRES_BIN / "pg_ctl", DEBIAN_REDIS_SERVER)
               if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"Debian's servers are missing ({', '.join(missing)}): apt-get install "
                    "postgresql-15 redis-server (as .ci/run does)", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="batchscore-system-servers-"))
    postgres = EmbeddedPostgres(root / "postgres", secrets.token_urlsafe(16),
                                bin_dir=DEBIAN_POSTGRES_BIN)
    redis_server = EmbeddedRedis(root / "redis", root, executable=DEBIAN_REDIS_SERVER)
    try:
        postgres_url = postgres.ensure_running()
        redis_server.ensure_running(Names(), "admin")
        yield SystemServers(postgres_url, redis_server.admin_url(),
                            redis_server.url(Names(), "writer"))
    finally:
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def reset_database(engine: sa.engine.Engine) -> None:
    """Drop everything the migrations made, yoyo's record of them too (it is in batchscore)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS bi CASCADE"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS batchscore CASCADE"))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
