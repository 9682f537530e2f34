"""The tasks after monitor and the re-score's plan, called as Airflow calls them, against
the embedded PostgreSQL (the scheduler test in tests/e2e runs them in a real Airflow)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowSkipException

from jobs.lifecycle import registry
from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration.airflow_tasks import MONITOR_TASK, alert, rescore_plan, signal_retrain
from jobs.orchestration.assets import RETRAIN_SIGNAL
from jobs.platform import runs
from tests.dags.test_callbacks import TaskInstance
from tests.integration.test_publish import publish_day

DAY = date(2026, 11, 20)
PSI = {"metric": "input.item_popularity_psi", "segment": "vs_training", "value": 0.41,
       "level": "retrain", "threshold": 0.25, "direction": "above"}
COVERAGE = {"metric": "predictions.catalog_coverage", "segment": "", "value": 0.08,
            "level": "warn", "threshold": 0.1, "direction": "below"}


@pytest.fixture
def connections(endpoints, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_REDIS", endpoints.redis_url)


def model(engine, trained_as_of: date) -> int:
    return register(engine, NewModel(
        created_by="test", trained_as_of=trained_as_of, params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere",
        gates={"passed": True, "reason": "all gates passed", "checks": []})).version


def context(monitored: dict | None) -> dict:
    return {"ti": TaskInstance({MONITOR_TASK: monitored}),
            "outlet_events": defaultdict(SimpleNamespace)}


def test_a_crossed_retrain_level_updates_the_asset_with_why(engine, connections) -> None:
    version = model(engine, date(2026, 11, 10))
    run_id = runs.start(engine, "nightly", DAY, version)
    task = context({"run_id": run_id, "crossings": [PSI, COVERAGE], "retrain": True})

    signal = signal_retrain(**task)

    assert signal == {"run_id": run_id, "logical_date": "2026-11-20", "model_version": version,
                      "crossings": [PSI]}
    assert task["outlet_events"][RETRAIN_SIGNAL].extra == signal


def test_no_retrain_level_or_a_fresh_model_skips_the_signal(engine, connections) -> None:
    with pytest.raises(AirflowSkipException, match="no retrain level was crossed"):
        signal_retrain(**context({"run_id": "r", "crossings": [COVERAGE], "retrain": False}))
    with pytest.raises(AirflowSkipException, match="no retrain level was crossed"):
        signal_retrain(**context(None))
    # A re-score with a model trained after the run date: retraining would see nothing new.
    fresh = model(engine, date(2026, 11, 21))
    run_id = runs.start(engine, "nightly", DAY, fresh)
    with pytest.raises(AirflowSkipException, match=(
            f"model version {fresh} was trained as of 2026-11-21, on every event up to "
            "2026-11-20: retraining sees nothing new")):
        signal_retrain(**context({"run_id": run_id, "crossings": [PSI], "retrain": True}))


def test_the_alert_task_alerts_crossings_and_skips_without(engine, connections) -> None:
    version = model(engine, date(2026, 11, 10))
    run_id = runs.start(engine, "nightly", DAY, version)
    with pytest.raises(AirflowSkipException, match=f"run {run_id} crossed no level"):
        alert(**context({"run_id": run_id, "crossings": [], "retrain": False}))
    with pytest.raises(AirflowSkipException, match="task monitor left no result"):
        alert(**context(None))

    raised = alert(**context({"run_id": run_id, "crossings": [COVERAGE], "retrain": False}))

    assert (raised["level"], raised["channel"], raised["delivered"]) == ("warn", "log", True)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT run_id, metric FROM bi.alerts")).all() == [
            (run_id, "predictions.catalog_coverage")]


def test_the_rescore_plan_is_the_served_date_with_the_new_model(engine, redis_client,
                                                                connections) -> None:
    first = model(engine, date(2026, 11, 10))
    with pytest.raises(AirflowSkipException, match=(
            f"nothing is served yet; the next nightly uses model version {first}")):
        rescore_plan()
    version, _ = publish_day(engine, redis_client, first, DAY, {1: [(10, 0.9)]})
    with pytest.raises(AirflowSkipException, match=(
            f"version {version.publish_id} of 2026-11-20 is already scored by model "
            f"version {first}")):
        rescore_plan()

    second = model(engine, date(2026, 11, 21))
    registry.promote(engine, second, "test", "newer")

    assert rescore_plan() == {"run_date": "2026-11-20", "model_version": second}
