"""The measures monitoring computes, as pure functions of counts already aggregated in
PostgreSQL (see :mod:`jobs.monitoring.monitor`).

Distributions are compared over bins: for item popularity, the training
snapshot's items ranked by popularity and cut into :data:`POPULARITY_BINS` bins
of equal event mass, plus one bin for items it never saw; for user activity, a
user's events in a day, in the doubling bins of :data:`ACTIVITY_EDGES`.
Comparing a day with a reference item by item would mostly measure the noise
of a small day's counts; equal-mass bins keep a normal day near zero and still
move when the popular items change.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon

# PSI takes log(actual / expected): an empty bin on either side gets this share
# instead of 0 (then both sides are renormalised). 1e-4 keeps an empty bin's
# term finite while a bin that holds a real share still dominates it.
PSI_EPSILON = 1e-4
POPULARITY_BINS = 10
# Lower edges of the activity bins: 1, 2, 3-4, 5-8, ..., 129 and more events a day.
ACTIVITY_EDGES = (1, 2, 3, 5, 9, 17, 33, 65, 129)


def shares(counts: Sequence[float]) -> np.ndarray:
    """``counts`` as shares summing to 1; refuses an empty or all-zero histogram."""
    values = np.asarray(counts, dtype=float)
    if values.size == 0 or values.sum() <= 0:
        raise ValueError("a distribution needs at least one positive count")
    if (values < 0).any():
        raise ValueError(f"counts must not be negative, got {values.min():g}")
    return values / values.sum()


def psi(expected: Sequence[float], actual: Sequence[float],
        epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected`` over the same bins:
    sum of (a - e) * ln(a / e), empty bins floored at ``epsilon``."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI compares the same bins: {len(expected)} expected, "
                         f"{len(actual)} actual")
    e = np.maximum(shares(expected), epsilon)
    a = np.maximum(shares(actual), epsilon)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def js_divergence(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Jensen-Shannon divergence (base 2, so 0..1) of two histograms over the same bins."""
    if len(expected) != len(actual):
        raise ValueError(f"Jensen-Shannon compares the same bins: {len(expected)} expected, "
                         f"{len(actual)} actual")
    return float(jensenshannon(shares(expected), shares(actual), base=2) ** 2)


def popularity_bins(ranking: Mapping[int, float], counts: Mapping[int, float],
                    bins: int = POPULARITY_BINS) -> list[float]:
    """``counts`` (events per item) per bin: the items of ``ranking`` by popularity (ties by
    item id) cut into ``bins`` bins of equal ``ranking`` mass, then one bin for items
    ``ranking`` does not hold. Every side of a comparison is binned by the same ranking."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    ranked = sorted(ranking, key=lambda item: (-ranking[item], item))
    total = float(sum(ranking[item] for item in ranked))
    if total <= 0:
        raise ValueError("the ranking distribution has no events")
    bin_of: dict[int, int] = {}
    running = 0.0
    for item in ranked:
        # The bin the item's first event falls in, by cumulative mass.
        bin_of[item] = min(bins - 1, int(running / total * bins))
        running += ranking[item]
    histogram = [0.0] * (bins + 1)
    for item, count in counts.items():
        histogram[bin_of.get(item, bins)] += count
    return histogram


def activity_bin(events: int) -> int:
    """The :data:`ACTIVITY_EDGES` bin of a user with ``events`` events in a day (>= 1)."""
    if events < 1:
        raise ValueError(f"an active user has at least one event, got {events}")
    return bisect.bisect_right(ACTIVITY_EDGES, events) - 1


def activity_histogram(users_by_events: Mapping[int, int]) -> list[float]:
    """Users per activity bin, from ``{events in the day: users with that many}``."""
    histogram = [0.0] * len(ACTIVITY_EDGES)
    for events, users in users_by_events.items():
        histogram[activity_bin(events)] += users
    return histogram


def gini(counts: Sequence[float]) -> float:
    """Gini coefficient of ``counts`` (0: all equal; near 1: one holds everything).

    Items never recommended belong in ``counts`` as zeros: exposure concentration
    is over the whole catalogue.
    """
    values = np.sort(np.asarray(counts, dtype=float))
    n = values.size
    if n == 0 or values.sum() <= 0:
        raise ValueError("the Gini coefficient needs at least one positive count")
    ranks = np.arange(1, n + 1)
    return float(np.sum((2 * ranks - n - 1) * values) / (n * values.sum()))


def overlap_at_k(first: Sequence[int], second: Sequence[int], k: int) -> float:
    """Share of ``k`` items two lists have in common among their first ``k``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return len(set(first[:k]) & set(second[:k])) / k


def ideal_dcg(relevant: int, k: int) -> float:
    """The best DCG at ``k`` for a user with ``relevant`` relevant items (binary gain)."""
    return sum(1.0 / math.log2(position + 1) for position in range(1, min(k, relevant) + 1))

