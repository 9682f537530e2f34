"""The nightly run: score every active user with the serving model and publish.

extract (interactions up to the run date) -> score (Spark job) -> check ->
write to Postgres and Redis aside -> switch both -> clean up -> record the run.
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
from jobs.score import POPULAR_FILE, RECOMMENDATIONS_DIR, ScoreConfig, ScoreStats

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NightlyConfig:
    run_date: date
    database_url: str
    redis_url: str
    home: Path
    k: int
    spark_master: str | None = None


@dataclass(frozen=True)
class NightlyResult:
    run_id: str
    publish_id: int
    model_version: int
    logical_date: date
    served: bool
    stats: ScoreStats
    rows: int


class PredictionCheckError(ValueError):
    """The scored predictions are not fit to publish."""


def run(config: NightlyConfig) -> NightlyResult:
    engine = engine_for(config.database_url)
    ensure_schema(engine)
    model = registry.serving(engine)
    run_id = runs.start(engine, "nightly", config.run_date, model.version)
    work_dir = config.home / "staging" / run_id
    postgres = PostgresPublisher(engine)
    try:
        exported = export_interactions(engine, config.run_date, work_dir / "interactions.csv")
        if exported == 0:
            raise InputError(f"no interactions up to {config.run_date}; nothing to score")
        stats = score(config, model.artifact_uri, work_dir)
        check_predictions(stats)
        version, outcome = publish(
            postgres, RedisPublisher(redis.Redis.from_url(config.redis_url)),
            postgres.allocate(run_id, model.version, config.run_date, config.k),
            read_blocks(work_dir / RECOMMENDATIONS_DIR),
            pq.read_table(work_dir / POPULAR_FILE),
            expected_users=stats.scored_users,
        )
    except BaseException as err:
        runs.fail(engine, run_id, f"{type(err).__name__}: {err}")
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    runs.succeed(engine, run_id, {
        "publish_id": version.publish_id,
        "served": outcome.served,
        "active_users": stats.active_users,
        "scored_users": stats.scored_users,
        "users_without_factors": stats.users_without_factors,
        "rows": postgres.rows,
        "k": config.k,
    })
    return NightlyResult(
        run_id=run_id, publish_id=version.publish_id, model_version=model.version,
        logical_date=config.run_date, served=outcome.served, stats=stats, rows=postgres.rows,
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


def check_predictions(stats: ScoreStats) -> None:
    """Refuse to publish an empty scoring result."""
    if stats.scored_users == 0:
        raise PredictionCheckError(
            f"no user could be scored: {stats.active_users} active users, none known to "
            "the serving model; train a model on recent data first"
        )
