"""Offline ranking metrics: what a top-K list is worth against held-out events.

Besides the plain metrics, the debiased ones of Yang et al., "Unbiased Offline
Recommender Evaluation for Missing-Not-At-Random Implicit Feedback" (RecSys
2018). A holdout only holds the events users happened to make, and popular
items are far more likely to be observed, so plain recall and NDCG favour
lists of popular items. Each relevant item therefore counts with the inverse
of its propensity, the chance that a relevant item is observed at all:

- Yang et al. model observing an item as being shown (with a chance
  proportional to ``n_i ** gamma``, ``n_i`` the item's observed popularity)
  and then chosen (proportional to its true popularity); solving the two
  gives ``p_i`` proportional to ``n_i ** ((gamma + 1) / 2)``. Here ``n_i`` is
  the item's distinct users in the training part and ``gamma`` is 0 (how
  often an item is shown does not depend on its popularity), so
  ``p_i = (n_i / max_j n_j) ** 0.5``: the most popular item has 1.
- ``p_i`` is clipped below at ``PROPENSITY_FLOOR`` (0.1), so a hit on a rare
  item counts at most ten times one on the most popular item: one lucky
  rare hit cannot carry a user's score. Items with no training popularity
  (the holdout keeps known items only, so they should not occur) get the floor.
- Self-normalised per user (SNIPS): a user's weighted hits are divided by the
  same weights' total over the user's relevant items (recall) or by the
  ideal DCG of those weights (NDCG), then averaged over users like the plain
  metrics. Each user's value stays in [0, 1] and equals the plain metric when
  all propensities are equal, so the two columns read side by side; the
  unknown number of a user's truly relevant items never enters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

# gamma of Yang et al.'s exposure model, and the exponent it gives the propensity.
POPULARITY_GAMMA = 0.0
PROPENSITY_EXPONENT = (POPULARITY_GAMMA + 1) / 2
# The smallest propensity an item gets: its hits weigh at most 1 / floor.
PROPENSITY_FLOOR = 0.1


@dataclass(frozen=True)
class Propensities:
    """Each item's chance that a relevant item is observed, from its training popularity."""

    by_item: Mapping[int, float]
    floor: float = PROPENSITY_FLOOR

    @classmethod
    def from_popularity(cls, item_popularity: Mapping[int, int],
                        exponent: float = PROPENSITY_EXPONENT,
                        floor: float = PROPENSITY_FLOOR) -> Propensities:
        """``max(floor, (n_i / max_j n_j) ** exponent)`` for each item's training users ``n_i``."""
        if not 0 < floor <= 1:
            raise ValueError(f"the propensity floor must be in (0, 1], not {floor}")
        most = max(item_popularity.values(), default=0)
        return cls(by_item={item: max(floor, (count / most) ** exponent) if most > 0 else floor
                            for item, count in item_popularity.items()},
                   floor=floor)

    def weight(self, item: int) -> float:
        """The inverse propensity a hit on ``item`` counts with."""
        return 1.0 / self.by_item.get(item, self.floor)


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


def ips_recall_at_k(recommended: Sequence[int], relevant: Set[int], k: int,
                    propensities: Propensities) -> float:
    """Recall with each relevant item weighted by its inverse propensity: the weights of
    the hits in the first ``k`` over the weights of all relevant items."""
    if not relevant:
        return 0.0
    hits = sum(propensities.weight(item) for item in recommended[:k] if item in relevant)
    return hits / sum(propensities.weight(item) for item in relevant)


def ips_ndcg_at_k(recommended: Sequence[int], relevant: Set[int], k: int,
                  propensities: Propensities) -> float:
    """NDCG with a hit's gain its inverse propensity, over the ideal DCG of those gains
    (the user's relevant items by weight, heaviest first, in the first ``k`` places)."""
    if not relevant:
        return 0.0
    gain = sum(
        propensities.weight(item) / math.log2(position + 2)
        for position, item in enumerate(recommended[:k])
        if item in relevant
    )
    heaviest = sorted((propensities.weight(item) for item in relevant), reverse=True)[:k]
    ideal = sum(weight / math.log2(position + 2) for position, weight in enumerate(heaviest))
    return gain / ideal


def novelty(recommended: Sequence[int], item_popularity: Mapping[int, int],
            total_popularity: int) -> float:
    """Mean self-information, ``-log2(n_i / sum_j n_j)``, of the recommended items.

    ``n_i`` is the item's training users, so a list of items few users knew
    scores high. An item unknown to training counts as known to one user.
    """
    if not recommended or total_popularity < 1:
        return 0.0
    return sum(-math.log2(max(item_popularity.get(item, 0), 1) / total_popularity)
               for item in recommended) / len(recommended)


def evaluate(
    recommendations: Mapping[int, Sequence[int]],
    holdout: Mapping[int, Set[int]],
    k: int,
    catalog_size: int,
    item_popularity: Mapping[int, int] | None = None,
) -> dict[str, float]:
    """Mean precision, recall, NDCG and MAP at ``k`` over the holdout users, and coverage.

    A holdout user with no recommendations counts as all misses. Coverage is the
    share of the catalogue recommended to at least one of those users.

    Given ``item_popularity`` (each item's training users), also IPS recall and
    NDCG at ``k`` (the module's docstring) and novelty: the mean over the
    users with a list of their list's mean self-information (0 when none has one).
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
    if item_popularity is not None:
        metrics.update(debiased(recommendations, holdout, users, k, item_popularity))
    return metrics


def debiased(recommendations: Mapping[int, Sequence[int]], holdout: Mapping[int, Set[int]],
             users: Sequence[int], k: int, item_popularity: Mapping[int, int]
             ) -> dict[str, float]:
    propensities = Propensities.from_popularity(item_popularity)
    total_popularity = sum(item_popularity.values())
    recall = ndcg = 0.0
    novelties: list[float] = []
    for user in users:
        recommended = list(recommendations.get(user, ()))[:k]
        recall += ips_recall_at_k(recommended, holdout[user], k, propensities)
        ndcg += ips_ndcg_at_k(recommended, holdout[user], k, propensities)
        if recommended:
            novelties.append(novelty(recommended, item_popularity, total_popularity))
    return {"ips_recall_at_k": recall / len(users), "ips_ndcg_at_k": ndcg / len(users),
            "novelty": sum(novelties) / len(novelties) if novelties else 0.0}
