"""The training job: implicit-feedback ALS on interactions up to a date.

``main(argv)`` is what ``spark-submit jobs/train.py`` and ``batchscore train``
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

from jobs.config import Settings
from jobs.data.load import InputError
from jobs.data.store import day_end, export_interactions
from jobs.db import engine_for, ensure_schema
from jobs.provenance import code_version, current_user
from jobs.registry import ModelVersion, NewModel, register
from jobs.score import MODEL_METADATA_FILE

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

# Chosen on the holdout of the sample data set (see README, "Choosing the defaults").
DEFAULT_RANK = 32
DEFAULT_REG_PARAM = 1.0
DEFAULT_ALPHA = 2.0
DEFAULT_MAX_ITER = 10
DEFAULT_HOLDOUT_DAYS = 7
DEFAULT_EVAL_K = 10
# Enough users for stable metrics; evaluation stays cheap at any scale.
MAX_EVAL_USERS = 20_000


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


@dataclass(frozen=True)
class Evaluation:
    model: dict[str, float]
    popularity: dict[str, float]

    @property
    def beats_popularity(self) -> bool:
        return self.model["ndcg_at_k"] > self.popularity["ndcg_at_k"]


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
    for name in ("rank", "max_iter", "holdout_days", "eval_k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.alpha <= 0 or args.reg_param < 0:
        parser.error("--alpha must be positive and --reg-param not negative")
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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(sys.argv[1:] if argv is None else argv)
    version = run(config)
    print(f"registered model version {version.version} ({version.status})")
    return 0


def run(config: TrainConfig, spark: SparkSession | None = None) -> ModelVersion:
    """Train, evaluate, save and register one model version."""
    from jobs.spark import spark_session

    engine = engine_for(config.database_url)
    ensure_schema(engine)
    work_dir = config.home / "staging" / f"train-{config.as_of.isoformat()}"
    export_path = work_dir / "interactions.csv"
    # Extract
    rows = export_interactions(engine, config.as_of, export_path)
    if rows == 0:
        raise InputError(f"no interactions up to {config.as_of}; load or generate data first")
    spark = spark or spark_session("batchscore-train", config.spark_master)
    try:
        interactions = read_interactions(spark, export_path).cache()
        snapshot = data_snapshot(interactions)
        check_als_ids(snapshot)
        # Transform
        cutoff = int(day_end(config.as_of - timedelta(days=config.holdout_days)).timestamp())
        logger.info("fitting ALS on events before the %d-day holdout", config.holdout_days)
        evaluation = evaluate(interactions, cutoff, config.als, config.eval_k)
        logger.info("holdout NDCG@%d: ALS %.4f, popularity %.4f", config.eval_k,
                    evaluation.model["ndcg_at_k"], evaluation.popularity["ndcg_at_k"])
        logger.info("refitting ALS on all %d interactions up to %s", rows, config.as_of)
        model = fit_als(interactions, config.als)
        # Load
        artifact = config.home / "models" / f"als-{config.as_of.isoformat()}-{uuid.uuid4().hex[:8]}"
        model.save(str(artifact))
        interactions.unpersist()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    new_model = NewModel(
        created_by=current_user(),
        trained_as_of=config.as_of,
        params={**asdict(config.als), "implicit_prefs": True,
                "holdout_days": config.holdout_days, "eval_k": config.eval_k},
        metrics={"als": evaluation.model, "popularity": evaluation.popularity,
                 "beats_popularity": evaluation.beats_popularity},
        data_snapshot=snapshot,
        code_version=code_version(),
        artifact_uri=artifact.as_uri(),
    )
    version = register(engine, new_model, promote_if_first=config.promote_if_first)
    (artifact / MODEL_METADATA_FILE).write_text(json.dumps({"model_version": version.version}))
    return version


def read_interactions(spark: SparkSession, path: Path) -> DataFrame:
    from jobs.transforms import INTERACTIONS_SCHEMA

    return spark.read.csv(str(path), schema=INTERACTIONS_SCHEMA, header=False, mode="FAILFAST")


def data_snapshot(interactions: DataFrame) -> dict[str, Any]:
    """Row count, id ranges, date range and an order-independent content hash."""
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
    return {
        "rows": int(row["rows"]),
        "users": int(row["users"]),
        "items": int(row["items"]),
        "max_user_id": int(row["max_user_id"]),
        "max_item_id": int(row["max_item_id"]),
        "first_event": datetime.fromtimestamp(row["first_event"], UTC).isoformat(),
        "last_event": datetime.fromtimestamp(row["last_event"], UTC).isoformat(),
        "content_hash": f"xxhash64-sum:{int(row['hash_sum']) % 2**64:016x}",
    }


def check_als_ids(snapshot: dict[str, Any]) -> None:
    from jobs.transforms import MAX_ALS_ID

    for kind in ("user", "item"):
        largest = snapshot[f"max_{kind}_id"]
        if largest > MAX_ALS_ID:
            raise InputError(
                f"{kind} id {largest} is too large for ALS, which needs ids up to {MAX_ALS_ID}"
            )


def fit_als(interactions: DataFrame, params: AlsParams) -> ALSModel:
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
    return als.fit(training)


def item_matrix(model: ALSModel) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and their factor matrix, collected to the driver."""
    frame = model.itemFactors.toPandas()
    ids = frame["id"].to_numpy(dtype=np.int64)
    factors = (np.stack(frame["features"].to_numpy()).astype(np.float32) if len(frame)
               else np.empty((0, model.rank), dtype=np.float32))
    return ids, factors


