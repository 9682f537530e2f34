"""Offline evaluation on a time-based holdout, with Spark.

The candidate is fitted on the events before a cutoff and ranks each holdout
user's unseen items; the popularity baseline and the serving model (when one
serves) rank the same users, so the three are compared on equal terms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.data.load import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from jobs.scoring.model import ScoringModel

logger = logging.getLogger(__name__)

# Enough users for stable metrics; evaluation stays cheap at any scale.
MAX_EVAL_USERS = 20_000
# The candidate's name among the models ranked (its metrics, its fairness rows).
CANDIDATE = "model"
# ...under which versions registered before there were two families keep them.
LEGACY_CANDIDATE = "als"


@dataclass(frozen=True)
class Holdout:
    """What the holdout users did: the truth, and what the training part knew."""

    truth: dict[int, set[int]]
    activity: dict[int, int]
    item_popularity: dict[int, int]

    @property
    def catalog(self) -> int:
        return len(self.item_popularity)


@dataclass(frozen=True)
class Evaluation:
    holdout: Holdout
    recommendations: dict[str, dict[int, list[int]]]
    metrics: dict[str, dict[str, float]]
    k: int

    @property
    def beats_popularity(self) -> bool:
        return self.metrics[CANDIDATE]["ndcg_at_k"] > self.metrics["popularity"]["ndcg_at_k"]


def evaluate(train: DataFrame, holdout_pairs: DataFrame, candidate: ScoringModel, k: int,
             serving: ScoringModel | None = None) -> Evaluation:
    """Rank the holdout with the candidate, popularity and (if given) the serving model.

    ``train`` holds the events before the cutoff (the candidate was fitted on
    them); ``holdout_pairs`` the (user_id, item_id) pairs to find after it.
    """
    from pyspark.sql import functions as F

    from jobs.scoring.transforms import item_popularity, seen_items, top_k_unseen
    from jobs.training.metrics import evaluate as ranking_metrics

    relevant = holdout_pairs.groupBy("user_id").agg(F.collect_set("item_id").alias("items"))
    relevant_rows = relevant.orderBy("user_id").limit(MAX_EVAL_USERS).collect()
    if not relevant_rows:
        raise InputError(
            "the holdout is empty: no known user has a new event in the last days before "
            "--as-of; use a smaller --holdout-days or more data"
        )
    truth = {int(row["user_id"]): {int(i) for i in row["items"]} for row in relevant_rows}
    spark = train.sparkSession
    eval_users = spark.createDataFrame([(user,) for user in truth], "user_id long")
    activity = {int(row["user_id"]): int(row["events"]) for row in
                train.join(eval_users, "user_id", "left_semi").groupBy("user_id")
                .agg(F.count("*").alias("events")).collect()}
    popularity = item_popularity(train).toPandas()
    holdout = Holdout(
        truth=truth, activity=activity,
        item_popularity=dict(zip(popularity["item_id"].astype(int),
                                 popularity["score"].astype(int), strict=True)),
    )
    seen = seen_items(train).join(eval_users, "user_id", "left_semi").cache()

    recommendations = {CANDIDATE: recommend(candidate, seen, k)}
    pop_users = seen.withColumn("features", F.array(F.lit(1.0).cast("float")))
    recommendations["popularity"] = items_by_user(top_k_unseen(
        pop_users,
        popularity["item_id"].to_numpy(dtype=np.int64),
        popularity["score"].to_numpy(dtype=np.float32).reshape(-1, 1),
        k,
    ))
    if serving is not None:
        recommendations["serving"] = recommend(serving, seen, k)
    seen.unpersist()
    metrics = {name: ranking_metrics(lists, truth, k, holdout.catalog, holdout.item_popularity)
               for name, lists in recommendations.items()}
    return Evaluation(holdout=holdout, recommendations=recommendations, metrics=metrics, k=k)


def recommend(model: ScoringModel, users_seen: DataFrame, k: int) -> dict[int, list[int]]:
    """Each user's top-``k`` unseen items by ``model`` (users it does not know get none)."""
    return items_by_user(model.ranked_lists(users_seen, k))


def items_by_user(recommendations: DataFrame) -> dict[int, list[int]]:
    return {int(row["user_id"]): [int(i) for i in row["items"]]
            for row in recommendations.select("user_id", "items").collect()}


def lists_with_scores(recommendations: DataFrame) -> dict[int, tuple[list[int], list[float]]]:
    return {int(row["user_id"]): ([int(i) for i in row["items"]],
                                  [float(s) for s in row["scores"]])
            for row in recommendations.select("user_id", "items", "scores").collect()}


def candidate_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The candidate's holdout metrics in a version's ``metrics``, whichever release
    registered it."""
    return metrics[CANDIDATE] if CANDIDATE in metrics else metrics[LEGACY_CANDIDATE]


def summary(evaluation: Evaluation) -> dict[str, Any]:
    """The metrics as stored with a model version."""
    return {**evaluation.metrics, "beats_popularity": evaluation.beats_popularity}
