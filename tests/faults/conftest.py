"""The fault tier's own embedded PostgreSQL and Redis, which its tests kill and restart
without touching the servers of the other tiers."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, upgrade
from jobs.platform.redis_client import connect
from tests.conftest import FAULT_TALLY_PROPERTY, reset_database
from tests.faults.checks import TALLY
from tests.faults.publisher import Target


@pytest.fixture(scope="session")
def fault_settings() -> Iterator[Settings]:
    home = Path(tempfile.mkdtemp(prefix="batchscore-fault-home-"))
    settings = Settings.from_env({"BATCHSCORE_HOME": str(home)})
    services.resolve(settings)
    yield settings
    services.stop_embedded(settings)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def target(fault_settings: Settings) -> Target:
    """Both servers running (started again if a test left one down), emptied."""
    endpoints = services.resolve(fault_settings)
    engine = engine_for(endpoints.database_url)
    reset_database(engine)
    upgrade(engine)
    engine.dispose()
    admin = connect(services.redis_url(fault_settings, "admin"))
    admin.flushdb()
    admin.close()
    home = fault_settings.home / "runs"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    return Target(endpoints.database_url, endpoints.redis_url, home)


@pytest.fixture
def engine(target: Target) -> Iterator[sa.engine.Engine]:
    engine = engine_for(target.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def client(target: Target) -> Iterator[redis.Redis]:
    client = connect(target.redis_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def tally(request: pytest.FixtureRequest) -> Iterator[None]:
    """What the test exercised (kills, readers, switches, ...), recorded with its report for
    the tier's one-line summary (tests/conftest.py)."""
    before = Counter(TALLY)
    yield
    request.node.user_properties.append((FAULT_TALLY_PROPERTY, dict(TALLY - before)))