def evaluate(interactions: DataFrame, cutoff_seconds: int, params: AlsParams,
             k: int) -> Evaluation:
    """Fit on events before the cutoff, and rank the held-out events after it."""
    from pyspark.sql import functions as F

    from jobs.metrics import evaluate as ranking_metrics
    from jobs.transforms import item_popularity, seen_items, time_split, top_k_unseen

    train, holdout = time_split(interactions, cutoff_seconds)
    relevant = holdout.groupBy("user_id").agg(F.collect_set("item_id").alias("items"))
    relevant_rows = relevant.orderBy("user_id").limit(MAX_EVAL_USERS).collect()
    if not relevant_rows:
        raise InputError(
            "the holdout is empty: no known user has a new event in the last days before "
            "--as-of; use a smaller --holdout-days or more data"
        )
    truth = {int(row["user_id"]): {int(i) for i in row["items"]} for row in relevant_rows}
    catalog = train.select("item_id").distinct().count()
    eval_users = interactions.sparkSession.createDataFrame(
        [(user,) for user in truth], "user_id long"
    )
    seen = seen_items(train).join(eval_users, "user_id", "left_semi")

    model = fit_als(train, params)
    ids, factors = item_matrix(model)
    users = (model.userFactors.withColumnRenamed("id", "user_id")
             .withColumn("user_id", F.col("user_id").cast("long"))
             .join(seen, "user_id"))
    als_recs = collect_items(top_k_unseen(users, ids, factors, k))

    popularity = item_popularity(train).toPandas()
    pop_users = seen.withColumn("features", F.array(F.lit(1.0).cast("float")))
    pop_recs = collect_items(top_k_unseen(
        pop_users,
        popularity["item_id"].to_numpy(dtype=np.int64),
        popularity["score"].to_numpy(dtype=np.float32).reshape(-1, 1),
        k,
    ))
    return Evaluation(
        model=ranking_metrics(als_recs, truth, k, catalog),
        popularity=ranking_metrics(pop_recs, truth, k, catalog),
    )


def collect_items(recommendations: DataFrame) -> dict[int, list[int]]:
    return {int(row["user_id"]): [int(i) for i in row["items"]]
            for row in recommendations.select("user_id", "items").collect()}


if __name__ == "__main__":
    sys.exit(main())
