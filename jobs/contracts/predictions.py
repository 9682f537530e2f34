"""The prediction contract: what must hold before anything is published.

The whole-run bounds scale with what the data allows (the catalogue size C,
K, the users scored N, the popularity baseline on the same users), so that a
clean run of any size publishes and a degenerate model does not:

- ``catalog_coverage`` (distinct items shown / C) at least
  ``min(min_coverage_per_k * K/C, min_coverage_cap * min(C, T)/C)``, T being
  the items in all lists (N*K when every list is full);
- ``top_item_share`` (users shown the most shown item) at most
  ``min(1, max_top_item_share + K/C)``;
- ``exposure_spread`` (the effective number of items shown, the exponential
  of the entropy of item exposure, over the mean list length L: 1 when
  everyone gets the same list) at least ``min(exposure_spread_target,
  1 + exposure_spread_fraction * (min(C, T)/L - 1))``, the most attainable
  being ``min(C, T)/L``;
- ``history_gain``: of the users' own past items, the share the model scores
  above its K-th recommendation (``history_recall``), against the popularity
  baseline's share on the same users (``baseline_history_recall``, b): the
  part of the baseline's shortfall the model makes up, ``(recall - b) /
  (1 - b)``, at least ``min_history_gain``. One list for everyone scores 0, a
  constant score or a model fitted to shuffled events below 0.

The last two measure the model's choice, so they count only when some user
has more than K unseen catalogue items; when none has (K at or above what
the users have left), every list is forced and both are skipped.

Each figure is computed from a few totals (:class:`ExposureTotals`,
:class:`HistoryTotals`) that the scoring job aggregates in Spark and
:func:`served_checks` in SQL.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from jobs.contracts.engine import (
    ContractError,
    Report,
    Validator,
    failure_message,
    load_contracts_config,
)
from jobs.platform.arrays import sorted_positions
from jobs.platform.db import statement

SUITE = "predictions"
SUMMARY_SUITE = "predictions_summary"
# The summary expectations skipped when no user has more than K unseen items.
NEEDS_CHOICE = "choice"


@dataclass(frozen=True)
class ExposureTotals:
    """Item exposure of a run's lists: e_i, the users shown item i."""

    items: int            # items shown to anyone
    top: int              # max e_i
    total: int            # sum e_i (every list's length)
    entropy_sum: float    # sum e_i * ln(e_i)

    def effective_items(self) -> float:
        """exp(entropy) of the exposure distribution: K when every list is the same."""
        if self.total <= 0:
            return 0.0
        return math.exp(math.log(self.total) - self.entropy_sum / self.total)

    @classmethod
    def of(cls, exposure: pd.Series | np.ndarray) -> ExposureTotals:
        """From the users each shown item reached."""
        counts = np.asarray(exposure, dtype=np.float64)
        counts = counts[counts > 0]
        return cls(items=len(counts), top=int(counts.max()) if len(counts) else 0,
                   total=int(counts.sum()), entropy_sum=float((counts * np.log(counts)).sum()))


@dataclass(frozen=True)
class HistoryTotals:
    """Over the users with more than K unseen catalogue items: the sums of the per-user
    shares of their own items ranked above the K-th recommendation, by the model and
    by the popularity baseline."""

    users: int
    model_recall_sum: float
    baseline_recall_sum: float

    @classmethod
    def of(cls, checks: pd.DataFrame, catalog_items: int, k: int) -> HistoryTotals:
        """From the per-user checks frame (see :func:`history_columns`)."""
        room = checks[(catalog_items - checks["n_seen_known"] > k) & (checks["n_seen_known"] > 0)]
        known = room["n_seen_known"].astype(np.float64)
        return cls(users=len(room),
                   model_recall_sum=float((room["n_seen_above"] / known).sum()),
                   baseline_recall_sum=float((room["baseline_seen_above"] / known).sum()))


@dataclass(frozen=True)
class PredictionSummary:
    model_version: int | None
    active_users: int
    k: int
    catalog_items: int
    scored_users: int
    listed_items: int
    catalog_coverage: float
    top_item_share: float
    exposure_spread: float
    history_users: int
    history_recall: float
    baseline_history_recall: float

    @property
    def history_gain(self) -> float:
        """The part of the baseline's shortfall in ranking the users' own items that the
        model makes up (see the module docstring)."""
        shortfall = 1.0 - self.baseline_history_recall
        if shortfall > 0:
            return (self.history_recall - self.baseline_history_recall) / shortfall
        # The baseline ranks every seen item above its K-th: nothing left to make up.
        return 1.0 if self.history_recall >= 1.0 else self.history_recall - 1.0


