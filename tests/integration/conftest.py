"""Fixtures the integration tests share."""

from datetime import date

import pytest

from jobs.lifecycle.registry import NewModel, register


@pytest.fixture
def model_version(engine) -> int:
    """A registered model version (serving, as the first one)."""
    return register(engine, NewModel(
        created_by="test", trained_as_of=date(2026, 11, 18), params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere",
    )).version
