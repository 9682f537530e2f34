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
# The task whose XCom says which levels the run crossed:
# {"run_id", "crossings": [{"metric", "segment", "value", "level", "threshold",
#  "direction"}], "retrain": bool}.
MONITOR_TASK = "monitor"
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

    return engine_for(connection_url(POSTGRES_CONN_ID), Settings.from_env().names)


def _state(context: dict[str, Any]) -> Any:
    from jobs.orchestration.run_state import RunState

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
    """Begin the run, check that Redis takes writes, check and load its input, export
    what the scoring job reads.

    A date with no events raises an ``empty`` alert; under BATCHSCORE_EMPTY_DAY=skip
    (the default) the run is recorded as skipped and this task is skipped, so that
    the tasks after it are skipped too rather than failed; under ``fail`` the run is
    recorded as failed and this task fails.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from jobs.contracts.inputs import NothingToScoreError
    from jobs.orchestration.outcome import empty_day, fail
    from jobs.orchestration.prepare import begin, check_redis_takes_writes, validate_inputs
    from jobs.orchestration.run_state import NightlyConfig
    from jobs.platform import runs

    params = context["params"]
    settings = Settings.from_env()
    config = NightlyConfig(
        run_date=resolve_run_date(params.get("run_date"), context.get("logical_date")),
        database_url=connection_url(POSTGRES_CONN_ID),
        redis_url=connection_url(REDIS_CONN_ID),
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
        names=settings.names,
        history_uri=settings.history_uri,
        keep_versions=settings.keep_versions,
        empty_day=settings.empty_day,
    )
    engine = _engine()
    run_id = runs.new_run_id("nightly", config.run_date)
    with runs.lease(engine, run_id):
        state = begin(engine, config, run_id, lease_seconds=RUN_LEASE_SECONDS)
        try:
            check_redis_takes_writes(config.redis_url, state)
            validate_inputs(engine, state)
        except NothingToScoreError as nothing:
            try:
                empty_day(engine, state, nothing, config.empty_day, settings.alerts,
                          context=context)
            finally:
                write_report(engine, state.run_id)
            raise AirflowSkipException(f"{nothing} (an empty-day alert was raised)") from None
        except BaseException as err:
            fail(engine, state, err, config.redis_url)
            write_report(engine, state.run_id)
            raise
    return {"run_id": state.run_id, "work_dir": state.work_dir, "run_date": state.run_date,
            "model_version": state.model_version, "model_path": state.model_path,
            "interactions": state.history_root, "k": state.k,
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
    from jobs.orchestration.prepare import validate_predictions as validate

    leased(context, lambda engine, state: validate(state))


def stage(context: dict[str, Any], name: str) -> Any:
    """One stage of the run's plan (``jobs.orchestration.plans.PLANS``): a shadow run's
    ``publish_redis`` task writes nothing, its ``switch`` only attaches, its
    ``smoke_check`` compares with what is served."""
    from jobs.orchestration.plans import run_stage

    return leased(context, lambda engine, state: run_stage(
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
    from jobs.orchestration.outcome import finish

    state = leased(context, finish)
    return {"run_id": state.run_id, "publish_id": state.publish_id,
            "served": bool(state.switch and state.switch["served"])}


def monitor(**context: Any) -> dict[str, Any]:
    """The recorded run's metrics, stored and held to their levels: ``{"run_id",
    "crossings": [...], "retrain"}``. A failure is recorded on the run (which stays
    published) and fails the task, so that Airflow retries it."""
    from jobs.orchestration.after_monitor import monitor as measure

    recorded = context["ti"].xcom_pull(task_ids="record_run")
    if not recorded:
        raise RuntimeError("task record_run left no run id")
    return measure(_engine(), recorded["run_id"], raise_errors=True)


def record_failure(context: dict[str, Any]) -> None:
    """on_failure_callback: mark the run failed, discard what it staged, write its report,
    and raise a ``failed`` alert naming the task, the run and the error. An empty day
    under BATCHSCORE_EMPTY_DAY=fail was recorded and alerted by its task already."""
    from jobs.contracts.inputs import EmptyDayError
    from jobs.orchestration.outcome import alert_failed, fail
    from jobs.orchestration.run_state import RunState

    begun = context["ti"].xcom_pull(task_ids=FIRST_TASK)
    error = context.get("exception") or f"task {context['ti'].task_id} failed"
    if isinstance(error, EmptyDayError):
        logger.info("empty day: the run was recorded as failed and alerted by its task")
        return
    if not begun:
        logger.warning("no batchscore run was begun; nothing to record")
    else:
        try:
            state = RunState.load(begun["work_dir"])
        except FileNotFoundError:
            logger.warning("run %s has no staging folder left; already recorded",
                           begun["run_id"])
        else:
            engine = _engine()
            fail(engine, state, error if isinstance(error, BaseException) else str(error),
                 connection_url(REDIS_CONN_ID))
            write_report(engine, state.run_id)
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        engine = _engine()
    except Exception as err:  # the task's own failure is what Airflow reports
        logger.error("no failure alert: PostgreSQL is out of reach (%s)", type(err).__name__)
        return
    alert_failed(engine, Settings.from_env().alerts, begun["run_id"] if begun else None,
                 f"task {context['ti'].task_id} of DAG run "
                 f"{context.get('run_id') or '?'} failed: {reason}", context)


# ---------------------------------------------------------------- after monitor


def _monitored(context: dict[str, Any]) -> dict[str, Any] | None:
    return context["ti"].xcom_pull(task_ids=MONITOR_TASK)


def alert(**context: Any) -> dict[str, Any]:
    """Raise one alert for the warn and retrain levels the run crossed; skip when none."""
    from airflow.sdk.exceptions import AirflowSkipException

    from jobs.monitoring.alerts import crossing_from_json, raise_alert

    monitored = _monitored(context)
    if not monitored:
        raise AirflowSkipException(f"task {MONITOR_TASK} left no result")
    crossings = [crossing_from_json(record) for record in monitored.get("crossings", [])]
    if not crossings:
        raise AirflowSkipException(f"run {monitored['run_id']} crossed no level")
    raised = raise_alert(_engine(), Settings.from_env().alerts, monitored["run_id"],
                         crossings=crossings, context=context)
    return raised.to_json()


def signal_retrain(**context: Any) -> dict[str, Any]:
    """Update the asset ``batchscore://signals/retrain`` when the run crossed a retrain
    level, which starts ``batchscore_train``; skip (no asset event) otherwise.

    Also skipped when the run's model was trained as of its date or later (a
    re-score with a fresh model): retraining would see no new events, and
    would only start the same loop again.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from jobs.lifecycle import registry
    from jobs.monitoring.alerts import run_info
    from jobs.orchestration.assets import RETRAIN_SIGNAL

    monitored = _monitored(context)
    if not monitored or not monitored.get("retrain"):
        raise AirflowSkipException("no retrain level was crossed")
    engine = _engine()
    run = run_info(engine, monitored["run_id"])
    if run.model_version is not None and run.logical_date is not None:
        model = registry.get(engine, run.model_version)
        if model.trained_as_of >= date.fromisoformat(run.logical_date):
            raise AirflowSkipException(
                f"model version {model.version} was trained as of {model.trained_as_of}, "
                f"on every event up to {run.logical_date}: retraining sees nothing new")
    signal = {"run_id": run.run_id, "logical_date": run.logical_date,
              "model_version": run.model_version,
              "crossings": [c for c in monitored.get("crossings", [])
                            if c.get("level") == "retrain"]}
    context["outlet_events"][RETRAIN_SIGNAL].extra = signal
    logger.info("run %s crossed a retrain level: %s updated", run.run_id, RETRAIN_SIGNAL.uri)
    return signal


