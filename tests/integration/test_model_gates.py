"""Serving a model needs its gates: a rejected or rolled-back model is refused for a pinned
model version, a canary and the DAG's params, unless forced with a recorded reason."""

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowSkipException

from jobs.lifecycle import registry
from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration.airflow_tasks import validate_inputs
from jobs.orchestration.prepare import begin
from jobs.orchestration.run_state import NightlyConfig, RunRequestError

DAY = date(2026, 11, 20)
FAILED_GATES = {"passed": False, "reason": "ndcg below the popularity baseline",
                "serving_version": 1, "checks": []}


@pytest.fixture
def models(engine, tmp_path: Path) -> dict[str, int]:
    """A serving version 1, a rejected version 2, and version 3 rolled back."""
    artifact = tmp_path / "model"
    artifact.mkdir()

    def new(gates: dict) -> int:
        return register(engine, NewModel(
            created_by="test", trained_as_of=DAY, params={}, metrics={}, data_snapshot={},
            code_version="test", artifact_uri=artifact.as_uri(), gates=gates)).version

    serving = new({})
    rejected = new(FAILED_GATES)
    rolled_back = new({})
    registry.set_status(engine, rolled_back, "rolled_back", "oncall", "bad lists")
    assert registry.get(engine, rejected).status == "rejected"
    return {"serving": serving, "rejected": rejected, "rolled_back": rolled_back}


def config(endpoints, tmp_path: Path, **kwargs) -> NightlyConfig:
    return NightlyConfig(run_date=DAY, database_url=endpoints.database_url,
                                 redis_url=endpoints.redis_url, home=tmp_path / "home", k=5,
                                 **kwargs)


def runs_recorded(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM batchscore.runs")).scalar()


@pytest.mark.parametrize("status", ["rejected", "rolled_back"])
@pytest.mark.parametrize("option", ["model_version", "canary_version"])
def test_a_gated_model_is_refused_without_force(engine, endpoints, models, tmp_path,
                                                status, option) -> None:
    version = models[status]
    with pytest.raises(RunRequestError,
                       match=rf"model version {version} is {status.replace('_', ' ')}: .*"
                             r"pass --force with --reason"):
        begin(engine, config(endpoints, tmp_path, **{option: version}))
    assert runs_recorded(engine) == 0


def test_force_needs_a_reason(engine, endpoints, models, tmp_path) -> None:
    with pytest.raises(RunRequestError, match="--force needs --reason"):
        begin(engine, config(endpoints, tmp_path, model_version=models["rejected"],
                                     force=True, reason="  "))
    assert runs_recorded(engine) == 0


def test_a_forced_model_serves_and_the_reason_is_in_its_status_history(
        engine, endpoints, models, tmp_path) -> None:
    version = models["rejected"]
    state = begin(engine, config(endpoints, tmp_path, model_version=version,
                                         force=True, reason="the baseline is broken today"))
    assert state.model_version == version
    last = registry.status_history(engine, version)[-1]
    assert last.status == "rejected"  # it serves in this run; its status stays
    assert last.reason == (f"served by run {state.run_id} despite its status: "
                           "the baseline is broken today")


def test_the_dag_params_are_gated_too(engine, endpoints, models, tmp_path,
                                      monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_REDIS", endpoints.redis_url)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    params = {"run_date": DAY.isoformat(), "model_version": models["rolled_back"], "k": 5}
    with pytest.raises(RunRequestError, match="is rolled back"):
        validate_inputs(params=params, logical_date=None)
    assert runs_recorded(engine) == 0
    # Forced, the run begins (and, with no events for the date, is skipped later).
    with pytest.raises(AirflowSkipException, match="nothing new to score for 2026-11-20"):
        validate_inputs(params={**params, "force": True, "reason": "backfill as it served"},
                        logical_date=None)
    assert registry.status_history(engine, models["rolled_back"])[-1].reason.endswith(
        "despite its status: backfill as it served")
