"""A nightly run's request and its state.

What the CLI and the DAG ask of a run (:class:`NightlyConfig`), what its steps hand to
each other through the run's staging folder (:class:`RunState`), what a run in this
process returns (:class:`NightlyResult`), and the errors that stop a run before or
while it runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import redis

from jobs.contracts.redis import Keyspace
from jobs.platform.config import (
    DEFAULT_EMPTY_DAY,
    DEFAULT_KEEP_VERSIONS,
    AlertSettings,
    PrometheusSettings,
)
from jobs.platform.names import DEFAULT_REDIS_PREFIX, Names
from jobs.platform.redis_client import RedisAccessError
from jobs.publish import PublishVersion, protocol
from jobs.scoring.score import ScoreStats

STATE_FILE = "state.json"


class RunRequestError(ValueError):
    """A run was asked for something it cannot do; nothing was started."""


class StoreUnavailableError(RuntimeError):
    """A run lost its connection to PostgreSQL or Redis and stopped."""


def store_lost(err: BaseException) -> StoreUnavailableError | None:
    """The clear error for a lost server connection, or None for any other error."""
    import psycopg2
    import sqlalchemy.exc

    if isinstance(err, psycopg2.OperationalError | psycopg2.InterfaceError
                  | sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        store = "PostgreSQL"
    elif isinstance(err, RedisAccessError):
        return None  # its message already says what to do
    elif isinstance(err, redis.ConnectionError | redis.TimeoutError):
        store = "Redis"
    else:
        return None
    detail = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
    return StoreUnavailableError(
        f"the run lost its connection to {store} ({detail}); it stopped, and each store "
        "goes on serving one whole version. The next nightly (or `batchscore reconcile`) repairs "
        "what it left; then run the date again")


@dataclass(frozen=True)
class NightlyConfig:
    """What one nightly run is asked to do, from the CLI's arguments or the DAG's params."""

    run_date: date
    database_url: str
    redis_url: str
    home: Path
    k: int
    spark_master: str | None = None
    input_path: Path | None = None
    # csv, movielens or parquet; None: from the file's extension.
    input_format: str | None = None
    model_version: int | None = None
    serve_older_date: bool = False
    # Run a date after today (UTC): refused without it, since it would take over serving.
    allow_future_date: bool = False
    # Score this version beside the served one, serving nothing (a shadow run).
    shadow_version: int | None = None
    # Serve this version to canary_fraction of the users (a canary run).
    canary_version: int | None = None
    canary_fraction: float | None = None
    # Serve a rejected or rolled-back model anyway, for this recorded reason.
    force: bool = False
    reason: str | None = None
    lock_wait_seconds: float = protocol.DEFAULT_LOCK_WAIT_SECONDS
    # The deployment's schema names (jobs.platform.names).
    names: Names = field(default_factory=Names)
    # Where a failed run's alert and crossed levels' alerts go (default: the log), and
    # where the run's metrics are written for Prometheus.
    alerts: AlertSettings = field(default_factory=AlertSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    # The interaction history's root (jobs.data.history); None: under home.
    history_uri: str | None = None
    # Published versions PostgreSQL keeps besides the served one.
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    # A date without input events: skip or fail the run; both alert.
    empty_day: str = DEFAULT_EMPTY_DAY


@dataclass
class RunState:
    """What the steps of one run hand to each other, kept in ``work_dir/state.json``."""

    run_id: str
    run_date: str
    model_version: int
    model_path: str
    k: int
    home: str
    work_dir: str
    input_path: str | None = None
    input_format: str | None = None
    serve_older_date: bool = False
    allow_future_date: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    publish_id: int | None = None
    switch: dict[str, Any] | None = None
    # serve, shadow or canary: which plan of publish steps the run follows
    # (jobs.orchestration.plans.PLANS).
    kind: str = "serve"
    canary_model_version: int | None = None
    canary_model_path: str | None = None
    canary_fraction: float | None = None
    lock_wait_seconds: float = protocol.DEFAULT_LOCK_WAIT_SECONDS
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    history_root: str = ""
    keep_versions: int = DEFAULT_KEEP_VERSIONS

    @property
    def logical_date(self) -> date:
        return date.fromisoformat(self.run_date)

    @property
    def folder(self) -> Path:
        return Path(self.work_dir)

    @property
    def keys(self) -> Keyspace:
        return Keyspace(self.redis_prefix)

    def save(self) -> RunState:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))
        return self

    @classmethod
    def load(cls, work_dir: str | Path) -> RunState:
        path = Path(work_dir) / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"no run state in {work_dir}; run the begin step first")
        return cls(**json.loads(path.read_text()))

    def score_args(self) -> list[str]:
        """The arguments of ``jobs/scoring/score.py`` for this run (spark-submit or in-process)."""
        canary = (["--canary-model-path", self.canary_model_path,
                   "--canary-fraction", str(self.canary_fraction)]
                  if self.canary_model_path else [])
        return ["--interactions", self.history_root,
                "--run-date", self.run_date, "--model-path", self.model_path,
                "--output", self.work_dir, "--k", str(self.k), *canary]

    def publish_version(self) -> PublishVersion:
        if self.publish_id is None:
            raise RuntimeError(f"run {self.run_id} has not been published to Postgres yet")
        return PublishVersion(publish_id=self.publish_id, run_id=self.run_id,
                              model_version=self.model_version,
                              logical_date=self.logical_date, k=self.k,
                              canary_model_version=self.canary_model_version,
                              canary_fraction=self.canary_fraction)


@dataclass(frozen=True)
class NightlyResult:
    """What a run in this process did, for the CLI to print."""

    run_id: str
    publish_id: int
    model_version: int
    logical_date: date
    served: bool
    stats: ScoreStats
    rows: int
    input_rejected: int
    data_docs: dict[str, str | None]
    shadow: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    # The run report's path; None if it could not be written (logged).
    report: str | None = None
    # The monitor step's record (jobs.monitoring.monitor.MonitorResult.to_json), with
    # "error" when monitoring failed.
    monitoring: dict[str, Any] | None = None
