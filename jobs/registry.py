"""The model registry: every trained version, its provenance, and which one serves."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    version: int
    status: str
    created_at: datetime
    created_by: str
    trained_as_of: date
    params: dict[str, Any]
    metrics: dict[str, Any]
    data_snapshot: dict[str, Any]
    code_version: str
    artifact_uri: str

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["created_at"] = self.created_at.isoformat()
        record["trained_as_of"] = self.trained_as_of.isoformat()
        return record


@dataclass(frozen=True)
class NewModel:
    """What training knows about a model before it has a version number."""

    created_by: str
    trained_as_of: date
    params: dict[str, Any]
    metrics: dict[str, Any]
    data_snapshot: dict[str, Any]
    code_version: str
    artifact_uri: str


class NoServingModelError(LookupError):
    """No model version is serving yet."""


COLUMNS = (
    "version, status, created_at, created_by, trained_as_of, params, metrics,"
    " data_snapshot, code_version, artifact_uri"
)


def register(engine: Engine, model: NewModel, *, promote_if_first: bool = True) -> ModelVersion:
    """Record a new version (status candidate, or serving when none serves yet)."""
    with engine.begin() as conn:
        conn.execute(sa.text("LOCK TABLE batchscore.model_versions IN EXCLUSIVE MODE"))
        version = conn.execute(
            sa.text("SELECT coalesce(max(version), 0) + 1 FROM batchscore.model_versions")
        ).scalar_one()
        serving_exists = conn.execute(sa.text(
            "SELECT exists(SELECT 1 FROM batchscore.model_versions WHERE status = 'serving')"
        )).scalar_one()
        status = "serving" if promote_if_first and not serving_exists else "candidate"
        conn.execute(
            sa.text(
                "INSERT INTO batchscore.model_versions (version, status, created_by,"
                " trained_as_of, params, metrics, data_snapshot, code_version, artifact_uri)"
                " VALUES (:version, :status, :created_by, :trained_as_of, :params, :metrics,"
                " :data_snapshot, :code_version, :artifact_uri)"
            ),
            {
                **asdict(model),
                "version": version,
                "status": status,
                "params": json.dumps(model.params),
                "metrics": json.dumps(model.metrics),
                "data_snapshot": json.dumps(model.data_snapshot),
            },
        )
        record_status(conn, version, status, model.created_by,
                      "registered; promoted as the first version" if status == "serving"
                      else "registered")
        registered = _fetch(conn, version)
    logger.info("registered model version %d (%s)", version, status)
    return registered


def record_status(conn: Connection, version: int, status: str, changed_by: str,
                  reason: str) -> None:
    conn.execute(
        sa.text("INSERT INTO batchscore.model_status_history (version, status, changed_by,"
                " reason) VALUES (:v, :s, :by, :why)"),
        {"v": version, "s": status, "by": changed_by, "why": reason},
    )


def promote(engine: Engine, version: int, changed_by: str, reason: str) -> ModelVersion:
    """Make ``version`` the serving one; the previous serving version is retired."""
    with engine.begin() as conn:
        conn.execute(sa.text("LOCK TABLE batchscore.model_versions IN EXCLUSIVE MODE"))
        target = _fetch(conn, version)
        if target.status == "serving":
            return target
        previous = conn.execute(sa.text(
            "UPDATE batchscore.model_versions SET status = 'retired' WHERE status = 'serving'"
            " RETURNING version")).scalar()
        if previous is not None:
            record_status(conn, previous, "retired", changed_by,
                          f"replaced by version {version}")
        conn.execute(sa.text(
            "UPDATE batchscore.model_versions SET status = 'serving' WHERE version = :v"),
            {"v": version})
        record_status(conn, version, "serving", changed_by, reason)
        promoted = _fetch(conn, version)
    logger.info("model version %d now serving (%s)", version, reason)
    return promoted


def model_for_date(engine: Engine, run_date: date, pinned: int | None = None) -> ModelVersion:
    """The model a run for ``run_date`` uses.

    A pinned version wins. Otherwise the serving version, unless it was
    trained on data after ``run_date`` (a backfill): then the newest version
    trained as of ``run_date`` or earlier that has served at some point.
    """
    if pinned is not None:
        with engine.connect() as conn:
            return _fetch(conn, pinned)
    current = serving(engine)
    if current.trained_as_of <= run_date:
        return current
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            f"SELECT {COLUMNS} FROM batchscore.model_versions m WHERE trained_as_of <= :d"
            " AND EXISTS (SELECT 1 FROM batchscore.model_status_history h"
            "  WHERE h.version = m.version AND h.status = 'serving')"
            " ORDER BY trained_as_of DESC, version DESC LIMIT 1"), {"d": run_date}).first()
    if row is None:
        raise NoServingModelError(
            f"no model trained as of {run_date} or earlier has served (the serving version "
            f"{current.version} was trained as of {current.trained_as_of}); pin one with "
            "--model-version"
        )
    return ModelVersion(*row)


def serving(engine: Engine) -> ModelVersion:
    """The serving version; raises :class:`NoServingModelError` when there is none."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            f"SELECT {COLUMNS} FROM batchscore.model_versions WHERE status = 'serving'"
        )).first()
    if row is None:
        raise NoServingModelError("no model version is serving yet; run `batchscore train` first")
    return ModelVersion(*row)


