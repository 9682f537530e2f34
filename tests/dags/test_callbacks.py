"""The nightly DAG's failure callback, against the embedded PostgreSQL."""

import logging
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration.airflow_tasks import FIRST_TASK, record_failure, report
from jobs.orchestration.prepare import begin
from jobs.orchestration.run_state import NightlyConfig
from jobs.platform import runs
from jobs.publish.postgres import PostgresPublisher


class TaskInstance:
    """The part of Airflow's task instance the callback reads."""

    task_id = "publish_redis"

    def __init__(self, pushed: dict) -> None:
        self.pushed = pushed

    def xcom_pull(self, task_ids: str) -> dict | None:
        return self.pushed.get(task_ids)


def test_failure_callback_records_the_run_and_discards_the_staged_version(
        engine, endpoints, settings, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_REDIS", endpoints.redis_url)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    artifact = tmp_path / "model"
    artifact.mkdir()
    register(engine, NewModel(created_by="test", trained_as_of=date(2026, 11, 1), params={},
                              metrics={}, data_snapshot={}, code_version="test",
                              artifact_uri=artifact.as_uri()))
    state = begin(engine, NightlyConfig(
        run_date=date(2026, 11, 20), database_url=endpoints.database_url,
        redis_url=endpoints.redis_url, home=tmp_path / "home", k=5))
    staged = PostgresPublisher(engine).allocate(state.run_id, 1, date(2026, 11, 20), 5)
    state.publish_id = staged.publish_id
    state.save()

    record_failure({"ti": TaskInstance({FIRST_TASK: {"work_dir": state.work_dir,
                                                      "run_id": state.run_id}}),
                    "run_id": "scheduled__2026-11-20T00:00:00+00:00",
                    "exception": RuntimeError("redis went away")})

    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT status, error FROM batchscore.runs")).one()
        version = conn.execute(sa.text(
            "SELECT status FROM batchscore.prediction_versions")).scalar()
    assert (run.status, run.error) == ("failed", "RuntimeError: redis went away")
    assert version == "failed"
    assert not Path(state.work_dir).exists()
    # The failure is also an alert (on the log channel by default).
    with engine.connect() as conn:
        alert = conn.execute(sa.text("SELECT run_id, level, channel, delivered, message"
                                     " FROM bi.alerts")).one()
    assert (alert.run_id, alert.level, alert.channel, alert.delivered) == (
        state.run_id, "failed", "log", True)
    assert ("task publish_redis of DAG run scheduled__2026-11-20T00:00:00+00:00 failed: "
            "RuntimeError: redis went away") in alert.message
    # The failed run has its report, which names the error.
    page = (tmp_path / "home" / "reports" / f"{state.run_id}.html").read_text()
    assert "RuntimeError: redis went away" in page


def test_the_report_task_writes_the_recorded_run_s_report(engine, endpoints, monkeypatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path))
    version = register(engine, NewModel(
        created_by="test", trained_as_of=date(2026, 11, 1), params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere")).version
    run_id = runs.start(engine, "nightly", date(2026, 11, 20), version)
    runs.succeed(engine, run_id, {"rows": 0})

    done = report(ti=TaskInstance({FIRST_TASK: {"run_id": run_id}}))

    path = tmp_path / "reports" / f"{run_id}.html"
    assert done == {"run_id": run_id, "report": str(path)}
    assert path.exists() and (tmp_path / "reports" / "index.html").exists()
    assert runs.get(engine, run_id).stats == {"rows": 0, "report": str(path)}


def test_failure_callback_without_a_begun_run_records_only_an_alert(engine, endpoints,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    record_failure({"ti": TaskInstance({}), "exception": RuntimeError("no run")})
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.runs")).scalar() == 0
        alerts = conn.execute(sa.text("SELECT run_id, level FROM bi.alerts")).all()
    assert [tuple(a) for a in alerts] == [(None, "failed")]


def test_failure_callback_with_the_database_out_of_reach_still_alerts(engine, monkeypatch,
                                                                      caplog) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", "postgresql://u@127.0.0.1:1/none")
    with caplog.at_level(logging.WARNING):
        record_failure({"ti": TaskInstance({}), "exception": RuntimeError("no run")})
    # Sent on its channel (the log), though it could not be recorded; the callback returns.
    assert "ALERT batchscore: a nightly before its run began failed" in caplog.text
    assert "its failure alert could not be recorded (OperationalError" in caplog.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.alerts")).scalar() == 0
