"""The prediction contract: what must hold before anything is published."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs.contracts.engine import (
    ContractError,
    Report,
    Validator,
    failure_message,
    load_contracts_config,
)

SUITE = "predictions"
SUMMARY_SUITE = "predictions_summary"


@dataclass(frozen=True)
class PredictionSummary:
    catalog_coverage: float
    top_item_share: float
    model_version: int | None
    active_users: int
    k: int


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
    summary_frame = pd.DataFrame([{
        "catalog_coverage": summary.catalog_coverage,
        "top_item_share": summary.top_item_share,
        "model_version": summary.model_version if summary.model_version is not None else -1,
    }])
    summary_report = validator.validate(
        SUMMARY_SUITE, summary_frame,
        {"min_catalog_coverage": config["min_catalog_coverage"],
         "max_top_item_share": config["max_top_item_share"],
         "model_versions": [requested_model_version]},
        run_name=run_name,
    )
    reports = [users_report, summary_report]
    failures = [failure for report in reports for failure in report.failures]
    if failures:
        raise ContractError(
            failure_message(f"prediction contract failed for {label}", failures, reports),
            reports,
        )
    return reports


def summary_stats(summary: PredictionSummary) -> dict[str, Any]:
    return {f"predictions_{key}": value for key, value in asdict(summary).items()}


def served_checks(engine: Engine, publish_id: int | None = None
                  ) -> tuple[pd.DataFrame, PredictionSummary, int]:
    """The same checks computed in SQL over a published version (default: the served one).

    Returns the per-user frame, the summary, and the version's recorded model.
    """
    with engine.connect() as conn:
        if publish_id is None:
            publish_id = conn.execute(
                sa.text("SELECT publish_id FROM batchscore.serving")).scalar()
            if publish_id is None:
                raise LookupError("nothing is published yet")
        version = conn.execute(sa.text(
            "SELECT v.model_version, v.logical_date, v.k, r.stats"
            " FROM batchscore.prediction_versions v JOIN batchscore.runs r USING (run_id)"
            " WHERE v.publish_id = :id AND v.status = 'published'"), {"id": publish_id}).first()
        if version is None:
            raise LookupError(f"published version {publish_id} does not exist or was dropped")
        params = {"id": publish_id, "d": version.logical_date}
        users = pd.read_sql(sa.text(
            "WITH p AS (SELECT * FROM batchscore.predictions WHERE publish_id = :id),"
            " seen AS (SELECT DISTINCT i.user_id, i.item_id FROM batchscore.interactions i"
            "   WHERE i.event_at < CAST(:d AS date) + 1"
            "   AND i.user_id IN (SELECT user_id FROM p))"
            " SELECT p.user_id, count(*) AS n_items, count(DISTINCT p.item_id) AS n_distinct,"
            "  count(seen.item_id) AS n_seen,"
            "  bool_and(p.score NOT IN ('NaN', 'Infinity', '-Infinity')) AS scores_finite,"
            "  array_agg(p.score ORDER BY p.rank)"
            "   = array_agg(p.score ORDER BY p.score DESC, p.rank) AS scores_sorted"
            " FROM p LEFT JOIN seen USING (user_id, item_id) GROUP BY p.user_id"), conn,
            params=params)
        exposure = conn.execute(sa.text(
            "SELECT count(DISTINCT item_id), coalesce(max(n), 0) FROM"
            " (SELECT item_id, count(DISTINCT user_id) AS n FROM batchscore.predictions"
            "  WHERE publish_id = :id GROUP BY item_id) e"), params).one()
        catalog = conn.execute(sa.text(
            "SELECT count(DISTINCT item_id) FROM batchscore.interactions"
            " WHERE event_at < CAST(:d AS date) + 1"), params).scalar_one()
    stats = version.stats or {}
    active = int(stats.get("active_users", len(users)))
    summary = PredictionSummary(
        catalog_coverage=exposure[0] / catalog if catalog else 0.0,
        top_item_share=exposure[1] / len(users) if len(users) else 0.0,
        model_version=int(version.model_version),
        active_users=active,
        k=int(version.k),
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
