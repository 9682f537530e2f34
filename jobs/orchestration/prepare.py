"""The nightly's steps before anything is published.

``begin`` chooses the models (:mod:`jobs.orchestration.model_choice`), records the run
as started and makes its staging folder; ``check_redis_takes_writes`` fails the run at
once when Redis would refuse its version; ``validate_inputs`` checks the day's input
(quarantine or fail), loads it and writes the interaction history the scoring job
reads; ``score_in_process`` runs the scoring job (``jobs/scoring/score.py``) in this
process, as the DAG's ``score`` task runs it with spark-submit; ``validate_predictions``
holds what it wrote to the prediction contract.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.inputs import (
    batch_stats,
    check_input,
    quarantine_and_load,
    read_input_file,
    table_batch,
)
from jobs.contracts.predictions import (
    ExposureTotals,
    HistoryTotals,
    PredictionSummary,
    check_predictions,
    summarize,
    summary_stats,
)
from jobs.data import history
from jobs.data.load import InputError
from jobs.lifecycle import registry
from jobs.orchestration.model_choice import (
    canary_fraction,
    choose_models,
    model_path,
    refuse_future_date,
)
from jobs.orchestration.run_state import NightlyConfig, RunState
from jobs.platform import runs
from jobs.platform.db import ensure_schema
from jobs.platform.provenance import current_user
from jobs.scoring.score import ScoreConfig, ScoreStats, read_checks

logger = logging.getLogger(__name__)


def begin(engine: Engine, config: NightlyConfig, run_id: str | None = None,
          lease_seconds: int = 0) -> RunState:
    """Choose the model, record the run as started, and create its staging folder.

    The caller holds ``run_id``'s lease (see :func:`jobs.platform.runs.lease`);
    ``lease_seconds`` is how long the run may go without a process holding
    it before reconcile counts it gone.
    """
    ensure_schema(engine)
    refuse_future_date(config.run_date, datetime.now(UTC).date(), config.allow_future_date)
    choice = choose_models(engine, config)
    model, canary = choice.model, choice.canary
    run_id = runs.start(engine, "nightly", config.run_date, model.version,
                        run_id=run_id, lease_seconds=lease_seconds)
    for chosen in choice.forced:
        registry.record_forced_use(engine, chosen.version, current_user(),
                                   f"served by run {run_id} despite its status: {config.reason}")
    state = RunState(
        run_id=run_id, run_date=config.run_date.isoformat(), model_version=model.version,
        model_path=model_path(model.artifact_uri), k=config.k, home=str(config.home),
        work_dir=str(config.home / "staging" / run_id),
        input_path=str(config.input_path) if config.input_path else None,
        input_format=config.input_format, serve_older_date=config.serve_older_date,
        allow_future_date=config.allow_future_date, stats={"k": config.k, "data_docs": {}},
        kind=choice.kind,
        lock_wait_seconds=config.lock_wait_seconds, redis_prefix=config.names.redis_prefix,
        history_root=history.root(engine, config.history_uri, config.home),
        keep_versions=config.keep_versions,
    )
    if canary is not None:
        state.canary_model_version = canary.version
        state.canary_model_path = model_path(canary.artifact_uri)
        state.canary_fraction = canary_fraction(config.canary_fraction)
        state.stats["canary"] = {"model_version": canary.version,
                                 "fraction": state.canary_fraction}
    logger.info("run %s: %s with model version %d%s", run_id, config.run_date, model.version,
                " (shadow: stored, not served)" if choice.shadow else
                f" (canary: version {canary.version} for {state.canary_fraction:.0%} of users)"
                if canary else "")
    return state.save()


def check_redis_takes_writes(redis_url: str, state: RunState) -> None:
    """Fail before the input is loaded and scored when Redis refuses writes (full,
    read-only, or unable to save): :func:`jobs.publish.redis.check_takes_writes`."""
    from jobs.platform.redis_client import connect
    from jobs.publish.redis import check_takes_writes

    client = connect(redis_url)
    try:
        check_takes_writes(client, state.keys)
    finally:
        client.close()


def validate_inputs(engine: Engine, state: RunState) -> RunState:
    """The input contract, then the interaction history the scoring job reads: the days
    the load changed are written again (:func:`jobs.data.history.sync`).

    Raises :class:`jobs.contracts.inputs.NothingToScoreError` when the date has no
    events; the caller records the run as skipped or failed
    (:func:`jobs.orchestration.outcome.empty_day`).
    """
    validator = Validator(Path(state.home), state.run_id)
    run_date = state.logical_date
    batch = (read_input_file(Path(state.input_path), state.input_format)
             if state.input_path else table_batch(engine, run_date))
    try:
        # The time of loading: events stamped after it are quarantined.
        outcome = check_input(validator, engine, run_date, batch, run_name=state.run_id,
                              now=datetime.now(UTC), future_allowed=state.allow_future_date)
    except ContractError as err:
        state.stats["data_docs"].update(err.docs_urls)
        state.save()
        raise
    state.stats["data_docs"]["input"] = outcome.report.docs_url
    state.stats.update(batch_stats(batch, outcome))
    state.stats.update(quarantine_and_load(engine, state.run_id, run_date, batch, outcome))
    history.sync(engine, state.history_root)
    if history.events_up_to(engine, run_date) == 0:
        raise InputError(f"no interactions up to {run_date}; nothing to score")
    return state.save()


def score_in_process(state: RunState, spark_master: str | None) -> ScoreStats:
    """The scoring job on this run, in this process (Spark at ``spark_master``)."""
    from jobs.scoring import score as score_job

    config = score_job.parse_args(state.score_args())
    return score_job.run(ScoreConfig(**{**asdict(config), "spark_master": spark_master}))


def validate_predictions(state: RunState) -> RunState:
    """The prediction contract on what the scoring job wrote."""
    scored = ScoreStats.read(state.folder)
    summary = prediction_summary(scored)
    state.stats.update(summary_stats(summary))
    state.stats.update({
        "active_users": scored.active_users,
        "scored_users": scored.scored_users,
        "users_without_factors": scored.users_without_factors,
    })
    try:
        reports = check_predictions(
            Validator(Path(state.home), state.run_id),
            read_checks(state.folder), summary,
            requested_model_version=state.model_version, run_name=state.run_id,
            label=f"{state.run_date} (run {state.run_id})",
        )
    except ContractError as err:
        state.stats["data_docs"].update(err.docs_urls)
        state.save()
        raise
    state.stats["data_docs"].update({report.suite: report.docs_url for report in reports})
    return state.save()


def prediction_summary(scored: ScoreStats) -> PredictionSummary:
    """What the prediction contract's summary checks read of the scoring job's stats."""
    return summarize(ExposureTotals(**scored.exposure), HistoryTotals(**scored.history),
                     model_version=scored.model_version, active_users=scored.active_users,
                     scored_users=scored.scored_users, catalog_items=scored.catalog_items,
                     k=scored.k)
