"""The run history: one row per train or nightly attempt, with its outcome."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs.provenance import code_version, current_user

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    run_id: str
    kind: str
    logical_date: date
    model_version: int | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    started_by: str
    code_version: str
    stats: dict[str, Any]
    error: str | None

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("logical_date", "started_at", "finished_at"):
            value = getattr(self, key)
            record[key] = value.isoformat() if value is not None else None
        return record


COLUMNS = (
    "run_id, kind, logical_date, model_version, status, started_at, finished_at,"
    " started_by, code_version, stats, error"
)


def new_run_id(kind: str, logical_date: date) -> str:
    return f"{kind}-{logical_date.isoformat()}-{uuid.uuid4().hex[:8]}"


def start(engine: Engine, kind: str, logical_date: date, model_version: int | None) -> str:
    run_id = new_run_id(kind, logical_date)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO batchscore.runs (run_id, kind, logical_date, model_version,"
                " status, started_by, code_version)"
                " VALUES (:run_id, :kind, :logical_date, :model_version, 'running',"
                " :started_by, :code_version)"
            ),
            {"run_id": run_id, "kind": kind, "logical_date": logical_date,
             "model_version": model_version, "started_by": current_user(),
             "code_version": code_version()},
        )
    logger.info("run %s started", run_id)
    return run_id


def succeed(engine: Engine, run_id: str, stats: dict[str, Any]) -> None:
    _finish(engine, run_id, "succeeded", stats, None)
    logger.info("run %s succeeded", run_id)


def fail(engine: Engine, run_id: str, error: str, stats: dict[str, Any] | None = None) -> None:
    _finish(engine, run_id, "failed", stats or {}, error)
    logger.error("run %s failed: %s", run_id, error)


def list_runs(engine: Engine, limit: int = 50) -> list[Run]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT {COLUMNS} FROM batchscore.runs ORDER BY started_at DESC LIMIT :n"),
            {"n": limit},
        ).all()
    return [Run(*row) for row in rows]


def _finish(engine: Engine, run_id: str, status: str, stats: dict[str, Any],
            error: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE batchscore.runs SET status = :status, finished_at = now(),"
                " stats = stats || CAST(:stats AS jsonb), error = :error WHERE run_id = :run_id"
            ),
            {"status": status, "stats": json.dumps(stats), "error": error, "run_id": run_id},
        )
