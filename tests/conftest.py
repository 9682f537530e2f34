"""Fixtures shared by every tier: one local Spark session, one pair of embedded servers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, upgrade
from jobs.platform.redis_client import connect


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


def reset_database(engine: sa.engine.Engine) -> None:
    """Drop everything the migrations made, yoyo's record of them too (it is in batchscore)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS bi CASCADE"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS batchscore CASCADE"))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
