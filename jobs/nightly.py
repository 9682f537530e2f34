"""The nightly run: score every active user with the serving model and publish.

validate inputs (quarantine or fail) -> extract (interactions up to the run
date) -> score (Spark job) -> validate predictions -> write to Postgres and
Redis aside -> switch both -> clean up -> record the run, with links to the
Data Docs of every validation.
Nothing is switched unless every step before it succeeded; on failure the
staged version is discarded and the previous one keeps being served.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis

from jobs import registry, runs
from jobs.data.load import InputError
from jobs.data.store import export_interactions
from jobs.db import engine_for, ensure_schema
from jobs.publish import Publisher, PublishVersion, SwitchOutcome, read_blocks
from jobs.publish.postgres import PostgresPublisher
from jobs.publish.redis import RedisPublisher
from jobs.score import CHECKS_FILE, POPULAR_FILE, RECOMMENDATIONS_DIR, ScoreConfig, ScoreStats
from jobs.validation.engine import ContractError, Validator
from jobs.validation.inputs import (
    batch_stats,
    check_input,
    quarantine_and_load,
    read_input_file,
    table_batch,
)
from jobs.validation.predictions import PredictionSummary, check_predictions, summary_stats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NightlyConfig:
    run_date: date
    database_url: str
    redis_url: str
    home: Path
    k: int
    spark_master: str | None = None
    input_path: Path | None = None
    input_format: str = "csv"


@dataclass(frozen=True)
class NightlyResult:
    run_id: str
    publish_id: int
    model_version: int
    logical_date: date
    served: bool
    stats: ScoreStats
    rows: int
    input_rejected: int
    data_docs: dict[str, str | None]


def run(config: NightlyConfig) -> NightlyResult:
    engine = engine_for(config.database_url)
    ensure_schema(engine)
    model = registry.serving(engine)
    run_id = runs.start(engine, "nightly", config.run_date, model.version)
    work_dir = config.home / "staging" / run_id
    validator = Validator(config.home)
    postgres = PostgresPublisher(engine)
    stats: dict[str, Any] = {"k": config.k, "data_docs": {}}
    try:
        # Validate inputs, quarantine defective rows, load a day's file.
        batch = (read_input_file(config.input_path, config.input_format)
                 if config.input_path is not None else table_batch(engine, config.run_date))
        outcome = check_input(validator, engine, config.run_date, batch, run_name=run_id)
        stats["data_docs"]["input"] = outcome.report.docs_url
        stats.update(batch_stats(batch, outcome))
        stats.update(quarantine_and_load(engine, run_id, config.run_date, batch, outcome))
        # Score.
        exported = export_interactions(engine, config.run_date, work_dir / "interactions.csv")
        if exported == 0:
            raise InputError(f"no interactions up to {config.run_date}; nothing to score")
        scored = score(config, model.artifact_uri, work_dir)
        summary = prediction_summary(scored)
        stats.update(summary_stats(summary))
        # Validate predictions.
        reports = check_predictions(
            validator, pq.read_table(work_dir / CHECKS_FILE).to_pandas(), summary,
            requested_model_version=model.version, run_name=run_id,
            label=f"{config.run_date} (run {run_id})",
        )
        stats["data_docs"].update({report.suite: report.docs_url for report in reports})
        # Publish.
        version, outcome_of_switch = publish(
            postgres, RedisPublisher(redis.Redis.from_url(config.redis_url)),
            postgres.allocate(run_id, model.version, config.run_date, config.k),
            read_blocks(work_dir / RECOMMENDATIONS_DIR),
            pq.read_table(work_dir / POPULAR_FILE),
            expected_users=scored.scored_users,
        )
    except BaseException as err:
        if isinstance(err, ContractError):
            stats["data_docs"].update(err.docs_urls)
        runs.fail(engine, run_id, f"{type(err).__name__}: {err}", stats)
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    stats.update({
        "publish_id": version.publish_id,
        "served": outcome_of_switch.served,
        "active_users": scored.active_users,
        "scored_users": scored.scored_users,
        "users_without_factors": scored.users_without_factors,
        "rows": postgres.rows,
    })
    runs.succeed(engine, run_id, stats)
    return NightlyResult(
        run_id=run_id, publish_id=version.publish_id, model_version=model.version,
        logical_date=config.run_date, served=outcome_of_switch.served, stats=scored,
        rows=postgres.rows, input_rejected=int(stats.get("rejected", 0)),
        data_docs=dict(stats["data_docs"]),
    )


def prediction_summary(scored: ScoreStats) -> PredictionSummary:
    return PredictionSummary(
        catalog_coverage=(scored.recommended_items / scored.catalog_items
                          if scored.catalog_items else 0.0),
        top_item_share=(scored.top_item_users / scored.scored_users
                        if scored.scored_users else 0.0),
        model_version=scored.model_version,
        active_users=scored.active_users,
        k=scored.k,
    )


def publish(
    postgres: PostgresPublisher,
    redis_publisher: RedisPublisher,
    version: PublishVersion,
    blocks: Iterable[pa.RecordBatch],
    popular: pa.Table,
    expected_users: int | None = None,
) -> tuple[PublishVersion, SwitchOutcome]:
    """Write a version aside in both stores, then switch both.

    Postgres switches first and decides whether the version is served; Redis
    follows that decision. If anything fails before the Postgres switch, both
    staged copies are discarded and readers keep the previous version.
    """
    publishers: tuple[Publisher, ...] = (postgres, redis_publisher)
    try:
        for publisher in publishers:
            publisher.prepare(version)
        written = 0
        for block in blocks:
            for publisher in publishers:
                publisher.write(block)
            written += block.num_rows
            logger.info("published %d%s users", written,
                        f" / {expected_users}" if expected_users is not None else "")
        for publisher in publishers:
            publisher.write_fallback(popular)
        outcome = postgres.switch()
    except BaseException:
        for publisher in publishers:
            try:
                publisher.abort()
            except Exception:  # keep the original error; log the secondary one
                logger.exception("discarding the staged version failed")
        raise
    redis_publisher.switch(outcome)
    postgres.cleanup()
    return version, outcome


def score(config: NightlyConfig, artifact_uri: str, work_dir: Path) -> ScoreStats:
    from jobs import score as score_job

    model_path = Path(artifact_uri.removeprefix("file://"))
    if not model_path.exists():
        raise FileNotFoundError(f"the serving model's artifact {model_path} is missing")
    return score_job.run(ScoreConfig(
        interactions=work_dir / "interactions.csv",
        run_date=config.run_date,
        model_path=model_path,
        output=work_dir,
        k=config.k,
        spark_master=config.spark_master,
    ))
