"""The run history: one row per nightly attempt, with its outcome, and the lease that
tells whether a process still works on a running one."""

from __future__ import annotations

import json
import logging
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Engine

from jobs.platform.db import session_lock, statement, try_session_lock
from jobs.platform.provenance import code_version, current_user

logger = logging.getLogger(__name__)

# The advisory lock class of run leases; the run id's CRC-32 is the object.
RUN_LOCK_CLASS = 72_032
# How long a run's lease waits for an earlier process of the same run to let go.
LEASE_WAIT_SECONDS = 60.0


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

    @property
    def empty_day(self) -> str | None:
        """For a nightly whose date had no input events: what was done about it."""
        return empty_day_note(self.stats)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("logical_date", "started_at", "finished_at"):
            value = getattr(self, key)
            record[key] = value.isoformat() if value is not None else None
        return record


def empty_day_note(stats: dict[str, Any]) -> str | None:
    """"EMPTY DAY, alert raised" (or "NOT delivered") from a run's ``empty_day`` stats."""
    empty = stats.get("empty_day")
    if not empty:
        return None
    return "EMPTY DAY, alert " + ("raised" if empty.get("alerted") else "NOT delivered")


COLUMNS = (
    "run_id, kind, logical_date, model_version, status, started_at, finished_at,"
    " started_by, code_version, stats, error"
)


def new_run_id(kind: str, logical_date: date) -> str:
    return f"{kind}-{logical_date.isoformat()}-{uuid.uuid4().hex[:8]}"


def lock_key(run_id: str) -> tuple[int, int]:
    return RUN_LOCK_CLASS, zlib.crc32(run_id.encode()) & 0x7FFF_FFFF


@contextmanager
def lease(engine: Engine, run_id: str, wait_seconds: float = LEASE_WAIT_SECONDS
          ) -> Iterator[None]:
    """Hold ``run_id``'s lease while this process works on it.

    Take it before :func:`start` records the run, so that reconcile never
    sees the run without a holder while it begins. A killed process lets go
    of it with its connection.
    """
    with session_lock(engine, lock_key(run_id), f"run {run_id}", wait_seconds,
                      f"batchscore run {run_id}"):
        if exists(engine, run_id):
            heartbeat(engine, run_id)
        yield


def is_held(engine: Engine, run_id: str) -> bool:
    """Whether some process holds ``run_id``'s lease now."""
    return not try_session_lock(engine, lock_key(run_id))


def start(engine: Engine, kind: str, logical_date: date, model_version: int | None,
          run_id: str | None = None, lease_seconds: int = 0) -> str:
    """Record a run as running. ``lease_seconds`` is how long it may go without a process
    holding its lease before reconcile counts it gone (0: as soon as none holds it)."""
    run_id = run_id or new_run_id(kind, logical_date)
    with engine.begin() as conn:
        conn.execute(
            statement(conn, "INSERT INTO {schema}.runs (run_id, kind, logical_date, model_version,"
                " status, started_by, code_version, lease_seconds)"
                " VALUES (:run_id, :kind, :logical_date, :model_version, 'running',"
                " :started_by, :code_version, :lease_seconds)"),
            {"run_id": run_id, "kind": kind, "logical_date": logical_date,
             "model_version": model_version, "started_by": current_user(),
             "code_version": code_version(), "lease_seconds": lease_seconds},
        )
    logger.info("run %s started", run_id)
    return run_id


def exists(engine: Engine, run_id: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(statement(conn, "SELECT exists(SELECT 1 FROM {schema}.runs"
                                    " WHERE run_id = :id)"), {"id": run_id}).scalar_one()


def heartbeat(engine: Engine, run_id: str) -> None:
    """Renew a running run's lease: a process works on it now."""
    with engine.begin() as conn:
        conn.execute(statement(conn, "UPDATE {schema}.runs SET heartbeat_at = now()"
                             " WHERE run_id = :id AND status = 'running'"), {"id": run_id})


def status_of(engine: Engine, run_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(statement(conn, "SELECT status FROM {schema}.runs WHERE run_id = :id"),
                            {"id": run_id}).scalar()


def gone(engine: Engine) -> list[str]:
    """Running runs that no process works on any more: lease run out, nobody holds it."""
    with engine.connect() as conn:
        candidates = list(conn.execute(statement(conn,
            "SELECT run_id FROM {schema}.runs WHERE status = 'running'"
            " AND heartbeat_at + lease_seconds * interval '1 second' <= now()"
            " ORDER BY started_at")).scalars())
    return [run_id for run_id in candidates if not is_held(engine, run_id)]


def succeed(engine: Engine, run_id: str, stats: dict[str, Any]) -> None:
    _finish(engine, run_id, "succeeded", stats, None)
    logger.info("run %s succeeded", run_id)


def fail(engine: Engine, run_id: str, error: str, stats: dict[str, Any] | None = None) -> None:
    _finish(engine, run_id, "failed", stats or {}, error)
    logger.error("run %s failed: %s", run_id, error)


def skip(engine: Engine, run_id: str, reason: str, stats: dict[str, Any] | None = None) -> None:
    """Record a run that had nothing to do (no events for its date); ``reason`` says so."""
    _finish(engine, run_id, "skipped", stats or {}, reason)
    logger.info("run %s skipped: %s", run_id, reason)


def annotate(engine: Engine, run_id: str, stats: dict[str, Any],
             drop: tuple[str, ...] = ()) -> None:
    """Merge ``stats`` into a finished run's stats, removing the keys in ``drop``; the
    run's status is left as it is."""
    with engine.begin() as conn:
        conn.execute(
            statement(conn, "UPDATE {schema}.runs SET stats = (stats - CAST(:drop AS text[]))"
                    " || CAST(:stats AS jsonb) WHERE run_id = :run_id"),
            {"stats": json.dumps(stats), "drop": list(drop), "run_id": run_id},
        )


def get(engine: Engine, run_id: str) -> Run | None:
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            f"SELECT {COLUMNS} FROM {{schema}}.runs WHERE run_id = :id"),
                           {"id": run_id}).first()
    return Run(*row) if row is not None else None


def list_runs(engine: Engine, limit: int = 50) -> list[Run]:
    with engine.connect() as conn:
        rows = conn.execute(
            statement(conn,
                f"SELECT {COLUMNS} FROM {{schema}}.runs ORDER BY started_at DESC LIMIT :n"),
            {"n": limit},
        ).all()
    return [Run(*row) for row in rows]


def _finish(engine: Engine, run_id: str, status: str, stats: dict[str, Any],
            error: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            statement(conn, "UPDATE {schema}.runs SET status = :status, finished_at = now(),"
                " stats = stats || CAST(:stats AS jsonb), error = :error WHERE run_id = :run_id"),
            {"status": status, "stats": json.dumps(stats), "error": error, "run_id": run_id},
        )
