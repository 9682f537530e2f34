"""What the Airflow tasks run; the DAG files in ``dags/`` only declare and call these.

Each callable takes the task's Airflow context. PostgreSQL and Redis come from
the Airflow connections ``batchscore_postgres`` and ``batchscore_redis``
(settable as ``AIRFLOW_CONN_*`` variables); URLs are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from jobs.platform.config import Settings

logger = logging.getLogger(__name__)

POSTGRES_CONN_ID = "batchscore_postgres"
REDIS_CONN_ID = "batchscore_redis"
FIRST_TASK = "validate_inputs"
# How long a run may go between tasks (the Spark job, retries with backoff)
# before reconcile counts its process gone.
RUN_LEASE_SECONDS = 6 * 3600


def connection_url(conn_id: str) -> str:
    from airflow.sdk import BaseHook

    return str(BaseHook.get_connection(conn_id).get_uri())


def resolve_run_date(run_date_param: str | None, logical_date: datetime | None) -> date:
    """The day a nightly run scores: the ``run_date`` param, else its logical date (UTC).

    Read from the logical date, never from the data interval, which some
    timetables leave empty.
    """
    if run_date_param:
        return date.fromisoformat(str(run_date_param))
    if logical_date is None:
        raise ValueError("this run has no logical date; trigger it with the run_date param")
    return logical_date.astimezone(UTC).date()


def _engine() -> Any:
    from jobs.platform.db import engine_for

    return engine_for(connection_url(POSTGRES_CONN_ID))


def _state(context: dict[str, Any]) -> Any:
    from jobs.orchestration.nightly import RunState

    begun = context["ti"].xcom_pull(task_ids=FIRST_TASK)
    if not begun:
        raise RuntimeError(f"task {FIRST_TASK} left no run state")
    return RunState.load(begun["work_dir"])


def reconcile(**context: Any) -> dict[str, Any]:
    """Repair what earlier runs left, before this one begins (see jobs.publish.reconcile)."""
    from jobs.contracts.redis import Keyspace
    from jobs.orchestration import nightly

    settings = Settings.from_env()
    report = nightly.reconcile(_engine(), connection_url(REDIS_CONN_ID),
                               Keyspace(settings.names.redis_prefix), settings.home)
    return report.to_json()


def validate_inputs(**context: Any) -> dict[str, Any]:
    """Begin the run, check and load its input, export what the scoring job reads.

    A date with no events is recorded as skipped and this task is skipped, so
    that the tasks after it are skipped too rather than failed.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from jobs.contracts.inputs import NothingToScoreError
    from jobs.orchestration import nightly
    from jobs.platform import runs

    params = context["params"]
    settings = Settings.from_env()
    config = nightly.NightlyConfig(
        run_date=resolve_run_date(params.get("run_date"), context.get("logical_date")),
        database_url=connection_url(POSTGRES_CONN_ID),
        redis_url=connection_url(REDIS_CONN_ID),
        redis_prefix=settings.names.redis_prefix,
        home=settings.home,
        k=int(params.get("k") or settings.top_k),
        input_path=Path(params["input_path"]) if params.get("input_path") else None,
        input_format=params.get("input_format") or None,
        model_version=params.get("model_version"),
        serve_older_date=bool(params.get("serve_older_date")),
        allow_future_date=bool(params.get("allow_future_date")),
        canary_version=params.get("canary_version"),
        canary_fraction=params.get("canary_fraction"),
        shadow_version=params.get("shadow_version"),
        force=bool(params.get("force")),
        reason=params.get("reason"),
    )
    engine = _engine()
    run_id = runs.new_run_id("nightly", config.run_date)
    with runs.lease(engine, run_id):
        state = nightly.begin(engine, config, run_id, lease_seconds=RUN_LEASE_SECONDS)
        try:
            nightly.validate_inputs(engine, state)
        except NothingToScoreError as nothing:
            nightly.skip(engine, state, nothing)
            raise AirflowSkipException(str(nothing)) from None
        except BaseException as err:
            nightly.fail(engine, state, err, config.redis_url)
            raise
    return {"run_id": state.run_id, "work_dir": state.work_dir, "run_date": state.run_date,
            "model_version": state.model_version, "model_path": state.model_path,
            "interactions": str(state.folder / nightly.INTERACTIONS_FILE), "k": state.k,
            # Empty for a run without a canary (the scoring job reads them so).
            "canary_model_path": state.canary_model_path or "",
            "canary_fraction": "" if state.canary_fraction is None else state.canary_fraction}