def list_versions(engine: Engine) -> list[ModelVersion]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            f"SELECT {COLUMNS} FROM batchscore.model_versions ORDER BY version"
        )).all()
    return [ModelVersion(*row) for row in rows]


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def promotion_decision(engine: Engine, candidate: ModelVersion) -> PromotionDecision:
    """The offline gates: beat the popularity baseline, and do not fall behind the
    serving model's NDCG by more than ``max_ndcg_drop`` (``schemas/contracts.json``)."""
    from jobs.validation.engine import load_contracts_config

    tolerance = float(load_contracts_config()["promotion"]["max_ndcg_drop"])
    ndcg = float(candidate.metrics["als"]["ndcg_at_k"])
    baseline = float(candidate.metrics["popularity"]["ndcg_at_k"])
    if ndcg <= baseline:
        return PromotionDecision(False, f"NDCG {ndcg:.4f} does not beat popularity {baseline:.4f}")
    try:
        current = serving(engine)
    except NoServingModelError:
        return PromotionDecision(True, f"NDCG {ndcg:.4f} beats popularity {baseline:.4f}; "
                                       "no model serves yet")
    if current.version == candidate.version:
        return PromotionDecision(True, "already serving")
    served_ndcg = float(current.metrics["als"]["ndcg_at_k"])
    if ndcg < served_ndcg * (1 - tolerance):
        return PromotionDecision(
            False, f"NDCG {ndcg:.4f} falls behind the serving version {current.version}'s "
                   f"{served_ndcg:.4f} by more than {tolerance:.0%}")
    return PromotionDecision(
        True, f"NDCG {ndcg:.4f} beats popularity {baseline:.4f} and is within {tolerance:.0%} "
              f"of the serving version {current.version} ({served_ndcg:.4f})")


def latest_trained_as_of(engine: Engine, as_of: date) -> ModelVersion | None:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            f"SELECT {COLUMNS} FROM batchscore.model_versions WHERE trained_as_of = :d"
            " ORDER BY version DESC LIMIT 1"), {"d": as_of}).first()
    return ModelVersion(*row) if row else None


def _fetch(conn: Connection, version: int) -> ModelVersion:
    row = conn.execute(
        sa.text(f"SELECT {COLUMNS} FROM batchscore.model_versions WHERE version = :v"),
        {"v": version},
    ).first()
    if row is None:
        raise LookupError(f"model version {version} does not exist")
    return ModelVersion(*row)
