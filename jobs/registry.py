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
        registered = _fetch(conn, version)
    logger.info("registered model version %d (%s)", version, status)
    return registered


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


def _fetch(conn: Connection, version: int) -> ModelVersion:
    row = conn.execute(
        sa.text(f"SELECT {COLUMNS} FROM batchscore.model_versions WHERE version = :v"),
        {"v": version},
    ).first()
    if row is None:
        raise LookupError(f"model version {version} does not exist")
    return ModelVersion(*row)
