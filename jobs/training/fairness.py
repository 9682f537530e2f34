"""Who a model serves well: quality per user segment, exposure per popularity band.

Segments are activity levels (tertiles of the users' training events) and
the values of any attribute in ``batchscore.users``; bands split the catalogue
by training popularity. The report is stored with the model version.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence, Set
from typing import Any

import numpy as np

from jobs.training.metrics import evaluate

# Shares of the catalogue, most popular first.
POPULARITY_BANDS = (("head", 0.10), ("torso", 0.30), ("tail", 0.60))
# An attribute with more values than this is not reported as segments.
MAX_ATTRIBUTE_VALUES = 20
# Segments smaller than this are reported without metrics (too noisy to read).
MIN_SEGMENT_USERS = 5
QUALITY_KEYS = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k")


def fairness_report(
    recommendations: Mapping[str, Mapping[int, Sequence[int]]],
    holdout: Mapping[int, Set[int]],
    activity: Mapping[int, int],
    item_popularity: Mapping[int, int],
    k: int,
    attributes: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Quality per segment and exposure per band for each named model's lists.

    ``recommendations`` maps a model name ("model", "popularity", ...) to its
    lists for the holdout users; ``activity`` is each user's number of
    training events; ``item_popularity`` each item's training users.
    """
    segments: dict[str, dict[str, list[int]]] = {"activity": activity_segments(holdout, activity)}
    for name, groups in attribute_segments(holdout, attributes or {}).items():
        segments[f"attribute:{name}"] = groups
    quality = {
        dimension: [segment_quality(label, users, recommendations, holdout, k,
                                    len(item_popularity))
                    for label, users in groups.items()]
        for dimension, groups in segments.items()
    }
    return {"k": k, "quality": quality,
            "exposure": exposure_by_band(recommendations, item_popularity)}


def activity_segments(holdout: Mapping[int, Set[int]],
                      activity: Mapping[int, int]) -> dict[str, list[int]]:
    users = sorted(holdout)
    counts = np.array([activity.get(user, 0) for user in users])
    low, high = (np.quantile(counts, [1 / 3, 2 / 3]).astype(int) if len(counts) else (0, 0))
    groups: dict[str, list[int]] = {
        f"low (<= {low} events)": [],
        f"medium ({low + 1}-{high} events)": [],
        f"high (> {high} events)": [],
    }
    labels = list(groups)
    for user, count in zip(users, counts, strict=True):
        groups[labels[0 if count <= low else 1 if count <= high else 2]].append(user)
    return {label: members for label, members in groups.items() if members}


def attribute_segments(holdout: Mapping[int, Set[int]],
                       attributes: Mapping[int, Mapping[str, Any]]
                       ) -> dict[str, dict[str, list[int]]]:
    by_name: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for user in sorted(holdout):
        for name, value in attributes.get(user, {}).items():
            if isinstance(value, str | int | bool):
                by_name[name][str(value)].append(user)
    # Too many values, or one user per value: an identifier, not a segment.
    return {name: dict(values) for name, values in sorted(by_name.items())
            if len(values) <= MAX_ATTRIBUTE_VALUES
            and max(len(members) for members in values.values()) > 1}


def segment_quality(label: str, users: list[int],
                    recommendations: Mapping[str, Mapping[int, Sequence[int]]],
                    holdout: Mapping[int, Set[int]], k: int, catalog: int) -> dict[str, Any]:
    row: dict[str, Any] = {"segment": label, "users": len(users)}
    if len(users) < MIN_SEGMENT_USERS:
        return row
    truth = {user: holdout[user] for user in users}
    for model, lists in recommendations.items():
        metrics = evaluate(lists, truth, k, max(1, catalog))
        row[model] = {key: round(metrics[key], 6) for key in QUALITY_KEYS}
    return row


def popularity_bands(item_popularity: Mapping[int, int]) -> dict[int, str]:
    """Each item's band; ties in popularity are broken by item id."""
    ranked = sorted(item_popularity, key=lambda item: (-item_popularity[item], item))
    bands: dict[int, str] = {}
    start = 0
    for position, (band, share) in enumerate(POPULARITY_BANDS):
        stop = (len(ranked) if position == len(POPULARITY_BANDS) - 1
                else start + max(1, round(share * len(ranked))))
        bands.update({item: band for item in ranked[start:stop]})
        start = stop
    return bands


def exposure_by_band(recommendations: Mapping[str, Mapping[int, Sequence[int]]],
                     item_popularity: Mapping[int, int]) -> list[dict[str, Any]]:
    """Per band: its items, its share of training interactions and of each model's slots."""
    bands = popularity_bands(item_popularity)
    total_interactions = sum(item_popularity.values()) or 1
    slots = {model: defaultdict(int) for model in recommendations}
    totals = dict.fromkeys(recommendations, 0)
    for model, lists in recommendations.items():
        for items in lists.values():
            for item in items:
                slots[model][bands.get(item, "tail")] += 1
                totals[model] += 1
    rows = []
    for band, _ in POPULARITY_BANDS:
        members = [item for item, member_band in bands.items() if member_band == band]
        row: dict[str, Any] = {
            "band": band,
            "items": len(members),
            "interaction_share": round(sum(item_popularity[i] for i in members)
                                       / total_interactions, 6),
        }
        for model in recommendations:
            row[f"{model}_slot_share"] = round(slots[model][band] / (totals[model] or 1), 6)
        rows.append(row)
    return rows
