"""The nightly against the clock: a run date after today is refused unless allowed, and a
date with no events is recorded as skipped, in the CLI's run and as an Airflow task."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowSkipException

from jobs.contracts.inputs import NothingToScoreError
from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration import nightly
from jobs.orchestration.airflow_tasks import validate_inputs

DAY = date(2026, 11, 20)


@pytest.fixture
def model(engine, tmp_path: Path) -> int:
    artifact = tmp_path / "model"
    artifact.mkdir()
    return register(engine, NewModel(
        created_by="test", trained_as_of=DAY, params={}, metrics={}, data_snapshot={},
        code_version="test", artifact_uri=artifact.as_uri())).version


def config(endpoints, tmp_path: Path, run_date: date, **kwargs) -> nightly.NightlyConfig:
    return nightly.NightlyConfig(run_date=run_date, database_url=endpoints.database_url,
                                 redis_url=endpoints.redis_url, home=tmp_path / "home", k=5,
                                 **kwargs)


def recorded_runs(engine) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT logical_date::text, status, error FROM batchscore.runs ORDER BY started_at"))]


def published(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM batchscore.prediction_versions")
                            ).scalar()


def test_a_date_after_today_is_refused_by_name() -> None:
    today = date(2026, 12, 2)
    nightly.refuse_future_date(today, today, allowed=False)  # today itself runs
    nightly.refuse_future_date(today + timedelta(days=1), today, allowed=True)
    with pytest.raises(nightly.RunRequestError, match=re.escape(
            "run date 2026-12-03 is after today (2026-12-02, UTC): a future date would take "
            "over serving from every normal run after it; nothing was run. Name the date "
            "with --run-date (the default is the newest event's), or pass --allow-future-date "
            "(the DAG param allow_future_date) to run it anyway")):
        nightly.refuse_future_date(today + timedelta(days=1), today, allowed=False)


def test_the_run_refuses_tomorrow_by_the_real_clock(engine, endpoints, model, tmp_path
                                                    ) -> None:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(nightly.RunRequestError,
                       match=rf"run date {tomorrow} is after today \({tomorrow - timedelta(1)}"):
        nightly.run(config(endpoints, tmp_path, tomorrow))
    assert recorded_runs(engine) == []


def test_a_date_without_events_is_skipped_and_publishes_nothing(engine, endpoints, model,
                                                                tmp_path) -> None:
    with pytest.raises(NothingToScoreError, match="nothing new to score for 2026-11-20: table"):
        nightly.run(config(endpoints, tmp_path, DAY))
    assert recorded_runs(engine) == [("2026-11-20", "skipped", (
        "nothing new to score for 2026-11-20: table holds no events; nothing was published, "
        "the served version stays"))]
    assert published(engine) == 0
    assert list((tmp_path / "home" / "staging").iterdir()) == []


def test_the_dag_task_refuses_a_future_date_and_skips_a_day_without_events(
        engine, endpoints, model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_REDIS", endpoints.redis_url)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    with pytest.raises(nightly.RunRequestError, match="allow_future_date"):
        validate_inputs(params={"run_date": tomorrow, "k": 5}, logical_date=None)
    assert recorded_runs(engine) == []
    # Allowed, the date runs; it has no events, so the task is skipped (and the tasks
    # after it with it), and the run is recorded as skipped, not failed.
    with pytest.raises(AirflowSkipException, match=f"nothing new to score for {tomorrow}"):
        validate_inputs(params={"run_date": tomorrow, "k": 5, "allow_future_date": True},
                        logical_date=None)
    assert [(day, status) for day, status, _ in recorded_runs(engine)] == [
        (tomorrow, "skipped")]
    assert published(engine) == 0
