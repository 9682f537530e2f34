"""The model registry: every trained version, its provenance, and which one serves."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from jobs.platform.db import statement

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
    artifacts: list[dict[str, Any]]
    gates: dict[str, Any]
    reports: dict[str, Any]
    # The model's family (jobs.scoring.model.FAMILIES).
    kind: str = "als"

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["created_at"] = self.created_at.isoformat()
        record["trained_as_of"] = self.trained_as_of.isoformat()
        return record

    def artifact(self, kind: str) -> dict[str, Any] | None:
        """The recorded artifact of this ``kind`` (e.g. ``training_set``), or None."""
        return next((record for record in self.artifacts if record["kind"] == kind), None)


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
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)
    kind: str = "als"


class NoServingModelError(LookupError):
    """No model version is serving yet."""


class UnknownVersionError(LookupError):
    """No model version has this number."""


class PromotionRefusedError(RuntimeError):
    """A version's gates refuse its promotion; nothing was changed."""


COLUMNS = (
    "version, status, created_at, created_by, trained_as_of, params, metrics,"
    " data_snapshot, code_version, artifact_uri, artifacts, gates, reports, kind"
)
# The statuses a version can have; ``serving`` is held by at most one.
STATUSES = ("candidate", "shadow", "canary", "serving", "retired", "rejected", "rolled_back")


def register(engine: Engine, model: NewModel, *, promote_if_first: bool = True) -> ModelVersion:
    """Record a new version with the status its gates give it.

    Failed gates make it ``rejected``; passed ones (or none, for a model
    registered from elsewhere) ``candidate``, or ``serving`` when no version
    serves yet and ``promote_if_first``.
    """
    with engine.begin() as conn:
        conn.execute(statement(conn, "LOCK TABLE {schema}.model_versions IN EXCLUSIVE MODE"))
        version = conn.execute(
            statement(conn, "SELECT coalesce(max(version), 0) + 1 FROM {schema}.model_versions")
        ).scalar_one()
        serving_exists = conn.execute(statement(
            conn, "SELECT exists(SELECT 1 FROM {schema}.model_versions WHERE status = 'serving')"
        )).scalar_one()
        judged = "gates passed" if model.gates else "no gates ran"
        if model.gates and not model.gates["passed"]:
            status, reason = "rejected", f"registered; gates failed: {model.gates['reason']}"
        elif promote_if_first and not serving_exists:
            status, reason = "serving", f"registered; {judged}, promoted as the first version"
        else:
            status, reason = "candidate", f"registered; {judged}"
        conn.execute(
            statement(conn, "INSERT INTO {schema}.model_versions (version, status, created_by,"
                " trained_as_of, params, metrics, data_snapshot, code_version, artifact_uri,"
                " artifacts, gates, reports, kind)"
                " VALUES (:version, :status, :created_by, :trained_as_of, :params, :metrics,"
                " :data_snapshot, :code_version, :artifact_uri, :artifacts, :gates, :reports,"
                " :kind)"),
            {
                **asdict(model),
                "version": version,
                "status": status,
                "params": json.dumps(model.params),
                "metrics": json.dumps(model.metrics),
                "data_snapshot": json.dumps(model.data_snapshot),
                "artifacts": json.dumps(model.artifacts),
                "gates": json.dumps(model.gates),
                "reports": json.dumps(model.reports),
            },
        )
        record_status(conn, version, status, model.created_by, reason)
        registered = _fetch(conn, version)
    logger.info("registered model version %d (%s)", version, status)
    return registered


def record_status(conn: Connection, version: int, status: str, changed_by: str,
                  reason: str) -> None:
    conn.execute(
        statement(conn, "INSERT INTO {schema}.model_status_history (version, status, changed_by,"
                " reason) VALUES (:v, :s, :by, :why)"),
        {"v": version, "s": status, "by": changed_by, "why": reason},
    )


