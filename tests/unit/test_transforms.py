"""The pure Spark transforms, on tiny hand-made inputs."""

import numpy as np
import pytest

from jobs.scoring.transforms import (
    INTERACTIONS_SCHEMA,
    item_exposure,
    most_popular,
    positions_of,
    prediction_checks,
    score_block,
    seen_items,
    time_split,
    top_k_unseen,
)

pytestmark = pytest.mark.spark

ITEM_IDS = np.array([30, 10, 40, 20])  # deliberately unsorted
ITEM_FACTORS = np.array([[2.0, 0.0], [4.0, 0.0], [1.0, 0.0], [3.0, 1.0]], dtype=np.float32)


def as_lists(frame) -> dict[int, list[tuple[int, float]]]:
    return {
        row["user_id"]: list(zip(row["items"], row["scores"], strict=True))
        for row in frame.collect()
    }


def test_top_k_excludes_seen_items_and_ranks_by_dot_product(spark) -> None:
    users = spark.createDataFrame(
        [(1, [1.0, 0.0], [20]), (2, [-1.0, 0.0], None), (3, [0.0, 2.0], [10, 30])],
        "user_id long, features array<float>, seen array<long>",
    )
    result = as_lists(top_k_unseen(users, ITEM_IDS, ITEM_FACTORS, k=2))
    # user 1 scores: 10 -> 4, 20 -> 3 (seen), 30 -> 2, 40 -> 1
    assert result[1] == [(10, 4.0), (30, 2.0)]
    # user 2 scores are negated: 40 -> -1 is best, then 30 -> -2
    assert result[2] == [(40, -1.0), (30, -2.0)]
    # user 3 scores: only item 20 has weight on the second factor (2.0); 40 ties 10/30 at 0
    assert result[3] == [(20, 2.0), (40, 0.0)]


def test_top_k_returns_fewer_items_when_nearly_everything_was_seen(spark) -> None:
    users = spark.createDataFrame(
        [(1, [1.0, 0.0], [10, 20, 30])], "user_id long, features array<float>, seen array<long>"
    )
    assert as_lists(top_k_unseen(users, ITEM_IDS, ITEM_FACTORS, k=3)) == {1: [(40, 1.0)]}


def test_seen_items_unknown_to_the_model_are_ignored() -> None:
    import pandas as pd

    order = np.argsort(ITEM_IDS)
    block = pd.DataFrame({"user_id": [5], "features": [np.array([1.0, 0.0])],
                          "seen": [np.array([99, 10])]})
    out = score_block(block, ITEM_IDS[order], ITEM_FACTORS[order], k=2)
    assert out["items"][0].tolist() == [20, 30]
    assert positions_of(np.array([10, 20, 30]), np.array([30, 5, 10])).tolist() == [2, 0]


def test_equal_scores_are_ordered_by_item_id(spark) -> None:
    users = spark.createDataFrame([(1, [1.0], None)], "user_id long, features array<float>, "
                                                      "seen array<long>")
    ids = np.array([9, 3, 6])
    factors = np.ones((3, 1), dtype=np.float32)
    assert as_lists(top_k_unseen(users, ids, factors, k=3)) == {1: [(3, 1.0), (6, 1.0), (9, 1.0)]}


def test_k_must_be_positive(spark) -> None:
    users = spark.createDataFrame([(1, [1.0], None)], "user_id long, features array<float>, "
                                                      "seen array<long>")
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k_unseen(users, ITEM_IDS, ITEM_FACTORS, k=0)


def events(spark, rows):
    return spark.createDataFrame(rows, INTERACTIONS_SCHEMA)


def test_time_split_keeps_only_new_pairs_of_known_users_and_items(spark) -> None:
    interactions = events(spark, [
        (1, 10, 1.0, 100), (1, 11, 1.0, 150), (2, 10, 1.0, 120),
        (1, 12, 1.0, 200),  # holdout: new pair, but item 12 is unknown before the cutoff
        (1, 10, 1.0, 210),  # holdout: already seen in training
        (2, 11, 1.0, 220),  # holdout: kept
        (3, 10, 1.0, 230),  # holdout: user 3 unknown before the cutoff
    ])
    train, holdout = time_split(interactions, cutoff_seconds=200)
    assert train.count() == 3
    assert sorted(tuple(row) for row in holdout.collect()) == [(2, 11)]


def test_seen_items_and_most_popular(spark) -> None:
    interactions = events(spark, [
        (1, 10, 5.0, 1), (1, 10, 3.0, 2), (1, 20, 1.0, 3),
        (2, 20, 1.0, 4), (3, 20, 2.0, 5), (3, 30, 2.0, 6), (2, 30, 2.0, 7), (4, 5, 1.0, 8),
    ])
    seen = {row["user_id"]: sorted(row["seen"]) for row in seen_items(interactions).collect()}
    assert seen == {1: [10, 20], 2: [20, 30], 3: [20, 30], 4: [5]}
    popular = [tuple(row) for row in most_popular(interactions, k=3).collect()]
    # 20: 3 users; 30: 2 users; 5 and 10: 1 user each, the tie goes to the lower id.
    assert popular == [(20, 3.0), (30, 2.0), (5, 1.0)]


def test_prediction_checks_count_what_the_contract_checks(spark) -> None:
    recommendations = spark.createDataFrame(
        [(1, [10, 20, 30], [0.9, 0.5, 0.1]),  # fine
         (2, [10, 10, 40], [0.2, 0.7, float("nan")]),  # a duplicate, unsorted, NaN
         (3, [50], [1.0])],  # no interactions seen
        "user_id long, items array<long>, scores array<float>")
    seen = spark.createDataFrame([(1, [5, 6]), (2, [40, 10, 7])],
                                 "user_id long, seen array<long>")
    rows = {row["user_id"]: row.asDict() for row in
            prediction_checks(recommendations, seen).collect()}
    assert rows[1] == {"user_id": 1, "n_items": 3, "n_distinct": 3, "n_seen": 0,
                       "scores_finite": True, "scores_sorted": True}
    assert rows[2] == {"user_id": 2, "n_items": 3, "n_distinct": 2, "n_seen": 2,
                       "scores_finite": False, "scores_sorted": False}
    assert rows[3]["n_seen"] == 0 and rows[3]["n_items"] == 1


def test_item_exposure_counts_users_once_per_item(spark) -> None:
    recommendations = spark.createDataFrame(
        [(1, [10, 20], [0.9, 0.5]), (2, [10, 10], [0.3, 0.2]), (3, [30], [1.0])],
        "user_id long, items array<long>, scores array<float>")
    exposure = {row["item_id"]: row["users"] for row in item_exposure(recommendations).collect()}
    assert exposure == {10: 2, 20: 1, 30: 1}
