import pytest

from jobs.training.differential import compare, ks_statistic, rank_correlation


def test_identical_lists_agree_completely() -> None:
    lists = {1: ([10, 11, 12], [0.9, 0.5, 0.1]), 2: ([13, 10], [0.8, 0.7])}
    result = compare(lists, lists, k=3)
    assert result.users == 2
    assert result.overlap_at_k == 1.0
    assert result.rank_correlation == 1.0
    assert result.score_ks == 0.0


def test_overlap_counts_shared_items_of_the_reference_list() -> None:
    candidate = {1: ([10, 11, 12, 13], [4.0, 3.0, 2.0, 1.0])}
    reference = {1: ([13, 20, 21, 10], [4.0, 3.0, 2.0, 1.0])}
    # 10 and 13 shared out of 4.
    assert compare(candidate, reference, k=4).overlap_at_k == 0.5


def test_reversed_order_correlates_negatively() -> None:
    # Same three items, opposite order: Spearman -1.
    assert rank_correlation([1, 2, 3], [3, 2, 1], k=3) == pytest.approx(-1.0)
    # Disjoint lists: each list's items rank 4 in the other -> ranks (1,2,4,4) vs (4,4,1,2).
    assert rank_correlation([1, 2], [3, 4], k=3) < 0


def test_users_only_one_side_has_are_left_out() -> None:
    result = compare({1: ([5], [1.0]), 2: ([6], [1.0])}, {2: ([6], [2.0]), 3: ([7], [1.0])}, k=1)
    assert result.users == 1
    with pytest.raises(ValueError, match="no user in common"):
        compare({1: ([5], [1.0])}, {2: ([5], [1.0])}, k=1)


def test_ks_is_the_largest_gap_between_distribution_functions() -> None:
    import numpy as np

    # {1,2,3,4} vs {3,4,5,6}: at x=2 the first CDF is 0.5, the second 0.
    assert ks_statistic(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == 0.5
    assert ks_statistic(np.array([1.0]), np.array([9.0])) == 1.0
