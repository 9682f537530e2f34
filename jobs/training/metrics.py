"""Offline ranking metrics: what a top-K list is worth against held-out events."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set


def precision_at_k(recommended: Sequence[int], relevant: Set[int], k: int) -> float:
    """Share of the first ``k`` recommendations that are relevant (divided by ``k``)."""
    hits = sum(1 for item in recommended[:k] if item in relevant)
    return hits / k


def recall_at_k(recommended: Sequence[int], relevant: Set[int], k: int) -> float:
    """Share of the relevant items found in the first ``k`` recommendations."""
    if not relevant:
        return 0.0
    hits = sum(1 for item in recommended[:k] if item in relevant)
    return hits / len(relevant)


def ndcg_at_k(recommended: Sequence[int], relevant: Set[int], k: int) -> float:
    """Normalised discounted cumulative gain with binary relevance."""
    if not relevant:
        return 0.0
    gain = sum(
        1.0 / math.log2(position + 2)
        for position, item in enumerate(recommended[:k])
        if item in relevant
    )
    ideal = sum(1.0 / math.log2(position + 2) for position in range(min(k, len(relevant))))
    return gain / ideal


def average_precision_at_k(recommended: Sequence[int], relevant: Set[int], k: int) -> float:
    """Mean of precision@i over the ranks i <= ``k`` holding a relevant item,
    divided by ``min(k, |relevant|)``; averaged over users it is MAP@K."""
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    for position, item in enumerate(recommended[:k]):
        if item in relevant:
            hits += 1
            total += hits / (position + 1)
    return total / min(k, len(relevant))


def evaluate(
    recommendations: Mapping[int, Sequence[int]],
    holdout: Mapping[int, Set[int]],
    k: int,
    catalog_size: int,
) -> dict[str, float]:
    """Mean precision, recall, NDCG and MAP at ``k`` over the holdout users, and coverage.

    A holdout user with no recommendations counts as all misses. Coverage is the
    share of the catalogue recommended to at least one of those users.
    """
    users = sorted(holdout)
    if not users:
        raise ValueError("the holdout has no users to evaluate on")
    if catalog_size < 1:
        raise ValueError("the catalogue is empty")
    totals = {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0}
    covered: set[int] = set()
    for user in users:
        recommended = list(recommendations.get(user, ()))[:k]
        covered.update(recommended)
        totals["precision"] += precision_at_k(recommended, holdout[user], k)
        totals["recall"] += recall_at_k(recommended, holdout[user], k)
        totals["ndcg"] += ndcg_at_k(recommended, holdout[user], k)
        totals["map"] += average_precision_at_k(recommended, holdout[user], k)
    metrics = {f"{name}_at_k": total / len(users) for name, total in totals.items()}
    metrics["catalog_coverage"] = len(covered) / catalog_size
    metrics["users"] = float(len(users))
    return metrics
