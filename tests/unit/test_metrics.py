import math

import pytest

from jobs.training.metrics import (
    Propensities,
    average_precision_at_k,
    evaluate,
    ips_ndcg_at_k,
    ips_recall_at_k,
    ndcg_at_k,
    novelty,
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


# Training users per item, with propensities worked out by hand:
# p_i = max(0.1, (n_i / 400) ** 0.5)
#   item 1: (400/400) ** 0.5 = 1.0  -> weight 1
#   item 2: (100/400) ** 0.5 = 0.5  -> weight 2
#   item 3:  (16/400) ** 0.5 = 0.2  -> weight 5
#   item 4:   (1/400) ** 0.5 = 0.05 -> clipped to 0.1 -> weight 10 (20 unclipped)
POPULARITY = {1: 400, 2: 100, 3: 16, 4: 1}
PROPENSITIES = Propensities.from_popularity(POPULARITY)


def test_propensities_follow_the_square_root_of_popularity_clipped_below() -> None:
    assert PROPENSITIES.by_item == pytest.approx({1: 1.0, 2: 0.5, 3: 0.2, 4: 0.1})
    assert [PROPENSITIES.weight(item) for item in (1, 2, 3, 4)] == pytest.approx([1, 2, 5, 10])


def test_items_without_training_popularity_get_the_floor() -> None:
    assert Propensities.from_popularity({1: 4, 2: 0}).by_item == {1: 1.0, 2: 0.1}
    assert Propensities.from_popularity({1: 0}).by_item == {1: 0.1}
    assert PROPENSITIES.weight(99) == pytest.approx(10)  # not in the training part at all


def test_a_hit_on_a_rare_item_weighs_more_than_one_on_a_popular_item() -> None:
    relevant = {1, 3}  # weights 1 and 5, total 6
    # Plain metrics cannot tell the two lists apart.
    assert recall_at_k([1, 9], relevant, 2) == recall_at_k([3, 9], relevant, 2) == 0.5
    assert ndcg_at_k([1, 9], relevant, 2) == ndcg_at_k([3, 9], relevant, 2)
    # IPS recall: the hit's weight over the relevant items' weights.
    assert ips_recall_at_k([1, 9], relevant, 2, PROPENSITIES) == pytest.approx(1 / 6)
    assert ips_recall_at_k([3, 9], relevant, 2, PROPENSITIES) == pytest.approx(5 / 6)
    # IPS NDCG: ideal DCG puts the weights 5, 1 in ranks 1, 2:
    #   5 / log2(2) + 1 / log2(3) = 5 + 0.63093 = 5.63093
    # [1, 9]: gain 1 / log2(2) = 1 -> 1 / 5.63093 = 0.17759
    # [3, 9]: gain 5 / log2(2) = 5 -> 5 / 5.63093 = 0.88795
    assert ips_ndcg_at_k([1, 9], relevant, 2, PROPENSITIES) == pytest.approx(0.17759, abs=1e-5)
    assert ips_ndcg_at_k([3, 9], relevant, 2, PROPENSITIES) == pytest.approx(0.88795, abs=1e-5)


def test_the_floor_caps_a_rare_items_weight() -> None:
    relevant = {1, 4}  # weights 1 and 10 (20 without the floor)
    # Recall with the hit on 4: 10 / (1 + 10); unclipped it would be 20 / 21.
    assert ips_recall_at_k([4], relevant, 1, PROPENSITIES) == pytest.approx(10 / 11)
    # NDCG, hit on 4 at rank 2: gain 10 / log2(3) = 6.30930; ideal 10 / 1 + 1 / log2(3)
    # = 10.63093; 6.30930 / 10.63093 = 0.59349 (unclipped: 12.61860 / 20.63093 = 0.61163).
    assert ips_ndcg_at_k([9, 4], relevant, 2, PROPENSITIES) == pytest.approx(0.59349, abs=1e-5)


def test_ips_metrics_equal_the_plain_ones_when_items_are_equally_popular() -> None:
    equal = Propensities.from_popularity({1: 7, 2: 7, 3: 7, 4: 7})
    for recommended, relevant, k in (([4, 2, 1], {2, 3}, 3), ([1, 2], {1, 2, 3}, 2),
                                     ([3], {3}, 1)):
        assert ips_recall_at_k(recommended, relevant, k, equal) == pytest.approx(
            recall_at_k(recommended, relevant, k))
        assert ips_ndcg_at_k(recommended, relevant, k, equal) == pytest.approx(
            ndcg_at_k(recommended, relevant, k))


def test_ips_metrics_of_empty_lists_and_sets_are_zero() -> None:
    assert ips_recall_at_k([1, 2], set(), 2, PROPENSITIES) == 0.0
    assert ips_ndcg_at_k([1, 2], set(), 2, PROPENSITIES) == 0.0
    assert ips_recall_at_k([], {1}, 2, PROPENSITIES) == 0.0
    assert ips_ndcg_at_k([], {1}, 2, PROPENSITIES) == 0.0


def test_novelty_is_the_mean_self_information_of_the_list() -> None:
    # Shares of 32: 16/32, 8/32, 4/32, 4/32 -> -log2: 1, 2, 3, 3 bits.
    popularity = {1: 16, 2: 8, 3: 4, 4: 4}
    assert novelty([1, 3], popularity, 32) == pytest.approx((1 + 3) / 2)
    assert novelty([2, 3, 4], popularity, 32) == pytest.approx((2 + 3 + 3) / 3)
    # An item training never saw counts as one user's: -log2(1/32) = 5 bits.
    assert novelty([9], popularity, 32) == pytest.approx(5)
    assert novelty([], popularity, 32) == 0.0


def test_evaluate_reports_the_debiased_metrics_given_popularity() -> None:
    recommendations = {1: [2, 3], 2: [2, 1]}
    holdout = {1: {1, 3}, 2: {4}, 3: {1}}  # user 3 got nothing: all misses
    metrics = evaluate(recommendations, holdout, k=2, catalog_size=8,
                       item_popularity=POPULARITY)
    # User 1: relevant weights 1 (item 1) and 5 (item 3); the hit is item 3 at rank 2.
    #   IPS recall 5 / 6; IPS NDCG (5 / log2(3)) / (5 + 1 / log2(3)) = 3.15465 / 5.63093.
    # Users 2 and 3: no hit, 0.
    assert metrics["ips_recall_at_k"] == pytest.approx((5 / 6) / 3)
    assert metrics["ips_ndcg_at_k"] == pytest.approx((3.15465 / 5.63093) / 3, abs=1e-6)
    # Novelty over the users with a list (1 and 2), popularity total 517:
    #   user 1: (log2(517/100) + log2(517/16)) / 2; user 2: (log2(517/100) + log2(517/400)) / 2
    user_1 = (math.log2(517 / 100) + math.log2(517 / 16)) / 2
    user_2 = (math.log2(517 / 100) + math.log2(517 / 400)) / 2
    assert metrics["novelty"] == pytest.approx((user_1 + user_2) / 2)
    # The plain metrics keep their meaning: user 1's recall 1/2 and NDCG
    # (1 / log2(3)) / (1 + 1 / log2(3)).
    assert metrics["recall_at_k"] == pytest.approx(0.5 / 3)
    assert metrics["ndcg_at_k"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)) / 3)
    assert "ips_ndcg_at_k" not in evaluate(recommendations, holdout, k=2, catalog_size=8)