def leased(context: dict[str, Any], step: Callable[[Any, Any], Any]) -> Any:
    """Run ``step(engine, state)`` holding the run's lease, as every task after the first does."""
    from jobs.platform import runs

    engine = _engine()
    state = _state(context)
    with runs.lease(engine, state.run_id):
        return step(engine, state)


def validate_predictions(**context: Any) -> None:
    from jobs.orchestration import nightly

    leased(context, lambda engine, state: nightly.validate_predictions(state))


def stage(context: dict[str, Any], name: str) -> Any:
    """One stage of the run's plan (``jobs.orchestration.nightly.PLANS``): a shadow run's
    ``publish_redis`` task writes nothing, its ``switch`` only attaches, its
    ``smoke_check`` compares with what is served."""
    from jobs.orchestration import nightly

    return leased(context, lambda engine, state: nightly.run_stage(
        engine, connection_url(REDIS_CONN_ID), state, name))


def publish_postgres(**context: Any) -> dict[str, Any]:
    state = stage(context, "write_postgres")
    return {"publish_id": state.publish_id}


def publish_redis(**context: Any) -> None:
    stage(context, "write_redis")


def switch(**context: Any) -> dict[str, Any]:
    state = stage(context, "switch")
    return {"publish_id": state.publish_id, "served": bool(state.switch["served"])}


def smoke_check(**context: Any) -> None:
    stage(context, "check")


def record_run(**context: Any) -> dict[str, Any]:
    from jobs.orchestration import nightly

    state = leased(context, nightly.finish)
    return {"run_id": state.run_id, "publish_id": state.publish_id,
            "served": bool(state.switch and state.switch["served"])}


def record_failure(context: dict[str, Any]) -> None:
    """on_failure_callback: mark the run failed and discard what it staged."""
    from jobs.orchestration import nightly

    begun = context["ti"].xcom_pull(task_ids=FIRST_TASK)
    if not begun:
        logger.warning("no batchscore run was begun; nothing to record")
        return
    try:
        state = nightly.RunState.load(begun["work_dir"])
    except FileNotFoundError:
        logger.warning("run %s has no staging folder left; already recorded", begun["run_id"])
        return
    error = context.get("exception") or f"task {context['ti'].task_id} failed"
    nightly.fail(_engine(), state, error if isinstance(error, BaseException) else str(error),
                 connection_url(REDIS_CONN_ID))


# ---------------------------------------------------------------- training


def promote(**context: Any) -> dict[str, Any]:
    """Promote the version this run trained when the gates pass; skip otherwise.

    Skipping emits no asset event, so only a real promotion reaches the DAGs
    that react to a new serving model.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from jobs.lifecycle import registry
    from jobs.platform.provenance import current_user

    engine = _engine()
    as_of = resolve_run_date(context["params"].get("as_of"),
                             context.get("logical_date") or context["dag_run"].run_after)
    candidate = registry.latest_trained_as_of(engine, as_of)
    if candidate is None:
        raise RuntimeError(f"no model version was registered as of {as_of}")
    decision = registry.promotion_decision(engine, candidate)
    if candidate.status == "serving":
        return {"version": candidate.version, "promoted": True, "reason": decision.reason}
    if not decision.promote:
        raise AirflowSkipException(f"version {candidate.version} not promoted: {decision.reason}")
    registry.promote(engine, candidate.version, f"airflow:{current_user()}", decision.reason)
    return {"version": candidate.version, "promoted": True, "reason": decision.reason}
