"""``make bench-quality``: how good each family's lists are, and what EASE costs at scale.

Two parts:

- :func:`compare_families`: on a data set split by time per user (each user's
  latest fifth of events held out), every family at its defaults and tuned
  within a budget, and the popularity baseline, side by side:
  NDCG@10, recall@10, IPS NDCG@10, coverage and training time, with each
  model's NDCG as a ratio to popularity's.
- :func:`ease_catalogue`: fitting EASE on a synthetic catalogue of a given size
  (20,000 items by default): the Gram matrix, the solve, and the peak memory of
  the process tree (driver, Spark's JVM and its workers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench.headroom import PeakMemory

logger = logging.getLogger(__name__)

EVAL_K = 10


@dataclass(frozen=True)
class CatalogueCost:
    items: int
    users: int
    events: int
    gram_seconds: float
    solve_seconds: float
    peak_bytes: int


def ease_catalogue(spark: Any, work: Path, items: int = 20_000, users: int = 100_000,
                   per_user: int = 40, seed: int = 5) -> CatalogueCost:
    """Fit EASE over ``items`` items on synthetic events (``per_user`` distinct items per
    user, drawn with a long-tailed popularity): time the Gram matrix and the solve."""
    from pyspark.sql import functions as F

    from jobs.training.ease import gram_matrix, solve

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    weights /= weights.sum()
    # Drawn with replacement, then made distinct per user: a few users get fewer items.
    chosen = rng.choice(items, size=(users, per_user), p=weights) + 1
    item_ids = np.arange(1, items + 1, dtype=np.int64)
    seen = spark.createDataFrame(
        [(user + 1, row.tolist()) for user, row in enumerate(chosen)],
        "user_id long, seen array<long>").withColumn("seen", F.array_distinct("seen")).cache()
    events = seen.select(F.sum(F.size("seen"))).first()[0]
    folder = work / "gram"
    folder.mkdir(parents=True, exist_ok=True)
    with PeakMemory() as peak:
        started = time.perf_counter()
        gram = gram_matrix(seen, item_ids, folder)
        gram_seconds = time.perf_counter() - started
        started = time.perf_counter()
        solve(gram, 200.0)
        solve_seconds = time.perf_counter() - started
    seen.unpersist()
    return CatalogueCost(items=items, users=users, events=int(events),
                         gram_seconds=gram_seconds, solve_seconds=solve_seconds,
                         peak_bytes=peak.peak)


def print_catalogue(cost: CatalogueCost) -> None:
    print(f"EASE over {cost.items:,} items ({cost.users:,} users, {cost.events:,} events): "
          f"Gram matrix {cost.gram_seconds:.1f} s, solve {cost.solve_seconds:.1f} s, "
          f"peak memory of the process tree {cost.peak_bytes / 2**30:.1f} GiB", flush=True)


@dataclass(frozen=True)
class Scored:
    """One model's holdout metrics (the candidate's and popularity's) and fitting time."""

    name: str
    metrics: dict[str, float]
    popularity: dict[str, float]
    seconds: float


def score_params(train: Any, holdout_pairs: Any, params: Any, work: Path, name: str,
                 extra_seconds: float = 0.0) -> Scored:
    """Fit ``params``'s family on ``train`` and rank the holdout with it and popularity."""
    from jobs.training import holdout
    from jobs.training.train import fit

    started = time.perf_counter()
    model = fit(train, params, work, description=f"bench: {name}")
    seconds = time.perf_counter() - started + extra_seconds
    evaluation = holdout.evaluate(train, holdout_pairs, model.scoring, EVAL_K)
    return Scored(name=name, metrics=evaluation.metrics[holdout.CANDIDATE],
                  popularity=evaluation.metrics["popularity"], seconds=seconds)


# The sample data set the defaults were chosen on (README, "Choosing the defaults").
SYNTHETIC = ["--users", "3000", "--items", "800", "--days", "60", "--seed", "7"]
# Each user's latest fifth of events is held out (a split by time per user); tuning
# validates on each user's latest fifth of the training part, split the same way.
HOLDOUT_SHARE = 0.2