def export_metrics(**context: Any) -> str:
    """Write the run's metrics for Prometheus (a textfile, or a Pushgateway)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from jobs.monitoring.prometheus import export

    begun = context["ti"].xcom_pull(task_ids=FIRST_TASK)
    if not begun:
        raise AirflowSkipException("no batchscore run was begun")
    settings = Settings.from_env()
    return export(_engine(), settings.prometheus, settings.home, begun["run_id"])


def rescore_plan(**context: Any) -> dict[str, Any]:
    """What ``batchscore_rescore`` asks of the nightly after a promotion: the served date,
    scored again with the model that now serves (pinned, since it was trained after
    that date). Skipped when nothing is served yet or the model already scored it."""
    from airflow.sdk.exceptions import AirflowSkipException

    from jobs.lifecycle import registry
    from jobs.publish.postgres import served_version

    engine = _engine()
    model = registry.serving(engine)
    served = served_version(engine)
    if served is None:
        raise AirflowSkipException(f"nothing is served yet; the next nightly uses model "
                                   f"version {model.version}")
    publish_id, served_date, served_model = served
    if served_model == model.version:
        raise AirflowSkipException(f"version {publish_id} of {served_date} is already scored "
                                   f"by model version {model.version}")
    logger.info("model version %d now serves: re-scoring %s (served by version %d of model "
                "%d)", model.version, served_date, publish_id, served_model)
    return {"run_date": served_date.isoformat(), "model_version": model.version}


def report(**context: Any) -> dict[str, Any]:
    """The recorded run's report; one that cannot be written is logged, and neither this
    task nor the run fails for it."""
    begun = context["ti"].xcom_pull(task_ids=FIRST_TASK)
    if not begun:
        raise RuntimeError(f"task {FIRST_TASK} left no run state")
    path = write_report(_engine(), begun["run_id"])
    return {"run_id": begun["run_id"], "report": str(path) if path is not None else None}


def write_report(engine: Any, run_id: str) -> Path | None:
    """``BATCHSCORE_HOME/reports/RUN_ID.html`` for a recorded run, failures logged."""
    from jobs.monitoring.report import write_report_logged

    return write_report_logged(engine, Settings.from_env().home, run_id)


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
