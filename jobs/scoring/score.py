"""The scoring job: every active user x the serving model -> top-K unseen items.

``main(argv)`` is what ``spark-submit jobs/scoring/score.py`` and ``batchscore nightly``
run. It reads the interaction history's days up to the run date (Parquet,
:mod:`jobs.data.history`), keeps events up to the end of the run date, scores
every user the model knows with exact dot products, and writes
``recommendations/`` (Parquet: user_id, items, scores, redis_value, the list as
Redis will hold it, and the prediction contract's per-user checks,
:data:`jobs.scoring.checks.CHECK_COLUMNS`), ``popular.parquet`` (the fallback
list) and ``stats.json`` to the output folder, in one pass over the users: the
checks and the run's totals are computed by the tasks that write the lists, and
nothing per user is collected. It touches no database: publishing is a separate
step.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.data.store import day_end
from jobs.platform.config import DEFAULT_TOP_K
from jobs.scoring.model import MODEL_METADATA_FILE

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from jobs.scoring.model import ScoringModel

logger = logging.getLogger(__name__)

RECOMMENDATIONS_DIR = "recommendations"
POPULAR_FILE = "popular.parquet"
# The users a canary model scored (user_id), when the run has a canary.
CANARY_USERS_FILE = "canary_users.parquet"
STATS_FILE = "stats.json"
# Users a scoring task scores, about, when a model has more than this per core: at
# 10,000,000 users on 2 cores, 20 tasks of about half a minute each, not 2 of four and
# a half minutes (progress counts tasks as they end).
USERS_PER_TASK = 500_000


@dataclass(frozen=True)
class ScoreConfig:
    # The interaction history's root (jobs.data.history): a path or a Hadoop URI.
    interactions: str
    run_date: date
    model_path: Path
    output: Path
    k: int = DEFAULT_TOP_K
    spark_master: str | None = None
    # A canary model scores the users jobs.contracts.canary assigns to it.
    canary_model_path: Path | None = None
    canary_fraction: float | None = None


@dataclass(frozen=True)
class ScoreStats:
    active_users: int
    scored_users: int
    users_without_factors: int
    catalog_items: int
    k: int
    model_version: int | None
    # The totals the prediction contract's summary is computed from
    # (jobs.contracts.predictions.ExposureTotals and HistoryTotals).
    exposure: dict[str, float]
    history: dict[str, float]
    canary_users: int = 0

    @classmethod
    def read(cls, output: Path) -> ScoreStats:
        return cls(**json.loads((output / STATS_FILE).read_text()))


def parse_args(argv: list[str]) -> ScoreConfig:
    parser = argparse.ArgumentParser(prog="score", description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", required=True,
                        help="the interaction history: a folder or Hadoop file system URI of "
                             "Parquet files by event_date=YYYY-MM-DD (jobs.data.history)")
    parser.add_argument("--run-date", type=date.fromisoformat, required=True)
    parser.add_argument("--model-path", type=Path, required=True,
                        help="a saved model of either family (jobs.scoring.model)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--k", type=int, default=DEFAULT_TOP_K)
    parser.add_argument("--spark-master", default=None)
    # Empty values mean no canary, so a scheduler can always pass both options.
    parser.add_argument("--canary-model-path", type=lambda text: Path(text) if text else None,
                        default=None, help="a saved model serving the canary's users")
    parser.add_argument("--canary-fraction", type=lambda text: float(text) if text else None,
                        default=None, help="share of users the canary model serves (0 < F < 1)")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    if (args.canary_model_path is None) != (args.canary_fraction is None):
        parser.error("--canary-model-path and --canary-fraction go together")
    if args.canary_fraction is not None and not 0 < args.canary_fraction < 1:
        parser.error("--canary-fraction must be between 0 and 1 (exclusive)")
    return ScoreConfig(interactions=args.interactions, run_date=args.run_date,
                       model_path=args.model_path, output=args.output, k=args.k,
                       spark_master=args.spark_master,
                       canary_model_path=args.canary_model_path,
                       canary_fraction=args.canary_fraction)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = run(parse_args(sys.argv[1:] if argv is None else argv))
    print(json.dumps(asdict(stats)))
    return 0


def run(config: ScoreConfig, spark: SparkSession | None = None) -> ScoreStats:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.data.history import read_events
    from jobs.platform.progress import spark_progress
    from jobs.platform.spark import spark_session
    from jobs.scoring.checks import TotalsParam, run_totals
    from jobs.scoring.model import load_model
    from jobs.scoring.output import write_scored
    from jobs.scoring.transforms import (
        Checked,
        catalog_popularity,
        events_before,
        most_popular,
        scoring_input,
        seen_items,
        seen_popularity,
        split_canary,
        task_scorer,
    )

    spark = spark or spark_session("batchscore-score", config.spark_master)
    # Extract
    end = int(day_end(config.run_date).timestamp())
    # Scoring needs who touched what: the other columns are not read.
    interactions = events_before(read_events(spark, config.interactions, config.run_date),
                                 end).select("user_id", "item_id")
    with spark_progress(spark, "scoring: the model"):
        model = load_model(config.model_path)
        partitions = scoring_tasks(spark.sparkContext.defaultParallelism, model.user_count())
    item_ids = model.item_ids
    # Transform
    # The events are shuffled once, by user, into one partition per scoring task, and
    # the model's user factors join them in place.
    seen = seen_items(interactions.repartition(partitions, "user_id")).cache()

    def users_of(scoring: ScoringModel, users_seen: DataFrame) -> DataFrame:
        return scoring.users(users_seen, partitions=partitions)

    base_seen, canary_seen = (split_canary(seen, config.canary_fraction)
                              if config.canary_model_path else (seen, None))
    # Each scoring task reports its totals here, once: see jobs.scoring.checks.
    totals = spark.sparkContext.accumulator({}, TotalsParam())
    with spark_progress(spark, "scoring: item popularity"):
        popularity = seen_popularity(seen).toPandas()
    ranking = catalog_popularity(popularity, item_ids)
    # Load
    logger.info("scoring users against %d items, top %d, in %d tasks", len(item_ids),
                config.k, partitions)
    config.output.mkdir(parents=True, exist_ok=True)
    output = config.output / RECOMMENDATIONS_DIR
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir()
    canary_users = 0
    if config.canary_model_path is not None and canary_seen is not None:
        with spark_progress(spark, "scoring: canary"):
            canary_model = load_model(config.canary_model_path)
            canary_ranking = catalog_popularity(popularity, canary_model.item_ids)
            written = write_scored(scoring_input(users_of(canary_model, canary_seen)),
                                   task_scorer(spark.sparkContext, canary_model.item_ids,
                                               canary_model.item_matrix, config.k,
                                               Checked(canary_ranking, totals, "canary"),
                                               canary_model.item_item),
                                   output, "canary")
        canary = pa.concat_tables(
            [pq.read_table(output / name, columns=["user_id"]) for name in written]
        ) if written else pa.table({"user_id": pa.array([], pa.int64())})
        pq.write_table(canary, config.output / CANARY_USERS_FILE)
        canary_users = canary.num_rows
        logger.info("canary: %d users scored by %s", canary_users, config.canary_model_path)
    with spark_progress(spark, "scoring: all users"):
        write_scored(scoring_input(users_of(model, base_seen)),
                     task_scorer(spark.sparkContext, item_ids, model.item_matrix, config.k,
                                 Checked(ranking, totals, "model"), model.item_item),
                     output, "model")
    ranked = most_popular(popularity, config.k)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    ranked.to_parquet(config.output / POPULAR_FILE, index=False)
    tallied = run_totals(totals.value)
    exposure, history = asdict(tallied.exposure()), asdict(tallied.history())
    scored = tallied.users
    active = seen.count()
    stats = ScoreStats(active_users=active, scored_users=scored,
                       users_without_factors=active - scored,
                       catalog_items=len(item_ids), k=config.k,
                       model_version=model_version_of(config.model_path),
                       exposure=exposure, history=history,
                       canary_users=canary_users)
    (config.output / STATS_FILE).write_text(json.dumps(asdict(stats)))
    seen.unpersist()
    logger.info("scored %d of %d active users (%d unknown to the model)",
                scored, active, active - scored)
    return stats


def scoring_tasks(cores: int, users: int | None) -> int:
    """How many tasks score the users: one per core, or as many more per core as keep
    each task near :data:`USERS_PER_TASK` of the model's ``users`` (unknown: None), so
    that a long scoring shows its progress task by task."""
    if users is None:
        return cores
    return cores * max(1, -(-users // (cores * USERS_PER_TASK)))


def read_checks(output: Path) -> pd.DataFrame:
    """The per-user checks the scoring job wrote beside the lists in ``output``: only
    their narrow columns are read."""
    import pyarrow.dataset as ds

    from jobs.scoring.checks import CHECK_COLUMNS

    dataset = ds.dataset(str(output / RECOMMENDATIONS_DIR), format="parquet")
    missing = sorted(set(CHECK_COLUMNS) - set(dataset.schema.names))
    if missing:
        raise ValueError(f"{output / RECOMMENDATIONS_DIR} has no column {', '.join(missing)}:"
                         " score the date again with this version of the scoring job")
    return dataset.to_table(columns=CHECK_COLUMNS).to_pandas()


def model_version_of(model_path: Path) -> int | None:
    """The registered version recorded in a model's folder, if any."""
    metadata = model_path / MODEL_METADATA_FILE
    if not metadata.exists():
        return None
    return int(json.loads(metadata.read_text())["model_version"])


if __name__ == "__main__":
    sys.exit(main())
