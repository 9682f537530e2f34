"""The training job: implicit-feedback ALS on interactions up to a date.

``main(argv)`` is what ``spark-submit jobs/training/train.py`` and ``batchscore train``
run: extract the interactions, fit ALS on all but the last ``holdout_days``,
evaluate it and a popularity baseline on those days, refit on everything, save
the Spark model and register the version with its metrics and provenance.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.bundles.export import export_als
from jobs.data.load import InputError
from jobs.data.store import day_end, export_interactions
from jobs.lifecycle.registry import ModelVersion, NewModel, register, serving_or_none
from jobs.platform.artifacts import artifact_path, artifact_record
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, ensure_schema
from jobs.platform.progress import spark_progress
from jobs.platform.provenance import code_version, current_user
from jobs.scoring.model import MODEL_METADATA_FILE, read_interactions
from jobs.training.gates import GateConfig, judge
from jobs.training.holdout import summary

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame, SparkSession
    from sqlalchemy.engine import Engine

    from jobs.training.differential import Differential

logger = logging.getLogger(__name__)

# Chosen on the holdout of the sample data set (see README, "Choosing the defaults").
DEFAULT_RANK = 32
DEFAULT_REG_PARAM = 1.0
DEFAULT_ALPHA = 2.0
DEFAULT_MAX_ITER = 10
DEFAULT_HOLDOUT_DAYS = 7
DEFAULT_EVAL_K = 10


@dataclass(frozen=True)
class AlsParams:
    rank: int = DEFAULT_RANK
    reg_param: float = DEFAULT_REG_PARAM
    alpha: float = DEFAULT_ALPHA
    max_iter: int = DEFAULT_MAX_ITER
    seed: int = 42


@dataclass(frozen=True)
class TrainConfig:
    database_url: str
    home: Path
    as_of: date
    spark_master: str | None
    als: AlsParams
    holdout_days: int = DEFAULT_HOLDOUT_DAYS
    eval_k: int = DEFAULT_EVAL_K
    promote_if_first: bool = True

    def __post_init__(self) -> None:
        for name, value in (("rank", self.als.rank), ("max-iter", self.als.max_iter),
                            ("holdout-days", self.holdout_days), ("eval-k", self.eval_k)):
            if value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}")
        if self.als.alpha <= 0 or self.als.reg_param < 0:
            raise ValueError("--alpha must be positive and --reg-param not negative")


def parse_args(argv: list[str]) -> TrainConfig:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", type=date.fromisoformat, required=True,
                        help="train on interactions up to the end of this date (YYYY-MM-DD)")
    parser.add_argument("--database-url", default=settings.database_url,
                        help="default: BATCHSCORE_DATABASE_URL (keeps it off the command line)")
    parser.add_argument("--home", type=Path, default=settings.home,
                        help="state folder; the model is saved under HOME/models")
    parser.add_argument("--spark-master", default=None,
                        help="Spark master (ignored under spark-submit, which sets it)")
    parser.add_argument("--rank", type=int, default=DEFAULT_RANK)
    parser.add_argument("--reg-param", type=float, default=DEFAULT_REG_PARAM)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout-days", type=int, default=DEFAULT_HOLDOUT_DAYS)
    parser.add_argument("--eval-k", type=int, default=DEFAULT_EVAL_K)
    parser.add_argument("--no-promote", action="store_true",
                        help="register as a candidate even when no version serves")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set BATCHSCORE_DATABASE_URL")
    try:
        return TrainConfig(
            database_url=args.database_url,
            home=args.home.absolute(),
            as_of=args.as_of,
            spark_master=args.spark_master,
            als=AlsParams(rank=args.rank, reg_param=args.reg_param, alpha=args.alpha,
                          max_iter=args.max_iter, seed=args.seed),
            holdout_days=args.holdout_days,
            eval_k=args.eval_k,
            promote_if_first=not args.no_promote,
        )
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(sys.argv[1:] if argv is None else argv)
    version = run(config)
    print(f"registered model version {version.version} ({version.status})")
    return 0


def run(config: TrainConfig, spark: SparkSession | None = None) -> ModelVersion:
    """Train, evaluate, gate, save, export and register one model version."""
    from jobs.platform.spark import spark_session

    engine = engine_for(config.database_url)
    ensure_schema(engine)
    work_dir = config.home / "staging" / f"train-{config.as_of.isoformat()}"
    export_path = work_dir / "interactions.csv"
    # Extract
    rows = export_interactions(engine, config.as_of, export_path)
    if rows == 0:
        raise InputError(f"no interactions up to {config.as_of}; load or generate data first")
    serving = serving_or_none(engine)
    gate_config = GateConfig.load()
    spark = spark or spark_session("batchscore-train", config.spark_master)
    try:
        interactions = read_interactions(spark, export_path).cache()
        with spark_progress(spark, "reading interactions"):
            snapshot = data_snapshot(interactions)
        check_als_ids(snapshot)
        serving_model = load_model(serving) if serving is not None else None
        # Transform
        metrics, fairness = evaluate(engine, interactions, config, serving, serving_model)
        logger.info("holdout NDCG@%d: ALS %.4f, popularity %.4f", config.eval_k,
                    metrics["als"]["ndcg_at_k"], metrics["popularity"]["ndcg_at_k"])
        logger.info("refitting ALS on all %d interactions up to %s", rows, config.as_of)
        model = fit_als(interactions, config.als, "ALS fit (all events)")
        differential = None
        if serving_model is not None:
            with spark_progress(spark, "comparison with serving"):
                differential = compare_with_serving(model, serving_model, interactions,
                                                    config.eval_k,
                                                    gate_config.differential.sample_users)
        # Load
        artifact = config.home / "models" / f"als-{config.as_of.isoformat()}-{uuid.uuid4().hex[:8]}"
        with spark_progress(spark, "saving the model"):
            model.save(str(artifact))
            try:
                # Raises when the bundle does not score like Spark: nothing is registered.
                bundle = export_als(model, artifact.with_name(artifact.name + ".mleap"))
            except BaseException:
                shutil.rmtree(artifact, ignore_errors=True)
                raise
        interactions.unpersist()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    gates = judge(metrics, differential, serving.version if serving else None, gate_config)
    logger.info("gates: %s", gates["reason"])
    new_model = NewModel(
        created_by=current_user(),
        trained_as_of=config.as_of,
        params={**asdict(config.als), "implicit_prefs": True,
                "holdout_days": config.holdout_days, "eval_k": config.eval_k},
        metrics=metrics,
        data_snapshot=snapshot,
        code_version=code_version(),
        artifact_uri=artifact.as_uri(),
        artifacts=[artifact_record("spark_als_model", artifact),
                   {"kind": "mleap_bundle", "uri": bundle.path.absolute().as_uri(),
                    **bundle.to_json()}],
        gates=gates,
        reports={"fairness": fairness},
    )
    version = register(engine, new_model, promote_if_first=config.promote_if_first)
    (artifact / MODEL_METADATA_FILE).write_text(json.dumps({"model_version": version.version}))
    return version


def holdout_start(config: TrainConfig) -> date:
    return config.as_of - timedelta(days=config.holdout_days)


def evaluate(engine: Engine, interactions: DataFrame, config: TrainConfig,
             serving: ModelVersion | None, serving_model: ALSModel | None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit on the events before the holdout and rank it: the metrics and the fairness report.

    The serving model ranks the same holdout. When it was trained on part of
    the holdout (it is newer than the holdout's start), its own parameters are
    fitted again on the candidate's training events instead, so that neither
    side has seen the events it is judged on.
    """
    from jobs.scoring.transforms import time_split
    from jobs.training import holdout
    from jobs.training.fairness import fairness_report

    cutoff = int(day_end(holdout_start(config)).timestamp())
    train, holdout_pairs = time_split(interactions, cutoff)
    logger.info("fitting ALS on events before the %d-day holdout", config.holdout_days)
    reference, compared_as = serving_model, "artifact"
    if serving is not None and serving.trained_as_of > holdout_start(config):
        logger.info("serving version %d was trained on part of the holdout: refitting its "
                    "parameters on the candidate's training events", serving.version)
        reference = fit_als(train, AlsParams(**{name: serving.params[name]
                                                 for name in AlsParams.__dataclass_fields__}),
                            "ALS refit (serving)")
        compared_as = "its parameters refitted on the candidate's training events"
    candidate = fit_als(train, config.als, "ALS fit (candidate)")
    with spark_progress(train.sparkSession, "holdout evaluation"):
        evaluation = holdout.evaluate(train, holdout_pairs, candidate, config.eval_k, reference)
    metrics = summary(evaluation)
    if serving is not None:
        metrics["serving"].update({"version": serving.version, "compared_as": compared_as})
    report = fairness_report(
        evaluation.recommendations, evaluation.holdout.truth, evaluation.holdout.activity,
        evaluation.holdout.item_popularity, config.eval_k,
        attributes=user_attributes(engine, list(evaluation.holdout.truth)),
    )
    return metrics, report


