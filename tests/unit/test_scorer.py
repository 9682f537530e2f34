"""The blocked scorer: exact top-k against Spark's own recommendForAllUsers, and its parts."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from jobs.contracts import redis as contract
from jobs.contracts.predictions import popularity_ranking
from jobs.scoring import transforms
from jobs.scoring.transforms import (
    RECOMMENDATIONS_ARROW_SCHEMA,
    Checked,
    ItemCatalog,
    score_arrow_block,
    top_k_items,
    top_k_unseen,
    with_redis_value,
)

pytestmark = pytest.mark.spark


def by_item(scores_by_user: list[list[float]]) -> np.ndarray:
    """A block as the scorer lays it out, one row per item, from one row per user."""
    return np.ascontiguousarray(np.array(scores_by_user, dtype=np.float32).T)


def test_top_k_items_finds_the_best_of_each_user_searching_chunks() -> None:
    scores = by_item([
        [0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0, 0.5],
        [1.0, 1.0, -np.inf, 0.4, 1.0, 0.2, 0.6, 0.6],
    ])
    # chunk width 2: chunk j holds items j and j + 4
    users, items, best = top_k_items(scores, 3, 2)
    assert users.tolist() == [0, 0, 0, 1, 1, 1]
    assert items.tolist() == [1, 3, 5, 0, 1, 4]  # equal scores in item order
    assert best.tolist() == pytest.approx([0.9, 0.8, 0.7, 1.0, 1.0, 1.0])


def test_top_k_items_skips_excluded_entries_and_returns_fewer() -> None:
    scores = by_item([[-np.inf, 2.0, -np.inf, -np.inf], [1.0, 3.0, 2.0, 0.5]])
    users, items, best = top_k_items(scores, 2, 2)
    assert (users.tolist(), items.tolist(), best.tolist()) == (
        [0, 1, 1], [1, 1, 2], [2.0, 3.0, 2.0])


def test_an_arrow_block_comes_back_as_flat_lists_with_the_output_schema() -> None:
    catalog = ItemCatalog.build(np.array([30, 10, 40, 20]),
                                np.array([[2.0, 0.0], [4.0, 0.0], [1.0, 0.0], [3.0, 1.0]]), 2)
    assert catalog.ids.tolist() == [10, 20, 30, 40]
    batch = pa.RecordBatch.from_pydict(
        {"user_id": [7, 8], "features": [[1.0, 0.0], [0.0, 1.0]], "seen": [[10, 99], None]},
        schema=pa.schema([("user_id", pa.int64()), ("features", pa.list_(pa.float32())),
                          ("seen", pa.list_(pa.int64()))]))
    out = score_arrow_block(batch, catalog, 2)
    assert out.schema == RECOMMENDATIONS_ARROW_SCHEMA
    assert out.to_pydict() == {
        "user_id": [7, 8],
        # user 7: 10 -> 4 is seen; 20 -> 3, 30 -> 2. user 8: only 20 scores 1; 10, 30, 40 tie at 0
        "items": [[20, 30], [20, 10]],
        "scores": [[3.0, 2.0], [1.0, 0.0]],
    }


@pytest.fixture(scope="module")
def fitted(spark):
    from pyspark.ml.recommendation import ALS

    rng = np.random.default_rng(11)
    rows = [(int(u), int(i), float(rng.integers(1, 5)))
            for u in range(1, 41) for i in rng.choice(np.arange(1, 61), 8, replace=False)]
    ratings = spark.createDataFrame(rows, "user int, item int, rating double")
    model = ALS(rank=6, maxIter=5, regParam=0.1, implicitPrefs=True, seed=3,
                userCol="user", itemCol="item", ratingCol="rating").fit(ratings)
    return model


def als_top_k(spark, model, k: int, broadcast_min_bytes: int, monkeypatch) -> dict:
    from pyspark.sql import functions as F

    items = model.itemFactors.orderBy("id").toPandas()
    monkeypatch.setattr(transforms, "BROADCAST_MIN_BYTES", broadcast_min_bytes)
    users = (model.userFactors.select(F.col("id").cast("long").alias("user_id"), "features")
             .withColumn("seen", F.lit(None).cast("array<long>")))
    result = top_k_unseen(users, items["id"].to_numpy(), np.stack(items["features"]), k)
    return {row["user_id"]: (row["items"], row["scores"]) for row in result.collect()}


@pytest.mark.parametrize("broadcast_min_bytes", [0, 1 << 30], ids=["broadcast", "closure"])
def test_same_top_k_as_recommend_for_all_users(spark, fitted, broadcast_min_bytes,
                                               monkeypatch) -> None:
    k = 7
    ours = als_top_k(spark, fitted, k, broadcast_min_bytes, monkeypatch)
    theirs = {row["user"]: row["recommendations"]
              for row in fitted.recommendForAllUsers(k).collect()}
    assert set(ours) == set(theirs) and len(ours) == 40
    for user, recs in theirs.items():
        items, scores = ours[user]
        assert items == [rec["item"] for rec in recs], f"user {user}"
        assert scores == pytest.approx([rec["rating"] for rec in recs], rel=1e-5, abs=1e-6)


def test_the_two_zeros_tie_and_keep_column_order() -> None:
    assert top_k_items(by_item([[0.0, -0.0, 0.0, -1.0]]), 3, 1)[1].tolist() == [0, 1, 2]


def test_a_scored_batch_carries_each_users_redis_value() -> None:
    batch = pa.RecordBatch.from_pydict(
        {"user_id": [7, 8], "items": [[20, 30], [20, 10]], "scores": [[3.0, 2.5], [1.0, 0.0]]},
        schema=RECOMMENDATIONS_ARROW_SCHEMA)
    out = with_redis_value(batch)
    assert out.schema.names == ["user_id", "items", "scores", "redis_value"]
    assert out.schema.field("redis_value").type == pa.binary()
    assert out.column("redis_value").to_pylist() == [
        bytes.fromhex("0102" "14001e00" "00004040" "00002040"),  # 20, 30; 3.0, 2.5
        bytes.fromhex("0102" "14000a00" "0000803f" "00000000"),  # 20, 10; 1.0, 0.0
    ]


def test_redis_values_match_the_lists_across_blocks_of_a_batch(spark, fitted,
                                                               monkeypatch) -> None:
    from pyspark.sql import functions as F

    # Blocks of 3 users: each Arrow batch of the 40 users is scored in many blocks.
    items = fitted.itemFactors.orderBy("id").toPandas()
    monkeypatch.setattr(transforms, "SCORE_BLOCK_BYTES", 3 * 4 * len(items))
    users = (fitted.userFactors.select(F.col("id").cast("long").alias("user_id"), "features")
             .withColumn("seen", F.lit(None).cast("array<long>")))
    ranking = popularity_ranking(pd.DataFrame({"item_id": items["id"], "users": 1}))
    rows = top_k_unseen(users, items["id"].to_numpy(), np.stack(items["features"]), 5,
                        Checked(ranking)).collect()
    assert len(rows) == 40
    for row in rows:
        assert len(row["items"]) == 5
        assert bytes(row["redis_value"]) == contract.encode_items(row["items"], row["scores"])


def test_a_batch_scored_in_blocks_gives_what_one_block_gives() -> None:
    rng = np.random.default_rng(5)
    ids = np.arange(100, 130)
    catalog = ItemCatalog.build(ids, rng.normal(size=(30, 4)), 3)
    users = 11
    seen = [rng.choice(ids, size=int(rng.integers(0, 6)), replace=False).tolist()
            for _ in range(users)]
    seen[4] = None  # a user with nothing seen between users with seen items
    batch = pa.RecordBatch.from_pydict(
        {"user_id": list(range(1, users + 1)),
         "features": rng.normal(size=(users, 4)).astype(np.float32).tolist(), "seen": seen},
        schema=pa.schema([("user_id", pa.int64()), ("features", pa.list_(pa.float32())),
                          ("seen", pa.list_(pa.int64()))]))
    whole = score_arrow_block(batch, catalog, 3, history=True, block_rows=users).to_pydict()
    # Blocks of 2 users: each block's seen items are its own slice of the batch's. (The
    # matrix multiply may round the last bit differently for another block shape.)
    blocked = score_arrow_block(batch, catalog, 3, history=True, block_rows=2).to_pydict()
    assert np.allclose(blocked.pop("scores"), whole["scores"], rtol=1e-6)
    assert blocked == {name: column for name, column in whole.items() if name != "scores"}
    assert whole["n_seen_known"] == [len(items or []) for items in seen]
    for items, listed in zip(seen, whole["items"], strict=True):
        assert not set(items or []) & set(listed)
    # Each user's seen items above their 3rd recommendation, by hand from the factors.
    factors = {int(i): f for i, f in zip(catalog.ids, catalog.factors, strict=False)}
    for user, items in enumerate(seen):
        user_factors = np.asarray(batch.column("features")[user].as_py(), dtype=np.float32)
        third = whole["scores"][user][2]
        above = sum(float(factors[item] @ user_factors) > third for item in items or [])
        assert whole["n_seen_above"][user] == above, f"user {user + 1}"


def test_scoring_tasks_stay_one_per_core_until_a_task_would_have_too_many_users() -> None:
    from jobs.scoring.score import USERS_PER_TASK, scoring_tasks

    assert USERS_PER_TASK == 500_000
    assert scoring_tasks(2, None) == 2  # an item-item model: its users are not counted
    assert scoring_tasks(2, 0) == 2
    assert scoring_tasks(2, 1_000_000) == 2
    assert scoring_tasks(2, 1_000_001) == 4
    assert scoring_tasks(2, 10_000_000) == 20
    assert scoring_tasks(4, 10_000_000) == 20
    assert scoring_tasks(1, 1_200_000) == 3