@dataclass(frozen=True)
class DataSet:
    """A data set to compare the families on: its name, and the ``batchscore data``
    arguments that put it into an empty deployment."""

    name: str
    load: list[str]


def compare_families(spark: Any, data: DataSet, work: Path, budget_minutes: float
                     ) -> list[Scored]:
    """``data`` loaded through the CLI into a deployment of its own (embedded servers
    under ``work``, stopped after), split by time, and every family ranked on it."""
    import os
    import subprocess
    import sys

    from jobs.data.store import newest_event_date
    from jobs.platform import services
    from jobs.platform.db import engine_for

    def cli(argv: list[str]) -> int:
        return subprocess.run([sys.executable, "-m", "jobs", *argv]).returncode
    from jobs.data import history
    from jobs.platform.config import Settings
    from jobs.training.ease import EaseParams
    from jobs.training.train import AlsParams, read_training_set

    home = work / f"home-{data.name}"
    saved = {name: os.environ.get(name) for name in
             ("BATCHSCORE_HOME", "BATCHSCORE_DATABASE_URL", "BATCHSCORE_REDIS_URL",
              "BATCHSCORE_HISTORY_URI")}
    os.environ["BATCHSCORE_HOME"] = str(home)
    for name in saved:
        if name != "BATCHSCORE_HOME":
            os.environ.pop(name, None)
    try:
        if cli(["data", *data.load]) != 0:
            raise RuntimeError(f"batchscore data {' '.join(data.load)} failed")
        settings = Settings.from_env()
        engine = engine_for(services.database_url(settings, services.WRITER), settings.names)
        as_of = newest_event_date(engine)
        where = history.root(engine, None, home)
        snapshot = work / f"{data.name}.parquet"
        rows = history.write_snapshot(where, as_of, snapshot)
        engine.dispose()
        interactions = read_training_set(spark, snapshot)
        train, holdout_pairs = split_per_user(interactions, HOLDOUT_SHARE)
        train, holdout_pairs = train.cache(), holdout_pairs.cache()
        print(f"{data.name}: {rows:,} events up to {as_of}, each user's last "
              f"{HOLDOUT_SHARE:.0%} held out", flush=True)
        results = []
        for name, params in (("als (defaults)", AlsParams()), ("ease (defaults)", EaseParams())):
            results.append(score_params(train, holdout_pairs, params, work, name))
            print(f"  {name}: NDCG@{EVAL_K} {results[-1].metrics['ndcg_at_k']:.4f}", flush=True)
        results.extend(tuned(train, holdout_pairs, work, budget_minutes))
        train.unpersist()
        holdout_pairs.unpersist()
        return results
    finally:
        cli(["services", "stop"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def split_per_user(interactions: Any, share: float) -> tuple[Any, Any]:
    """Split by time per user: each user's latest ``share`` of events (at least one, for
    a user with two or more) held out, the rest to train on. As training's own split,
    the holdout keeps (user, item) pairs whose item the training part knows and that
    the user had not touched before."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_user = Window.partitionBy("user_id").orderBy("event_at", "item_id")
    ranked = interactions.withColumn("position", F.row_number().over(by_user)).withColumn(
        "events", F.count("*").over(Window.partitionBy("user_id")))
    held = F.col("position") > F.greatest(
        F.lit(1), F.floor(F.col("events") * (1 - share))).cast("long")
    train = ranked.where(~held).drop("position", "events")
    later = ranked.where(held)
    holdout = (later.join(train.select("item_id").distinct(), "item_id", "left_semi")
               .join(train.select("user_id", "item_id").distinct(), ["user_id", "item_id"],
                     "left_anti")
               .select("user_id", "item_id").distinct())
    return train, holdout


def per_user_validation(train: Any, share: float) -> Any:
    """A tuning validation split as the benchmark's test is, from ``train`` alone: each
    user's latest ``share`` of their training events (:func:`split_per_user`)."""
    from jobs.training.tune import validation_from

    fit_events, pairs = split_per_user(train, share)
    return validation_from(fit_events, pairs,
                           f"each user's latest {share:.0%} of the training part",
                           {"split": "per user", "share": share})


def tuned(train: Any, holdout_pairs: Any, work: Path, budget_minutes: float
          ) -> list[Scored]:
    """Each family tuned within half of ``budget_minutes`` on a per-user validation split
    of ``train`` (:func:`per_user_validation`; the holdout is never seen), then fitted on
    ``train`` and ranked on the holdout; its time is the search's plus the fit's."""
    from jobs.platform.config import DEFAULT_EASE_MAX_ITEMS
    from jobs.training.ease import EaseParams
    from jobs.training.train import AlsParams
    from jobs.training.tune import TuneConfig, search

    if budget_minutes <= 0:
        return []
    results = []
    started = time.perf_counter()
    validation = per_user_validation(train, HOLDOUT_SHARE)
    # Each search would have split the training part itself: its time counts for both.
    split_seconds = time.perf_counter() - started
    try:
        searches = [(family, search(validation, EVAL_K,
                                    TuneConfig(budget_minutes=budget_minutes / 2,
                                               family=family),
                                    "ndcg_at_k", {family: defaults}, DEFAULT_EASE_MAX_ITEMS,
                                    work))
                    for family, defaults in (("als", AlsParams()), ("ease", EaseParams()))]
    finally:
        validation.release()
    for family, found in searches:
        if found.params is None:
            print(f"  {family} (tuned): no trial completed within the budget", flush=True)
            continue
        name = f"{family} (tuned)"
        results.append(score_params(train, holdout_pairs, found.params, work, name,
                                    extra_seconds=found.report["seconds"] + split_seconds))
        print(f"  {name}: {found.params}, {len(found.report['trials'])} trials in "
              f"{found.report['seconds']:.0f} s; NDCG@{EVAL_K} "
              f"{results[-1].metrics['ndcg_at_k']:.4f}", flush=True)
    return results


def print_families(name: str, results: list[Scored]) -> None:
    popularity = results[0].popularity
    base = popularity["ndcg_at_k"]
    print(f"\n{name}: holdout @{EVAL_K}")
    print(f"  {'model':<22} {'NDCG':>7} {'recall':>7} {'IPS NDCG':>9} {'coverage':>9} "
          f"{'train s':>8} {'NDCG vs popularity':>19}")
    rows = [("popularity", popularity, 0.0), *((r.name, r.metrics, r.seconds) for r in results)]
    for label, metrics, seconds in rows:
        print(f"  {label:<22} {metrics['ndcg_at_k']:>7.4f} {metrics['recall_at_k']:>7.4f} "
              f"{metrics.get('ips_ndcg_at_k', float('nan')):>9.4f} "
              f"{metrics['catalog_coverage']:>9.3f} {seconds:>8.1f} "
              f"{metrics['ndcg_at_k'] / base if base else float('nan'):>18.2f}x")


def run_quality(work: Path, cache: Path, dataset: Path | None, budget_minutes: float,
                ease_items: int) -> None:
    """The whole of ``make bench-quality``: the synthetic sample's and MovieLens 100K's
    tables (``dataset``: a RecBole ``ml-100k.inter`` file already at hand; by default
    fetched into ``cache``), then EASE's cost at ``ease_items`` items (0: not measured)."""
    from jobs.bench.datasets import LOAD_OPTIONS, movielens_100k
    from jobs.bench.servers import bench_spark

    real = movielens_100k(cache) if dataset is None else dataset
    sets = [DataSet("synthetic", ["generate", *SYNTHETIC]),
            DataSet("movielens-100k", ["load", str(real), *LOAD_OPTIONS])]
    spark = bench_spark("batchscore-bench-quality")
    try:
        tables = [(data.name, compare_families(spark, data, work, budget_minutes))
                  for data in sets]
        for name, results in tables:
            print_families(name, results)
        if ease_items > 0:
            print()
            print_catalogue(ease_catalogue(spark, work, items=ease_items))
    finally:
        spark.stop()
