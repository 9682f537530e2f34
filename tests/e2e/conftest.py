"""Shared set-up of the end-to-end modules: the CLI pointed at fresh embedded servers, and
one migrated Airflow metadata database that every Airflow home of the session starts from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for
from jobs.platform.redis_client import connect
from tests.conftest import reset_database


@contextmanager
def cli_world(settings: Settings, endpoints: services.Endpoints
              ) -> Iterator[tuple[sa.engine.Engine, redis.Redis]]:
    """Empty database and Redis; the CLI's environment names the embedded servers."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("BATCHSCORE_HOME", str(settings.home))
    monkeypatch.delenv("BATCHSCORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("BATCHSCORE_REDIS_URL", raising=False)
    engine = engine_for(endpoints.database_url)
    reset_database(engine)
    connect(services.redis_url(settings, "admin")).flushdb()
    client = connect(endpoints.redis_url)
    try:
        yield engine, client
    finally:
        monkeypatch.undo()
        engine.dispose()


@pytest.fixture(scope="session")
def airflow_metadata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow metadata database (SQLite) migrated once for the session.

    `airflow db migrate` takes half a minute even on a migrated database; a home that
    starts from a copy of this one needs no migration of its own. What it holds (the
    default pool, the log templates, Alembic's revision) depends on no home's settings.
    """
    home = tmp_path_factory.mktemp("airflow-metadata")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    migrate = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                             env=env, capture_output=True, text=True, timeout=900, check=False)
    assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-3000:]
    return home / "airflow.db"


def with_airflow_metadata(airflow_metadata: Path, airflow_home: Path) -> Path:
    """``airflow_home`` holding a copy of the session's migrated metadata database, unless
    it has one already (then migrated by whoever made it)."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    database = airflow_home / "airflow.db"
    if not database.exists():
        shutil.copyfile(airflow_metadata, database)
    return airflow_home