def summarize(exposure: ExposureTotals, history: HistoryTotals, *, model_version: int | None,
              active_users: int, scored_users: int, catalog_items: int, k: int
              ) -> PredictionSummary:
    """The run summary from its totals; the scoring job and :func:`served_checks` share it."""
    users = history.users
    return PredictionSummary(
        model_version=model_version, active_users=active_users, k=k,
        catalog_items=catalog_items, scored_users=scored_users, listed_items=exposure.total,
        catalog_coverage=exposure.items / catalog_items if catalog_items else 0.0,
        top_item_share=exposure.top / scored_users if scored_users else 0.0,
        exposure_spread=(exposure.effective_items() * scored_users / exposure.total
                         if exposure.total else 0.0),
        history_users=users,
        history_recall=history.model_recall_sum / users if users else 0.0,
        baseline_history_recall=history.baseline_recall_sum / users if users else 0.0,
    )


def summary_bounds(summary: PredictionSummary, config: dict[str, Any]) -> dict[str, float]:
    """The whole-run bounds for this run's catalogue, K and users (see the module docstring)."""
    catalog = max(summary.catalog_items, 1)
    per_k = summary.k / catalog
    # The most distinct items the lists could hold, and the mean list length.
    attainable = min(catalog, summary.listed_items)
    length = summary.listed_items / summary.scored_users if summary.scored_users else 1.0
    return {
        "min_catalog_coverage": min(config["min_coverage_per_k"] * per_k,
                                    config["min_coverage_cap"] * attainable / catalog),
        "max_top_item_share": min(1.0, config["max_top_item_share"] + per_k),
        "min_exposure_spread": min(config["exposure_spread_target"],
                                   1 + config["exposure_spread_fraction"]
                                   * (attainable / max(length, 1.0) - 1)),
        "min_history_gain": float(config["min_history_gain"]),
    }


def baseline_seen_above(parents: np.ndarray, seen_ranks: np.ndarray, n_users: int,
                        popularity_by_rank: np.ndarray, k: int) -> np.ndarray:
    """Per user, how many of their seen items the popularity baseline scores above its
    K-th recommendation (the K-th most popular item they have not seen).

    ``seen_ranks`` are the popularity ranks (0 = most popular, ties by item id) of
    the users' distinct seen catalogue items, ``parents`` the user (0..n_users-1) of
    each; ``popularity_by_rank`` the popularity at each rank, non-increasing.
    """
    order = np.lexsort((seen_ranks, parents))
    parents, ranks = parents[order], seen_ranks[order]
    start = np.searchsorted(parents, np.arange(n_users))
    place = np.arange(len(parents)) - start[parents]
    # A seen item at rank r, the i-th of the user's (0-based), has r - i unseen items
    # ahead of it: it ranks above the K-th unseen one when fewer than K are.
    ahead = np.bincount(parents[ranks - place < k], minlength=n_users)
    kth_rank = k - 1 + ahead
    catalog = len(popularity_by_rank)
    threshold = np.where(kth_rank < catalog,
                         popularity_by_rank[np.minimum(kth_rank, catalog - 1)], np.inf)
    above = popularity_by_rank[ranks] > threshold[parents]
    return np.bincount(parents[above], minlength=n_users)


@dataclass(frozen=True)
class PopularityRanking:
    """The catalogue by popularity: ``sorted_ids`` (item ids ascending), ``rank_of``
    (each sorted id's rank, 0 = most popular, ties by item id) and
    ``popularity_by_rank`` (non-increasing)."""

    sorted_ids: np.ndarray
    rank_of: np.ndarray
    popularity_by_rank: np.ndarray


