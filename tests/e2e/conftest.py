"""Shared set-up of the end-to-end modules: the CLI pointed at fresh embedded servers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
