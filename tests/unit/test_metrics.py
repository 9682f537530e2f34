import math

import pytest

from jobs.training.metrics import (
    average_precision_at_k,
    evaluate,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)


def test_precision_and_recall_count_hits_in_the_first_k() -> None:
    recommended = [5, 1, 9, 2]
    relevant = {1, 2, 3}
    assert precision_at_k(recommended, relevant, 2) == 0.5  # 1 hit of 2
    assert precision_at_k(recommended, relevant, 4) == 0.5  # 2 hits of 4
    assert recall_at_k(recommended, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at_k(recommended, relevant, 4) == pytest.approx(2 / 3)


def test_ndcg_rewards_hits_near_the_top() -> None:
    # Hit at position 2 of 3, one relevant item: 1/log2(3) over an ideal of 1.
    assert ndcg_at_k([4, 7, 8], {7}, 3) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([7, 4, 8], {7}, 3) == 1.0
    assert ndcg_at_k([1, 2], {3}, 2) == 0.0


def test_ndcg_ideal_is_capped_at_k() -> None:
    # Three relevant items but k=2: the ideal is two hits.
    assert ndcg_at_k([1, 2], {1, 2, 3}, 2) == 1.0


def test_average_precision_averages_precision_at_each_hit() -> None:
    # Hits at ranks 1 and 3: (1/1 + 2/3) / min(k=4, 2 relevant).
    assert average_precision_at_k([5, 9, 6, 1], {5, 6}, 4) == pytest.approx((1 + 2 / 3) / 2)
    # Three relevant items, k=2, one hit at rank 2: (1/2) / 2.
    assert average_precision_at_k([8, 1], {1, 2, 3}, 2) == pytest.approx(0.25)
    assert average_precision_at_k([1, 2], set(), 2) == 0.0


def test_evaluate_averages_over_holdout_users_and_measures_coverage() -> None:
    recommendations = {1: [10, 11], 2: [10, 12]}
    holdout = {1: {10}, 2: {13}, 3: {10}}  # user 3 got nothing: all misses
    metrics = evaluate(recommendations, holdout, k=2, catalog_size=8)
    assert metrics["precision_at_k"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert metrics["recall_at_k"] == pytest.approx((1 + 0 + 0) / 3)
    assert metrics["ndcg_at_k"] == pytest.approx(1 / 3)
    assert metrics["map_at_k"] == pytest.approx(1 / 3)
    assert metrics["catalog_coverage"] == pytest.approx(3 / 8)  # items 10, 11, 12
    assert metrics["users"] == 3


def test_evaluate_refuses_an_empty_holdout() -> None:
    with pytest.raises(ValueError, match="no users"):
        evaluate({}, {}, k=5, catalog_size=10)