def popularity_ranking(popularity: pd.DataFrame) -> PopularityRanking:
    """From ``item_id`` and ``users`` (distinct users per catalogue item)."""
    ranked = popularity.sort_values(["users", "item_id"], ascending=[False, True],
                                    kind="stable")
    ids = ranked["item_id"].to_numpy(dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    return PopularityRanking(sorted_ids=ids[order], rank_of=order.astype(np.int64),
                             popularity_by_rank=ranked["users"].to_numpy(dtype=np.float64))


def history_counts(parents: np.ndarray, items: np.ndarray, n_users: int,
                   ranking: PopularityRanking, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user, from their distinct seen items (``items``, user ``parents`` in
    0..n_users-1): how many are in the catalogue, and how many of those the
    popularity baseline scores above its K-th recommendation."""
    items = np.asarray(items, dtype=np.int64)
    parents = np.asarray(parents, dtype=np.int64)
    if len(ranking.sorted_ids) == 0:
        return np.zeros(n_users, dtype=np.int64), np.zeros(n_users, dtype=np.int64)
    positions, known = sorted_positions(ranking.sorted_ids, items)
    parents = parents[known]
    ranks = ranking.rank_of[positions[known]]
    return (np.bincount(parents, minlength=n_users).astype(np.int64),
            baseline_seen_above(parents, ranks, n_users, ranking.popularity_by_rank, k
                                ).astype(np.int64))


def history_columns(seen: pd.DataFrame, ranking: PopularityRanking, k: int) -> pd.DataFrame:
    """``user_id``, ``n_seen_known`` and ``baseline_seen_above`` for a frame of
    ``user_id`` and ``seen`` (arrays of distinct item ids), as the scoring job
    computes them."""
    seen = seen.reset_index(drop=True)
    exploded = seen["seen"].explode().dropna()
    parents = seen.index.get_indexer(exploded.index)
    known, above = history_counts(parents, exploded.to_numpy(dtype=np.int64), len(seen),
                                  ranking, k)
    return pd.DataFrame({"user_id": seen["user_id"].to_numpy(), "n_seen_known": known,
                         "baseline_seen_above": above})


def check_predictions(
    validator: Validator,
    users: pd.DataFrame,
    summary: PredictionSummary,
    requested_model_version: int,
    run_name: str | None = None,
    label: str = "predictions",
) -> list[Report]:
    """Validate the per-user checks and the run summary; raise when either fails."""
    config = load_contracts_config()["predictions"]
    users_report = validator.validate(
        SUITE, users.set_index("user_id", drop=False),
        {"k": summary.k,
         "users_min": int(summary.active_users * config["min_scored_fraction"]),
         "users_max": summary.active_users},
        row_label="user", run_name=run_name,
    )
    reports = [users_report, validate_summary(validator, summary, requested_model_version,
                                              config, run_name)]
    raise_on_failures(reports, summary, label)
    return reports


def check_summary(validator: Validator, summary: PredictionSummary,
                  requested_model_version: int, run_name: str | None = None,
                  label: str = "predictions") -> Report:
    """Validate the run summary alone; raise when it fails."""
    report = validate_summary(validator, summary, requested_model_version,
                              load_contracts_config()["predictions"], run_name)
    raise_on_failures([report], summary, label)
    return report


def validate_summary(validator: Validator, summary: PredictionSummary,
                     requested_model_version: int, config: dict[str, Any],
                     run_name: str | None) -> Report:
    frame = pd.DataFrame([{
        "catalog_coverage": summary.catalog_coverage,
        "top_item_share": summary.top_item_share,
        "exposure_spread": summary.exposure_spread,
        "history_gain": summary.history_gain,
        "model_version": summary.model_version if summary.model_version is not None else -1,
    }])
    return validator.validate(
        SUMMARY_SUITE, frame,
        {**summary_bounds(summary, config), "model_versions": [requested_model_version]},
        unavailable=frozenset() if summary.history_users else frozenset({NEEDS_CHOICE}),
        run_name=run_name,
    )


def raise_on_failures(reports: list[Report], summary: PredictionSummary, label: str) -> None:
    failures = [failure for report in reports for failure in report.failures]
    if failures:
        raise ContractError(
            failure_message(f"prediction contract failed for {label} (K={summary.k}, "
                            f"{summary.catalog_items} catalogue items, {summary.scored_users}"
                            f" users)", failures, reports),
            reports,
        )


def summary_stats(summary: PredictionSummary) -> dict[str, Any]:
    return {f"predictions_{key}": value for key, value in asdict(summary).items()}


def served_checks(engine: Engine, publish_id: int | None = None
                  ) -> tuple[pd.DataFrame, PredictionSummary, int]:
    """The same checks computed in SQL over a published version (default: the served one).

    The catalogue is the items the model was trained on (every item with an event up
    to its training date). The history figures need the model's scores of items the
    users have seen, which PostgreSQL does not hold: they are the ones the run
    recorded. Returns the per-user frame, the summary, and the version's recorded model.
    """
    with engine.connect() as conn:
        if publish_id is None:
            publish_id = conn.execute(
                statement(conn, "SELECT publish_id FROM {schema}.serving")).scalar()
            if publish_id is None:
                raise LookupError("nothing is published yet")
        version = conn.execute(statement(conn,
            "SELECT v.model_version, v.logical_date, v.k, r.stats, m.trained_as_of"
            " FROM {schema}.prediction_versions v JOIN {schema}.runs r USING (run_id)"
            " JOIN {schema}.model_versions m ON m.version = v.model_version"
            " WHERE v.publish_id = :id AND v.status = 'published'"), {"id": publish_id}).first()
        if version is None:
            raise LookupError(f"published version {publish_id} does not exist or was dropped")
        params = {"id": publish_id, "d": version.logical_date, "t": version.trained_as_of,
                  "k": int(version.k)}
        catalog_cte = ("catalog AS (SELECT DISTINCT item_id FROM {schema}.interactions"
                       " WHERE event_at < CAST(:t AS date) + 1)")
        users = pd.read_sql(statement(conn,
            "WITH p AS (SELECT * FROM {schema}.predictions WHERE publish_id = :id),"
            f" {catalog_cte},"
            " seen AS (SELECT DISTINCT i.user_id, i.item_id FROM {schema}.interactions i"
            "   WHERE i.event_at < CAST(:d AS date) + 1"
            "   AND i.user_id IN (SELECT user_id FROM p)),"
            " known AS (SELECT user_id, count(*) AS n FROM seen JOIN catalog USING (item_id)"
            "   GROUP BY user_id)"
            " SELECT p.user_id, count(*) AS n_items,"
            "  least(:k, (SELECT count(*) FROM catalog) - coalesce(min(known.n), 0))"
            "   AS n_wanted,"
            "  count(DISTINCT p.item_id) AS n_distinct,"
            "  count(seen.item_id) AS n_seen,"
            "  bool_and(p.score NOT IN ('NaN', 'Infinity', '-Infinity')) AS scores_finite,"
            "  array_agg(p.score ORDER BY p.rank)"
            "   = array_agg(p.score ORDER BY p.score DESC, p.rank) AS scores_sorted"
            " FROM p LEFT JOIN seen USING (user_id, item_id) LEFT JOIN known USING (user_id)"
            " GROUP BY p.user_id"), conn, params=params)
        exposure = conn.execute(statement(conn,
            "SELECT count(*), coalesce(max(n), 0), coalesce(sum(n), 0),"
            " coalesce(sum(n * ln(n)), 0) FROM"
            " (SELECT item_id, count(DISTINCT user_id) AS n FROM {schema}.predictions"
            "  WHERE publish_id = :id GROUP BY item_id) e"), params).one()
        catalog = conn.execute(statement(conn, f"WITH {catalog_cte} SELECT count(*) FROM catalog"),
                               params).scalar_one()
    stats = version.stats or {}
    history_users = int(stats.get("predictions_history_users", 0))
    summary = summarize(
        ExposureTotals(items=int(exposure[0]), top=int(exposure[1]), total=int(exposure[2]),
                       entropy_sum=float(exposure[3])),
        HistoryTotals(
            users=history_users,
            model_recall_sum=float(stats.get("predictions_history_recall", 0.0)) * history_users,
            baseline_recall_sum=float(stats.get("predictions_baseline_history_recall", 0.0))
            * history_users),
        model_version=int(version.model_version),
        active_users=int(stats.get("active_users", len(users))),
        scored_users=len(users), catalog_items=int(catalog), k=int(version.k),
    )
    return users, summary, int(version.model_version)


@dataclass(frozen=True)
class PublishedCheck:
    """The prediction contract run by hand on a published version."""

    label: str
    users: int
    summary: PredictionSummary
    reports: list[Report]


def validate_published(validator: Validator, engine: Engine,
                       publish_id: int | None = None) -> PublishedCheck:
    """The prediction contract on a published version (default: the served one), from
    what PostgreSQL holds; raises :class:`ContractError` naming what failed."""
    users, summary, model_version = served_checks(engine, publish_id)
    label = "the served version" if publish_id is None else f"version {publish_id}"
    reports = check_predictions(validator, users, summary, model_version, label=label)
    return PublishedCheck(label=label, users=len(users), summary=summary, reports=reports)
