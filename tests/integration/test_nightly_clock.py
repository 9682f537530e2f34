"""The nightly against the clock: a run date after today is refused unless allowed, and a
date with no events raises an ``empty`` alert and is recorded as skipped (or, with
BATCHSCORE_EMPTY_DAY=fail, failed), in the CLI's run and as an Airflow task."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowSkipException

from jobs.cli import main
from jobs.contracts.inputs import EmptyDayError, NothingToScoreError
from jobs.monitoring.report import write_report
from jobs.orchestration import nightly
from jobs.orchestration.airflow_tasks import validate_inputs
from jobs.orchestration.model_choice import refuse_future_date
from jobs.orchestration.run_state import NightlyConfig, RunRequestError
from jobs.platform.runs import list_runs

DAY = date(2026, 11, 20)


def config(endpoints, tmp_path: Path, run_date: date, **kwargs) -> NightlyConfig:
    return NightlyConfig(run_date=run_date, database_url=endpoints.database_url,
                                 redis_url=endpoints.redis_url, home=tmp_path / "home", k=5,
                                 **kwargs)


def recorded_runs(engine) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT logical_date::text, status, error FROM batchscore.runs ORDER BY started_at"))]


def alerts(engine) -> list[tuple[str, str, bool]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT level, message, delivered FROM batchscore.alerts ORDER BY alert_id"))]


def published(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM batchscore.prediction_versions")
                            ).scalar()


def test_a_date_after_today_is_refused_by_name() -> None:
    today = date(2026, 12, 2)
    refuse_future_date(today, today, allowed=False)  # today itself runs
    refuse_future_date(today + timedelta(days=1), today, allowed=True)
    with pytest.raises(RunRequestError, match=re.escape(
            "run date 2026-12-03 is after today (2026-12-02, UTC): a future date would take "
            "over serving from every normal run after it; nothing was run. Name the date "
            "with --run-date (the default is the newest event's), or pass --allow-future-date "
            "(the DAG param allow_future_date) to run it anyway")):
        refuse_future_date(today + timedelta(days=1), today, allowed=False)


def test_the_run_refuses_tomorrow_by_the_real_clock(engine, endpoints, model, tmp_path
                                                    ) -> None:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(RunRequestError,
                       match=rf"run date {tomorrow} is after today \({tomorrow - timedelta(1)}"):
        nightly.run(config(endpoints, tmp_path, tomorrow))
    assert recorded_runs(engine) == []


def test_a_date_without_events_is_skipped_and_publishes_nothing(engine, endpoints, model,
                                                                tmp_path, capsys,
                                                                monkeypatch) -> None:
    with pytest.raises(NothingToScoreError, match="nothing new to score for 2026-11-20: table"):
        nightly.run(config(endpoints, tmp_path, DAY))
    assert recorded_runs(engine) == [("2026-11-20", "skipped", (
        "nothing new to score for 2026-11-20: table holds no events; nothing was published, "
        "the served version stays"))]
    assert published(engine) == 0
    assert list((tmp_path / "home" / "staging").iterdir()) == []
    # On-call hears of it: an empty day is almost always a broken upstream feed.
    [(level, message, delivered)] = alerts(engine)
    assert (level, delivered) == ("empty", True)
    assert "had no input events" in message and "table holds no events" in message
    assert "broken upstream feed" in message
    [run] = list_runs(engine)
    assert run.stats["empty_day"] == {"policy": "skip", "alerted": True}
    assert run.empty_day == "EMPTY DAY, alert raised"
    # ... and so do `runs list`, `runs show` and the run's report.
    monkeypatch.setenv("BATCHSCORE_DATABASE_URL", endpoints.database_url)
    monkeypatch.setenv("BATCHSCORE_REDIS_URL", endpoints.redis_url)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    capsys.readouterr()
    assert main(["runs", "list"]) == 0
    assert " ".join(capsys.readouterr().out.split()).startswith(
        f"{run.run_id} skipped model {model} [EMPTY DAY, alert raised] nothing new to score")
    assert main(["runs", "show", run.run_id]) == 0
    assert ("input:     EMPTY DAY, alert raised (BATCHSCORE_EMPTY_DAY=skip)"
            in capsys.readouterr().out)
    report = write_report(engine, tmp_path / "home", run.run_id).read_text()
    assert "EMPTY DAY, alert raised: the date had no input events" in report


def test_an_empty_day_fails_the_run_when_set_to(engine, endpoints, model, tmp_path) -> None:
    with pytest.raises(EmptyDayError, match=re.escape(
            "empty day (BATCHSCORE_EMPTY_DAY=fail): nothing new to score for 2026-11-20")):
        nightly.run(config(endpoints, tmp_path, DAY, empty_day="fail"))
    [(day, status, error)] = recorded_runs(engine)
    assert (day, status) == ("2026-11-20", "failed")
    assert error.startswith("empty day (BATCHSCORE_EMPTY_DAY=fail): nothing new to score")
    assert [level for level, _, _ in alerts(engine)] == ["empty"]
    assert published(engine) == 0
    assert list_runs(engine)[0].empty_day == "EMPTY DAY, alert raised"


def test_the_dag_task_refuses_a_future_date_and_skips_a_day_without_events(
        engine, endpoints, model, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_REDIS", endpoints.redis_url)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    with pytest.raises(RunRequestError, match="allow_future_date"):
        validate_inputs(params={"run_date": tomorrow, "k": 5}, logical_date=None)
    assert recorded_runs(engine) == []
    # Allowed, the date runs; it has no events, so the task is skipped (and the tasks
    # after it with it), and the run is recorded as skipped, not failed.
    with pytest.raises(AirflowSkipException, match=f"nothing new to score for {tomorrow}"):
        validate_inputs(params={"run_date": tomorrow, "k": 5, "allow_future_date": True},
                        logical_date=None)
    assert [(day, status) for day, status, _ in recorded_runs(engine)] == [
        (tomorrow, "skipped")]
    assert [level for level, _, _ in alerts(engine)] == ["empty"]
    assert published(engine) == 0
    # Set to fail, the task fails with the run recorded as failed; its alert is the
    # task's own (the failure callback adds none: see airflow_tasks.record_failure).
    monkeypatch.setenv("BATCHSCORE_EMPTY_DAY", "fail")
    with pytest.raises(EmptyDayError, match=f"nothing new to score for {tomorrow}"):
        validate_inputs(params={"run_date": tomorrow, "k": 5, "allow_future_date": True},
                        logical_date=None)
    assert [status for _, status, _ in recorded_runs(engine)] == ["skipped", "failed"]
    assert [level for level, _, _ in alerts(engine)] == ["empty", "empty"]