def promote(engine: Engine, version: int, changed_by: str, reason: str) -> ModelVersion:
    """Make ``version`` the serving one; the previous serving version is retired."""
    with engine.begin() as conn:
        conn.execute(statement(conn, "LOCK TABLE {schema}.model_versions IN EXCLUSIVE MODE"))
        target = _fetch(conn, version)
        if target.status == "serving":
            return target
        previous = conn.execute(statement(conn,
            "UPDATE {schema}.model_versions SET status = 'retired' WHERE status = 'serving'"
            " RETURNING version")).scalar()
        if previous is not None:
            record_status(conn, previous, "retired", changed_by,
                          f"replaced by version {version}")
        conn.execute(statement(conn,
            "UPDATE {schema}.model_versions SET status = 'serving' WHERE version = :v"),
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
        row = conn.execute(statement(conn,
            f"SELECT {COLUMNS} FROM {{schema}}.model_versions m WHERE trained_as_of <= :d"
            " AND EXISTS (SELECT 1 FROM {schema}.model_status_history h"
            "  WHERE h.version = m.version AND h.status = 'serving')"
            " ORDER BY trained_as_of DESC, version DESC LIMIT 1"), {"d": run_date}).first()
    if row is None:
        raise NoServingModelError(
            f"no model trained as of {run_date} or earlier has served (the serving version "
            f"{current.version} was trained as of {current.trained_as_of}); pin one with "
            "--model-version"
        )
    return ModelVersion(*row)


def serving_or_none(engine: Engine) -> ModelVersion | None:
    try:
        return serving(engine)
    except NoServingModelError:
        return None


def serving(engine: Engine) -> ModelVersion:
    """The serving version; raises :class:`NoServingModelError` when there is none."""
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            f"SELECT {COLUMNS} FROM {{schema}}.model_versions WHERE status = 'serving'")).first()
    if row is None:
        raise NoServingModelError("no model version is serving yet; run `batchscore train` first")
    return ModelVersion(*row)


def list_versions(engine: Engine) -> list[ModelVersion]:
    with engine.connect() as conn:
        rows = conn.execute(statement(conn,
            f"SELECT {COLUMNS} FROM {{schema}}.model_versions ORDER BY version")).all()
    return [ModelVersion(*row) for row in rows]


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def promotion_decision(engine: Engine, candidate: ModelVersion) -> PromotionDecision:
    """Whether the gates let ``candidate`` be promoted automatically now.

    The gates ran at training against the model serving then; if another
    version serves now, their verdict is stale and the candidate waits for a
    new training run (or a person's ``batchscore models promote``).
    """
    if candidate.status == "serving":
        return PromotionDecision(True, "already serving")
    if candidate.status == "rolled_back":
        return PromotionDecision(False, f"version {candidate.version} was rolled back; only "
                                        "a person can promote it again")
    if not candidate.gates:
        return PromotionDecision(False, f"version {candidate.version} has no recorded gates")
    if not candidate.gates["passed"]:
        return PromotionDecision(False, candidate.gates["reason"])
    current = serving_or_none(engine)
    judged_against = candidate.gates.get("serving_version")
    if (current.version if current else None) != judged_against:
        return PromotionDecision(
            False, f"the gates compared it with serving version {judged_against}, but version "
                   f"{current.version if current else None} serves now; train again")
    return PromotionDecision(True, candidate.gates["reason"])


def promote_by_hand(engine: Engine, version: int, changed_by: str, reason: str | None,
                    force: bool = False) -> ModelVersion:
    """A person promotes ``version``: allowed when its gates are, or with ``force`` and a
    ``reason``, which is recorded with the gates' verdict it overrides."""
    decision = promotion_decision(engine, get(engine, version))
    if decision.promote:
        return promote(engine, version, changed_by, reason or decision.reason)
    if not force:
        raise PromotionRefusedError(f"version {version} not promoted: {decision.reason} "
                                    "(--force promotes it anyway, with --reason)")
    if not (reason or "").strip():
        raise PromotionRefusedError("--force needs --reason: overriding the gates is recorded")
    return promote(engine, version, changed_by,
                   f"forced by hand over the gates ({decision.reason}): {reason}")


