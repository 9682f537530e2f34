"""Pure Spark transforms shared by the training and scoring jobs.

Each takes DataFrames (and plain values) and returns a DataFrame; none reads
the clock, collects, or writes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

INTERACTIONS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), nullable=False),
    T.StructField("item_id", T.LongType(), nullable=False),
    T.StructField("rating", T.DoubleType(), nullable=False),
    T.StructField("event_at", T.LongType(), nullable=False),
])

RECOMMENDATIONS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), nullable=False),
    T.StructField("items", T.ArrayType(T.LongType(), containsNull=False), nullable=False),
    T.StructField("scores", T.ArrayType(T.FloatType(), containsNull=False), nullable=False),
])

# Users are scored in blocks so that one block's score matrix stays near this size.
SCORE_BLOCK_BYTES = 64 * 1024 * 1024
# ALS keeps ids as 32-bit integers.
MAX_ALS_ID = 2**31 - 1


def events_before(interactions: DataFrame, end_seconds: int) -> DataFrame:
    """Interactions whose event time is before ``end_seconds`` (Unix time)."""
    return interactions.where(F.col("event_at") < F.lit(end_seconds))


def time_split(interactions: DataFrame, cutoff_seconds: int) -> tuple[DataFrame, DataFrame]:
    """Split at a moment: training events before it, holdout events from it on.

    The holdout keeps only users and items that the training part knows, since
    a model can only rank those; holdout pairs already seen in training are
    dropped, because scoring excludes seen items.
    """
    train = events_before(interactions, cutoff_seconds)
    later = interactions.where(F.col("event_at") >= F.lit(cutoff_seconds))
    known_users = train.select("user_id").distinct()
    known_items = train.select("item_id").distinct()
    seen_pairs = train.select("user_id", "item_id").distinct()
    holdout = (
        later.join(known_users, "user_id", "left_semi")
        .join(known_items, "item_id", "left_semi")
        .join(seen_pairs, ["user_id", "item_id"], "left_anti")
        .select("user_id", "item_id")
        .distinct()
    )
    return train, holdout


def seen_items(interactions: DataFrame) -> DataFrame:
    """One row per user: ``user_id`` and ``seen``, the distinct items they touched."""
    return interactions.groupBy("user_id").agg(
        F.array_distinct(F.collect_list("item_id")).alias("seen")
    )


def item_popularity(interactions: DataFrame) -> DataFrame:
    """``item_id`` and ``score``: how many distinct users interacted with the item."""
    return interactions.groupBy("item_id").agg(
        F.countDistinct("user_id").cast("float").alias("score")
    )


def most_popular(interactions: DataFrame, k: int) -> DataFrame:
    """The ``k`` most popular items, best first, as ``item_id`` and ``score``.

    Ties go to the lower item id. The order is the rank: keep it when collecting.
    """
    return (
        item_popularity(interactions)
        .orderBy(F.col("score").desc(), F.col("item_id").asc())
        .limit(k)
    )


def top_k_unseen(
    users: DataFrame, item_ids: np.ndarray, item_factors: np.ndarray, k: int
) -> DataFrame:
    """Exact top-``k`` items per user by dot product, excluding items already seen.

    ``users`` has ``user_id``, ``features`` (array of floats) and ``seen``
    (array of item ids, may be null). The item matrix travels to every task
    with the function. Returns :data:`RECOMMENDATIONS_SCHEMA` rows, best first;
    a user who has seen nearly the whole catalogue gets fewer than ``k`` items.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    order = np.argsort(item_ids, kind="stable")
    sorted_ids = np.asarray(item_ids, dtype=np.int64)[order]
    sorted_factors = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32)[order])
    block_rows = max(1, SCORE_BLOCK_BYTES // (4 * max(1, len(sorted_ids))))

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for start in range(0, len(batch), block_rows):
                yield score_block(batch.iloc[start:start + block_rows], sorted_ids,
                                  sorted_factors, k)

    return users.select("user_id", "features", "seen").mapInPandas(score, RECOMMENDATIONS_SCHEMA)


def score_block(
    block: pd.DataFrame, sorted_ids: np.ndarray, sorted_factors: np.ndarray, k: int
) -> pd.DataFrame:
    """Score one block of users against all items; see :func:`top_k_unseen`."""
    user_matrix = np.stack(block["features"].to_numpy()).astype(np.float32, copy=False)
    scores = user_matrix @ sorted_factors.T
    for row, seen in enumerate(block["seen"].to_numpy()):
        if seen is not None and len(seen):
            scores[row, positions_of(sorted_ids, np.asarray(seen, dtype=np.int64))] = -np.inf
    take = min(k, scores.shape[1])
    if take < scores.shape[1]:
        candidates = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        candidates = np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    # Best score first; equal scores in item id order, so results are repeatable.
    ranked = np.lexsort((candidates, -candidate_scores), axis=1)
    best = np.take_along_axis(candidates, ranked, axis=1)
    best_scores = np.take_along_axis(candidate_scores, ranked, axis=1)
    items, item_scores = [], []
    for row_items, row_scores in zip(best, best_scores, strict=True):
        keep = np.isfinite(row_scores)
        items.append(sorted_ids[row_items[keep]])
        item_scores.append(row_scores[keep].astype(np.float32))
    return pd.DataFrame({
        "user_id": block["user_id"].to_numpy(dtype=np.int64),
        "items": items,
        "scores": item_scores,
    })


def positions_of(sorted_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indexes in ``sorted_ids`` of the ``wanted`` ids it contains (others are skipped)."""
    if len(sorted_ids) == 0:
        return np.empty(0, dtype=np.int64)
    positions = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return positions[sorted_ids[positions] == wanted]


def prediction_checks(recommendations: DataFrame, interactions: DataFrame) -> DataFrame:
    """Per user: what the prediction contract checks, computed from the lists themselves.

    Columns: user_id, n_items, n_distinct, n_seen (items the user had already
    interacted with), scores_finite, scores_sorted (best first).
    """
    seen_pairs = interactions.select("user_id", "item_id").distinct()
    recommended = recommendations.select("user_id", F.explode("items").alias("item_id"))
    overlap = (recommended.join(seen_pairs, ["user_id", "item_id"])
               .groupBy("user_id").agg(F.count("*").alias("n_seen")))
    finite = F.forall("scores", lambda s: ~F.isnan(s) & (F.abs(s) != F.lit(float("inf"))))
    return (
        recommendations.select(
            "user_id",
            F.size("items").alias("n_items"),
            F.size(F.array_distinct("items")).alias("n_distinct"),
            F.coalesce(finite, F.lit(True)).alias("scores_finite"),
            (F.col("scores") == F.sort_array("scores", asc=False)).alias("scores_sorted"),
        )
        .join(overlap, "user_id", "left")
        .fillna(0, subset=["n_seen"])
        .select("user_id", "n_items", "n_distinct", F.col("n_seen").cast("long"),
                "scores_finite", "scores_sorted")
    )


def item_exposure(recommendations: DataFrame) -> DataFrame:
    """``item_id`` and ``users``: how many users each recommended item was shown to."""
    return (recommendations.select("user_id", F.explode("items").alias("item_id"))
            .groupBy("item_id").agg(F.countDistinct("user_id").alias("users")))
