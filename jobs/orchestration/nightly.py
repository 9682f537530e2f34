"""The nightly run in this process, the way ``batchscore nightly`` runs it.

reconcile -> begin -> check that Redis takes writes -> validate inputs (quarantine or
fail; load a day's file; export the interactions up to the run date) -> score (Spark job
``jobs/scoring/score.py``) -> validate predictions -> write the version aside in
PostgreSQL -> write it aside in Redis -> switch both (under the publish lock) -> smoke
check -> finish (record the run) -> monitor (the run's metrics, ``jobs.monitoring``; a
failure there is recorded and unpublishes nothing) -> alerts for the levels crossed, the
metrics for Prometheus -> the run report. The Airflow DAG runs the same steps as tasks
(:mod:`jobs.orchestration.airflow_tasks`).

Where the steps are: the run's request and state in
:mod:`~jobs.orchestration.run_state`, the choice of models in
:mod:`~jobs.orchestration.model_choice`, the steps before publishing in
:mod:`~jobs.orchestration.prepare`, each store's publish step and the switch in
:mod:`~jobs.orchestration.publish_steps`, the smoke check and the shadow comparison in
:mod:`~jobs.orchestration.checks`, which steps each kind of run takes in
:mod:`~jobs.orchestration.plans`, how a run is recorded when it ends in
:mod:`~jobs.orchestration.outcome`, and what follows in
:mod:`~jobs.orchestration.after_monitor`.

A step reads and writes the run's state in its staging folder, so each can run in its
own process, and holds the run's lease while it works. Every step can be run again
after a crash and converges; nothing is switched unless every step before it
succeeded. A failed run's staged version is discarded and why it failed recorded, and
the previous version keeps being served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from jobs.contracts.inputs import NothingToScoreError
from jobs.contracts.redis import Keyspace
from jobs.orchestration.after_monitor import after_monitor_logged, monitor
from jobs.orchestration.outcome import alert_failed, empty_day, fail, finish
from jobs.orchestration.plans import publish
from jobs.orchestration.prepare import (
    begin,
    check_redis_takes_writes,
    score_in_process,
    validate_inputs,
    validate_predictions,
)
from jobs.orchestration.run_state import NightlyConfig, NightlyResult, RunState, store_lost
from jobs.platform import runs
from jobs.platform.db import engine_for, ensure_schema
from jobs.platform.redis_client import connect
from jobs.publish import protocol
from jobs.scoring.score import ScoreStats

logger = logging.getLogger(__name__)


def run(config: NightlyConfig) -> NightlyResult:
    """All steps in this process, the way ``batchscore nightly`` runs them."""
    scored: list[ScoreStats] = []
    begun: list[str] = []

    def prepare(engine: Engine, state: RunState) -> None:
        begun.append(state.run_id)
        check_redis_takes_writes(config.redis_url, state)
        validate_inputs(engine, state)
        score_in_process(state, config.spark_master)
        scored.append(ScoreStats.read(state.folder))
        validate_predictions(state)

    engine = engine_for(config.database_url, config.names)
    try:
        try:
            state = execute(config, prepare)
        except BaseException:
            # Every recorded run gets its report, a failed or skipped one too.
            if begun:
                write_run_report(engine, config, begun[0])
            raise
        assert state.publish_id is not None and state.switch is not None
        monitoring = monitor(engine, state.run_id)
        if "error" not in monitoring:
            monitoring["after"] = after_monitor_logged(engine, config, monitoring)
        report = write_run_report(engine, config, state.run_id)
    finally:
        engine.dispose()
    return NightlyResult(
        run_id=state.run_id, publish_id=state.publish_id, model_version=state.model_version,
        logical_date=state.logical_date, served=bool(state.switch["served"]),
        stats=scored[0], rows=int(state.stats["rows"]),
        input_rejected=int(state.stats.get("rejected", 0)),
        data_docs=dict(state.stats.get("data_docs", {})),
        shadow=state.stats.get("shadow"), canary=state.stats.get("canary"),
        report=str(report) if report is not None else None,
        monitoring=monitoring,
    )


def write_run_report(engine: Engine, config: NightlyConfig, run_id: str) -> Path | None:
    """The run's report (``BATCHSCORE_HOME/reports/RUN_ID.html``), after the run is
    recorded and monitored; one that fails is logged and leaves the run as it is."""
    from jobs.monitoring.report import write_report_logged

    return write_report_logged(engine, config.home, run_id)


def execute(config: NightlyConfig, prepare: Callable[[Engine, RunState], None]) -> RunState:
    """Reconcile, then one run in this process: ``prepare`` checks the input and scores it
    into the run's folder, then the version is published and the run recorded.

    The run's lease is held throughout; if anything fails, what the run
    staged is discarded and the failure recorded before the error is raised.
    """
    engine = engine_for(config.database_url, config.names)
    ensure_schema(engine)
    try:
        reconcile(engine, config.redis_url, Keyspace(config.names.redis_prefix), config.home,
                  config.lock_wait_seconds)
    except Exception as err:
        clear = store_lost(err)
        if clear is not None:
            raise clear from err
        raise
    run_id = runs.new_run_id("nightly", config.run_date)
    with runs.lease(engine, run_id):
        state = begin(engine, config, run_id)
        try:
            prepare(engine, state)
            publish(engine, config.redis_url, state)
            finish(engine, state)
        except NothingToScoreError as err:
            empty_day(engine, state, err, config.empty_day, config.alerts)
            raise
        except BaseException as err:
            clear = store_lost(err)
            fail(engine, state, clear or err, config.redis_url)
            alert_failed(engine, config.alerts, state.run_id, clear or err)
            if clear is not None:
                raise clear from err
            raise
    engine.dispose()
    return state


def reconcile(engine: Engine, redis_url: str, keys: Keyspace, home: Path,
              lock_wait_seconds: float = protocol.DEFAULT_LOCK_WAIT_SECONDS) -> Any:
    """Repair what earlier runs left (see :mod:`jobs.publish.reconcile`); its report."""
    from jobs.publish.reconcile import reconcile as repair

    return repair(engine, connect(redis_url), keys, home / "staging",
                  wait_seconds=lock_wait_seconds)
