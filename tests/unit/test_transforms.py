"""The pure Spark transforms, on tiny hand-made inputs."""


import numpy as np
import pandas as pd
import pytest

from jobs.contracts.predictions import history_columns, popularity_ranking
from jobs.scoring.checks import TotalsParam, run_totals
from jobs.scoring.transforms import (
    INTERACTIONS_SCHEMA,
    Checked,
    item_popularity,
    most_popular,
    positions_of,
    score_block,
    seen_items,
    seen_popularity,
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
    popularity = item_popularity(interactions).toPandas()
    popular = list(most_popular(popularity, k=3).itertuples(index=False, name=None))
    # 20: 3 users; 30: 2 users; 5 and 10: 1 user each, the tie goes to the lower id.
    assert popular == [(20, 3.0), (30, 2.0), (5, 1.0)]
    # The scoring job counts the same from the users' distinct lists.
    from_seen = seen_popularity(seen_items(interactions)).toPandas()
    assert dict(zip(from_seen["item_id"], from_seen["score"], strict=True)) == {
        20: 3.0, 30: 2.0, 10: 1.0, 5: 1.0}


def test_a_factor_models_users_join_their_lists_in_as_many_partitions_as_asked(spark) -> None:
    from jobs.scoring.model import ScoringModel

    factors = spark.createDataFrame(
        [(user, [float(user), 0.0]) for user in range(1, 41)],
        "user_id long, features array<float>")
    model = ScoringModel(family="als", item_ids=np.array([10]),
                         item_matrix=np.ones((1, 2), np.float32), user_factors=factors)
    seen = seen_items(events(spark, [(user, 10, 1.0, 1) for user in range(1, 41, 2)]
                             + [(99, 10, 1.0, 1)]).repartition(3, "user_id"))
    users = model.users(seen, partitions=3)
    assert users.rdd.getNumPartitions() == 3
    # Only users with both factors and events; user 99 has no factors.
    rows = {row["user_id"]: (row["features"][0], row["seen"]) for row in users.collect()}
    assert rows == {user: (float(user), [10]) for user in range(1, 41, 2)}


# A catalogue of 8 items with hand-set popularity: ranked 10, 20, 5, 30, then 6, 7,
# 40 (tied, by id), then 50.
POPULARITY = pd.DataFrame({"item_id": [5, 6, 7, 10, 20, 30, 40, 50],
                           "users": [3, 1, 1, 5, 4, 2, 1, 0]})
SEEN = [(1, [5, 6]), (2, [40, 10, 7]), (4, [5, 6, 7, 10, 20, 30, 99])]


def test_scoring_with_checks_adds_them_and_reports_each_tasks_totals(spark) -> None:
    """The nightly's scoring pass: lists, their checks and the run totals at once."""
    users = spark.createDataFrame(
        [(1, [1.0, 0.0], [20]), (2, [-1.0, 0.0], None), (3, [0.0, 2.0], [10, 30])],
        "user_id long, features array<float>, seen array<long>").repartition(2)
    popularity = pd.DataFrame({"item_id": [10, 20, 30, 40], "users": [4, 3, 2, 1]})
    totals = spark.sparkContext.accumulator({}, TotalsParam())
    scored = top_k_unseen(users, ITEM_IDS, ITEM_FACTORS, 2,
                          Checked(popularity_ranking(popularity), totals, "model"))
    rows = {row["user_id"]: row.asDict() for row in scored.collect()}
    # As in test_top_k_excludes_seen_items_and_ranks_by_dot_product: 1 -> 10, 30;
    # 2 -> 40, 30; 3 -> 20, 40. User 1 has seen 20 (popularity rank 1): the baseline's
    # 2nd unseen item is 30 (2 users), below 20 (3 users); the model scores 20 (3.0)
    # above its 2nd, 30 (2.0).
    assert {name: rows[1][name] for name in (
        "n_items", "n_wanted", "n_distinct", "n_seen", "scores_finite", "scores_sorted",
        "n_seen_known", "n_seen_above", "baseline_seen_above")} == {
        "n_items": 2, "n_wanted": 2, "n_distinct": 2, "n_seen": 0, "scores_finite": True,
        "scores_sorted": True, "n_seen_known": 1, "n_seen_above": 1, "baseline_seen_above": 1}
    # User 3 has seen 10 and 30, two of the four: exactly K=2 unseen are left.
    assert (rows[3]["n_wanted"], rows[3]["n_seen_known"]) == (2, 2)
    assert rows[2]["n_seen_known"] == 0
    tallied = run_totals(totals.value)
    assert tallied.users == 3
    # Items shown: 10 (1 user), 30 (2), 40 (2), 20 (1).
    assert dict(zip(tallied.exposure_ids.tolist(), tallied.exposure_users.tolist(),
                    strict=True)) == {10: 1, 20: 1, 30: 2, 40: 2}
    assert tallied.exposure().total == 6
    # Only user 1 has seen something and has more than K unseen items left.
    assert (tallied.history().users, tallied.history().model_recall_sum,
            tallied.history().baseline_recall_sum) == (1, 1.0, 1.0)
    # One report per task, under its job and partition.
    assert {job for job, _ in totals.value} == {"model"}
    assert sum(report.users for report in totals.value.values()) == 3


def test_history_columns_in_pandas_match_the_spark_checks() -> None:
    frame = history_columns(pd.DataFrame(SEEN, columns=["user_id", "seen"]),
                            popularity_ranking(POPULARITY), 3)
    assert frame.to_dict("list") == {"user_id": [1, 2, 4], "n_seen_known": [2, 3, 6],
                                     "baseline_seen_above": [1, 1, 0]}