def set_status(engine: Engine, version: int, status: str, changed_by: str,
               reason: str) -> ModelVersion:
    """Move a version that does not serve to another status that is not ``serving``
    (use :func:`promote` for that), recording who and why."""
    if status not in STATUSES or status == "serving":
        raise ValueError(f"cannot set status {status!r} this way")
    with engine.begin() as conn:
        current = _fetch(conn, version)
        if current.status == "serving":
            raise ValueError(f"version {version} serves; promote another or roll back first")
        if current.status == status:
            return current
        conn.execute(statement(conn,
            "UPDATE {schema}.model_versions SET status = :s WHERE version = :v"),
                     {"s": status, "v": version})
        record_status(conn, version, status, changed_by, reason)
        updated = _fetch(conn, version)
    logger.info("model version %d: %s -> %s (%s)", version, current.status, status, reason)
    return updated


def record_trial(engine: Engine, version: int, status: str, reason: str, by: str) -> None:
    """A shadow or canary run of ``version`` succeeded: a candidate moves to ``status``
    (and a shadow on to canary); other statuses stay as they are."""
    current = get(engine, version).status
    if current == "candidate" or (current, status) == ("shadow", "canary"):
        set_status(engine, version, status, by, reason)


def record_forced_use(engine: Engine, version: int, changed_by: str, reason: str) -> None:
    """Record in a version's status history that a person made it serve despite its status."""
    with engine.begin() as conn:
        status = _fetch(conn, version).status
        record_status(conn, version, status, changed_by, reason)
    logger.warning("model version %d (%s) forced into serving: %s", version, status, reason)


def roll_back(conn: Connection, bad: int, restored: int, changed_by: str, reason: str) -> None:
    """Mark ``bad`` rolled back and make ``restored`` serve again, in the caller's transaction."""
    conn.execute(statement(conn, "LOCK TABLE {schema}.model_versions IN EXCLUSIVE MODE"))
    conn.execute(statement(conn,
        "UPDATE {schema}.model_versions SET status = 'rolled_back' WHERE version = :v"),
        {"v": bad})
    record_status(conn, bad, "rolled_back", changed_by, reason)
    conn.execute(statement(conn,
        "UPDATE {schema}.model_versions SET status = 'retired' WHERE status = 'serving'"))
    conn.execute(statement(conn,
        "UPDATE {schema}.model_versions SET status = 'serving' WHERE version = :v"),
        {"v": restored})
    record_status(conn, restored, "serving", changed_by,
                  f"restored by the rollback of version {bad}: {reason}")


@dataclass(frozen=True)
class StatusChange:
    status: str
    changed_at: datetime
    changed_by: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changed_at": self.changed_at.isoformat()}


def status_history(engine: Engine, version: int) -> list[StatusChange]:
    with engine.connect() as conn:
        _fetch(conn, version)
        rows = conn.execute(statement(conn,
            "SELECT status, changed_at, changed_by, reason FROM {schema}.model_status_history"
            " WHERE version = :v ORDER BY changed_at, ctid"), {"v": version}).all()
    return [StatusChange(*row) for row in rows]


def get(engine: Engine, version: int) -> ModelVersion:
    with engine.connect() as conn:
        return _fetch(conn, version)


def latest_trained_as_of(engine: Engine, as_of: date) -> ModelVersion | None:
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            f"SELECT {COLUMNS} FROM {{schema}}.model_versions WHERE trained_as_of = :d"
            " ORDER BY version DESC LIMIT 1"), {"d": as_of}).first()
    return ModelVersion(*row) if row else None


def _fetch(conn: Connection, version: int) -> ModelVersion:
    row = conn.execute(
        statement(conn, f"SELECT {COLUMNS} FROM {{schema}}.model_versions WHERE version = :v"),
        {"v": version},
    ).first()
    if row is None:
        raise UnknownVersionError(f"model version {version} does not exist")
    return ModelVersion(*row)
