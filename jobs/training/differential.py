"""How far one model's top-K lists are from another's, for the same users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# (items best first, their scores)
RankedList = tuple[Sequence[int], Sequence[float]]


@dataclass(frozen=True)
class Differential:
    """Mean overlap@K, mean rank correlation, and the score distribution shift."""

    users: int
    k: int
    overlap_at_k: float
    rank_correlation: float
    score_ks: float
    candidate_mean_score: float
    reference_mean_score: float
    # False when the models are of different families, whose scores are on different
    # scales: the score shift then says nothing about either.
    same_family: bool = True

    def to_json(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def compare(candidate: Mapping[int, RankedList], reference: Mapping[int, RankedList],
            k: int, same_family: bool = True) -> Differential:
    """Compare the lists of the users both mappings have.

    Overlap@K is the share of the reference's first ``k`` items the candidate
    also has in its first ``k``. Rank correlation is Spearman's over the union
    of both lists, an item missing from a list ranking ``k + 1`` there. The
    score shift is the two-sample Kolmogorov-Smirnov statistic between all
    top-K scores of either model.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    users = sorted(set(candidate) & set(reference))
    if not users:
        raise ValueError("the two models have no user in common to compare")
    overlaps, correlations = [], []
    candidate_scores: list[float] = []
    reference_scores: list[float] = []
    for user in users:
        ours, our_scores = candidate[user]
        theirs, their_scores = reference[user]
        ours, theirs = list(ours)[:k], list(theirs)[:k]
        candidate_scores.extend(list(our_scores)[:k])
        reference_scores.extend(list(their_scores)[:k])
        overlaps.append(len(set(ours) & set(theirs)) / max(1, min(k, len(theirs))))
        correlations.append(rank_correlation(ours, theirs, k))
    return Differential(
        users=len(users),
        k=k,
        overlap_at_k=float(np.mean(overlaps)),
        rank_correlation=float(np.mean(correlations)),
        score_ks=ks_statistic(np.asarray(candidate_scores), np.asarray(reference_scores)),
        candidate_mean_score=float(np.mean(candidate_scores)) if candidate_scores else 0.0,
        reference_mean_score=float(np.mean(reference_scores)) if reference_scores else 0.0,
        same_family=same_family,
    )


def rank_correlation(first: Sequence[int], second: Sequence[int], k: int) -> float:
    """Spearman's correlation of two ranked lists over their union (missing = rank k+1)."""
    union = list(dict.fromkeys([*first, *second]))
    if list(first) == list(second):
        return 1.0
    position_1 = {item: rank for rank, item in enumerate(first, start=1)}
    position_2 = {item: rank for rank, item in enumerate(second, start=1)}
    ranks_1 = np.array([position_1.get(item, k + 1) for item in union], dtype=float)
    ranks_2 = np.array([position_2.get(item, k + 1) for item in union], dtype=float)
    if ranks_1.std() == 0 or ranks_2.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks_1, ranks_2)[0, 1])


def ks_statistic(first: np.ndarray, second: np.ndarray) -> float:
    """The largest gap between the two empirical distribution functions."""
    if len(first) == 0 or len(second) == 0:
        return 0.0 if len(first) == len(second) else 1.0
    first, second = np.sort(first), np.sort(second)
    points = np.concatenate([first, second])
    cdf_1 = np.searchsorted(first, points, side="right") / len(first)
    cdf_2 = np.searchsorted(second, points, side="right") / len(second)
    return float(np.max(np.abs(cdf_1 - cdf_2)))