def compare_with_serving(model: ALSModel, serving_model: ALSModel, interactions: DataFrame,
                         k: int, sample_size: int) -> Differential:
    """The candidate's and the serving model's top-K on a fixed sample of users."""
    from jobs.contracts.canary import fixed_sample
    from jobs.scoring.transforms import seen_items
    from jobs.training.differential import compare
    from jobs.training.holdout import lists_with_scores, ranked_lists

    users = np.array([row["user_id"] for row in
                      interactions.select("user_id").distinct().collect()], dtype=np.int64)
    sample = fixed_sample(users, sample_size)
    spark = interactions.sparkSession
    chosen = spark.createDataFrame([(int(user),) for user in sample], "user_id long")
    seen = seen_items(interactions.join(chosen, "user_id", "left_semi")).cache()
    try:
        return compare(lists_with_scores(ranked_lists(model, seen, k)),
                       lists_with_scores(ranked_lists(serving_model, seen, k)), k)
    finally:
        seen.unpersist()


def load_model(version: ModelVersion) -> ALSModel:
    from pyspark.ml.recommendation import ALSModel

    return ALSModel.load(str(artifact_path(version.artifact_uri)))


def user_attributes(engine: Engine, users: list[int]) -> dict[int, dict[str, Any]]:
    """Attributes of ``users`` from ``batchscore.users`` (most users may have none)."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT user_id, attributes FROM batchscore.users WHERE user_id = ANY(:ids)"),
            {"ids": users}).all()
    return {int(user): dict(attributes) for user, attributes in rows}


def data_snapshot(interactions: DataFrame) -> dict[str, Any]:
    """Row count, id ranges, date range, an order-independent content hash, and the days
    with events and the median rows and active users of such a day."""
    from pyspark.sql import functions as F

    row = interactions.agg(
        F.count("*").alias("rows"),
        F.countDistinct("user_id").alias("users"),
        F.countDistinct("item_id").alias("items"),
        F.max("user_id").alias("max_user_id"),
        F.max("item_id").alias("max_item_id"),
        F.min("event_at").alias("first_event"),
        F.max("event_at").alias("last_event"),
        # Summing per-row hashes makes the digest independent of row order.
        F.sum(F.xxhash64("user_id", "item_id", "rating", "event_at").cast("decimal(38,0)"))
        .alias("hash_sum"),
    ).first()
    # The typical day (UTC), the volume gate's baseline on a night with no earlier runs.
    daily = interactions.groupBy(F.floor(F.col("event_at") / 86_400)).agg(
        F.count("*").alias("rows"), F.countDistinct("user_id").alias("users"),
    ).agg(F.count("*").alias("days"), F.median("rows").alias("rows"),
          F.median("users").alias("users")).first()
    return {
        "rows": int(row["rows"]),
        "users": int(row["users"]),
        "items": int(row["items"]),
        "max_user_id": int(row["max_user_id"]),
        "max_item_id": int(row["max_item_id"]),
        "first_event": datetime.fromtimestamp(row["first_event"], UTC).isoformat(),
        "last_event": datetime.fromtimestamp(row["last_event"], UTC).isoformat(),
        "content_hash": f"xxhash64-sum:{int(row['hash_sum']) % 2**64:016x}",
        "days": int(daily["days"]),
        "median_daily_rows": float(daily["rows"]),
        "median_daily_users": float(daily["users"]),
    }


def check_als_ids(snapshot: dict[str, Any]) -> None:
    from jobs.scoring.transforms import MAX_ALS_ID

    for kind in ("user", "item"):
        largest = snapshot[f"max_{kind}_id"]
        if largest > MAX_ALS_ID:
            raise InputError(
                f"{kind} id {largest} is too large for ALS, which needs ids up to {MAX_ALS_ID}"
            )


def fit_als(interactions: DataFrame, params: AlsParams, description: str = "ALS fit"
            ) -> ALSModel:
    """ALS fitted on ``interactions``, its Spark stages shown as ``description`` (keep it short).

    Spark runs every iteration inside the one ``fit``; what can be shown is
    the stages they are made of (for implicit ALS, a Spark job or two per
    iteration), as they run.
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    als = ALS(
        userCol="user_id", itemCol="item_id", ratingCol="rating",
        implicitPrefs=True, rank=params.rank, regParam=params.reg_param, alpha=params.alpha,
        maxIter=params.max_iter, seed=params.seed, coldStartStrategy="drop",
    )
    training = interactions.select(
        F.col("user_id").cast("int"), F.col("item_id").cast("int"), "rating"
    )
    with spark_progress(interactions.sparkSession, description):
        return als.fit(training)


if __name__ == "__main__":
    sys.exit(main())
