"""Fixtures the integration tests share."""

from datetime import date
from pathlib import Path

import pytest

from jobs.lifecycle.registry import NewModel, register


@pytest.fixture
def model_version(engine) -> int:
    """A registered model version (serving, as the first one)."""
    return register(engine, NewModel(
        created_by="test", trained_as_of=date(2026, 11, 18), params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere",
    )).version


@pytest.fixture
def model(engine, tmp_path: Path) -> int:
    """A registered model version trained as of 2026-11-20 whose artifact folder exists,
    as a nightly requires (empty: the tests using it stop before scoring)."""
    artifact = tmp_path / "model"
    artifact.mkdir()
    return register(engine, NewModel(
        created_by="test", trained_as_of=date(2026, 11, 20), params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri=artifact.as_uri())).version
