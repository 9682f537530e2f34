"""The prediction contract's per-user checks and run totals as the scoring tasks compute
them, on hand-made lists, faulty ones included."""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from jobs.contracts.predictions import ExposureTotals, HistoryTotals, popularity_ranking
from jobs.scoring.checks import (
    BlockTotals,
    TotalsParam,
    block_totals,
    item_counts,
    list_checks,
    run_totals,
)

# A catalogue of 8 items with hand-set popularity: ranked 10, 20, 5, 30, then 6, 7,
# 40 (tied, by id), then 50.
POPULARITY = pd.DataFrame({"item_id": [5, 6, 7, 10, 20, 30, 40, 50],
                           "users": [3, 1, 1, 5, 4, 2, 1, 0]})


def lists(rows: list[tuple[int, list[int], list[float], int, int]]) -> pa.RecordBatch:
    user_ids, items, scores, known, above = zip(*rows, strict=True)
    return pa.RecordBatch.from_pydict(
        {"user_id": list(user_ids), "items": list(items), "scores": list(scores),
         "n_seen_known": list(known), "n_seen_above": list(above)},
        schema=pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                          ("scores", pa.list_(pa.float32())), ("n_seen_known", pa.int64()),
                          ("n_seen_above", pa.int64())]))


CHECKED = list_checks(
    lists([(1, [10, 20, 30], [0.9, 0.5, 0.1], 2, 1),  # fine
           (2, [10, 10, 40], [0.2, 0.7, float("nan")], 3, 0),  # a repeat, unsorted, NaN
           (3, [50], [1.0], 0, 0),  # no interactions seen
           (4, [40, 50], [0.3, 0.2], 6, 0)]),  # 2 unseen catalogue items (99 is not one)
    pa.array([[5, 6], [40, 10, 7], None, [5, 6, 7, 10, 20, 30, 99]], pa.list_(pa.int64())),
    k=3, catalog_size=8, ranking=popularity_ranking(POPULARITY))


def test_list_checks_count_what_the_contract_checks() -> None:
    rows = {row["user_id"]: row for row in CHECKED.to_pylist()}
    for row in rows.values():
        del row["items"], row["scores"]
    # User 1 has not seen 10, 20, 30, ...: the baseline's 3rd is 30 (2 users), and of
    # the seen items only 5 (3 users) is more popular.
    assert rows[1] == {"user_id": 1, "n_items": 3, "n_wanted": 3, "n_distinct": 3, "n_seen": 0,
                       "scores_finite": True, "scores_sorted": True, "n_seen_known": 2,
                       "n_seen_above": 1, "baseline_seen_above": 1}
    # User 2's unseen: 20, 5, 30 (the 3rd, 2 users): only 10 (5 users) is above it. Items
    # 10 (twice) and 40 were seen: two distinct.
    assert rows[2] == {"user_id": 2, "n_items": 3, "n_wanted": 3, "n_distinct": 2, "n_seen": 2,
                       "scores_finite": False, "scores_sorted": False, "n_seen_known": 3,
                       "n_seen_above": 0, "baseline_seen_above": 1}
    assert (rows[3]["n_seen"], rows[3]["n_items"], rows[3]["n_wanted"]) == (0, 1, 3)
    # Fewer unseen items than K: the list is forced, the baseline has no K-th item.
    assert (rows[4]["n_wanted"], rows[4]["baseline_seen_above"]) == (2, 0)


def test_block_totals_count_each_user_once_per_item_and_sum_the_history() -> None:
    totals = block_totals(CHECKED, catalog_size=8, k=3)
    assert totals.users == 4
    # 10: users 1 and 2 (user 2 lists it twice, counted once); 40: users 2 and 4; 50: 3, 4.
    assert dict(zip(totals.exposure_ids.tolist(), totals.exposure_users.tolist(),
                    strict=True)) == {10: 2, 20: 1, 30: 1, 40: 2, 50: 2}
    assert totals.exposure() == ExposureTotals(
        items=5, top=2, total=8, entropy_sum=pytest.approx(3 * 2 * math.log(2)))
    # C=8, K=3: users 1 (2 seen) and 2 (3 seen) have room; 3 saw nothing, 4 has 2 left.
    assert totals.history() == HistoryTotals(users=2, model_recall_sum=pytest.approx(0.5),
                                             baseline_recall_sum=pytest.approx(0.5 + 1 / 3))


def test_totals_add_up_across_blocks_and_a_retried_task_replaces_its_report() -> None:
    first = BlockTotals(2, np.array([10, 20]), np.array([2, 1]), 1, 0.5, 0.25)
    second = BlockTotals(3, np.array([20, 30]), np.array([2, 3]), 2, 1.0, 0.5)
    both = first + second
    assert (both.users, both.exposure_ids.tolist(), both.exposure_users.tolist()) == (
        5, [10, 20, 30], [2, 3, 3])
    assert (both.history_users, both.model_recall_sum, both.baseline_recall_sum) == (
        3, 1.5, 0.75)
    param = TotalsParam()
    reports = param.zero({})
    reports = param.addInPlace(reports, {("model", 0): first})
    reports = param.addInPlace(reports, {("model", 1): second})
    reports = param.addInPlace(reports, {("model", 0): first})  # task 0 ran again
    assert run_totals(reports).users == 5
    assert run_totals({}).exposure() == ExposureTotals(items=0, top=0, total=0,
                                                       entropy_sum=0.0)


@pytest.mark.parametrize("far", [0, 2**40], ids=["counted-in-place", "sorted"])
def test_item_counts_whether_the_ids_span_a_catalogue_or_far_more(far) -> None:
    ids, counts = item_counts(np.array([7, 3 + far, 7, 5, 3 + far, 7], dtype=np.int64))
    assert (ids.tolist(), counts.tolist()) == (
        sorted([5, 7, 3 + far]), [1, 3, 2] if far else [2, 1, 3])
    assert [part.tolist() for part in item_counts(np.empty(0, dtype=np.int64))] == [[], []]


def test_empty_totals_add_up_to_empty() -> None:
    both = BlockTotals.empty() + BlockTotals.empty()
    assert (both.users, both.exposure_ids.tolist(), both.exposure_users.tolist()) == (0, [], [])
