"""The nightly run, as steps the CLI runs in order and the Airflow DAG runs as tasks.

reconcile -> begin -> validate inputs (quarantine or fail; load a day's file;
export the interactions up to the run date) -> score (Spark job
``jobs/scoring/score.py``) -> validate predictions -> write the version aside in
PostgreSQL -> write it aside in Redis -> switch both (under the publish lock)
-> smoke check -> finish (record the run) -> monitor (the run's metrics,
``jobs.monitoring``; a failure there is recorded and unpublishes nothing) ->
alerts for the levels crossed, the metrics for Prometheus -> the run report. A
step reads and writes the run's state in its staging folder, so each can run
in its own process, and holds the run's lease while it works. Every step can
be run again after a crash
and converges; nothing is switched unless every step before it succeeded.
``fail`` discards what a failed run staged and records why, and the previous
version keeps being served.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import redis
from sqlalchemy.engine import Engine

from jobs.contracts import redis as contract
from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.inputs import (
    EmptyDayError,
    NothingToScoreError,
    batch_stats,
    check_input,
    quarantine_and_load,
    read_input_file,
    table_batch,
)
from jobs.contracts.predictions import (
    ExposureTotals,
    HistoryTotals,
    PredictionSummary,
    check_predictions,
    summarize,
    summary_stats,
)
from jobs.contracts.redis import Keyspace
from jobs.data import history
from jobs.data.load import InputError
from jobs.lifecycle import registry
from jobs.monitoring.alerts import crossing_from_json, raise_alert
from jobs.monitoring.prometheus import export as export_metrics
from jobs.platform import runs
from jobs.platform.artifacts import artifact_path
from jobs.platform.config import (
    DEFAULT_EMPTY_DAY,
    DEFAULT_KEEP_VERSIONS,
    AlertSettings,
    PrometheusSettings,
)
from jobs.platform.db import engine_for, ensure_schema, statement
from jobs.platform.names import DEFAULT_REDIS_PREFIX, Names
from jobs.platform.progress import progress
from jobs.platform.provenance import current_user
from jobs.platform.redis_client import RedisAccessError, connect
from jobs.publish import POSTGRES_COLUMNS, REDIS_COLUMNS, PublishVersion, protocol, read_blocks
from jobs.publish.postgres import (
    SWITCHED,
    Canary,
    PostgresPublisher,
    VersionStateError,
    served_publish_id,
)
from jobs.publish.redis import RedisPublisher, retire_version
from jobs.scoring.score import (
    CANARY_USERS_FILE,
    POPULAR_FILE,
    RECOMMENDATIONS_DIR,
    ScoreConfig,
    ScoreStats,
    read_checks,
)

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
SMOKE_SAMPLE_USERS = 20
# Statuses a model may not serve in without --force and a reason: its gates said no.
REFUSED_MODEL_STATUSES = ("rejected", "rolled_back")


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
    # serve, shadow or canary: which plan of publish steps the run follows (PLANS).
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


def run(config: NightlyConfig) -> NightlyResult:
    """All steps in this process, the way ``batchscore nightly`` runs them."""
    scored: list[ScoreStats] = []
    begun: list[str] = []

    def prepare(engine: Engine, state: RunState) -> None:
        begun.append(state.run_id)
        validate_inputs(engine, state)
        score_in_process(state, config.spark_master)
        scored.append(ScoreStats.read(state.folder))
        validate_predictions(state)

    engine = engine_for(config.database_url, config.names)
    try:
        try:
            state = execute(config, prepare)
        except BaseException:
            # Every recorded run gets its report, a failed or skipped one too.
            if begun:
                write_run_report(engine, config, begun[0])
            raise
        assert state.publish_id is not None and state.switch is not None
        monitoring = monitor(engine, state.run_id)
        if "error" not in monitoring:
            monitoring["after"] = after_monitor_logged(engine, config, monitoring)
        report = write_run_report(engine, config, state.run_id)
    finally:
        engine.dispose()
    return NightlyResult(
        run_id=state.run_id, publish_id=state.publish_id, model_version=state.model_version,
        logical_date=state.logical_date, served=bool(state.switch["served"]),
        stats=scored[0], rows=int(state.stats["rows"]),
        input_rejected=int(state.stats.get("rejected", 0)),
        data_docs=dict(state.stats.get("data_docs", {})),
        shadow=state.stats.get("shadow"), canary=state.stats.get("canary"),
        report=str(report) if report is not None else None,
        monitoring=monitoring,
    )


def write_run_report(engine: Engine, config: NightlyConfig, run_id: str) -> Path | None:
    """The run's report (``BATCHSCORE_HOME/reports/RUN_ID.html``), after the run is
    recorded and monitored; one that fails is logged and leaves the run as it is."""
    from jobs.monitoring.report import write_report_logged

    return write_report_logged(engine, config.home, run_id)


def after_monitor_logged(engine: Engine, config: NightlyConfig, monitored: dict[str, Any]
                         ) -> dict[str, Any]:
    """:func:`after_monitor`, whose failure (an alert or metrics file that could not be
    written) is logged and returned: the run stays recorded and published."""
    try:
        return after_monitor(engine, config, monitored)
    except Exception as err:
        logger.error("run %s: alerting or writing its metrics failed (%s: %s)",
                     monitored["run_id"], type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {err}"}


def execute(config: NightlyConfig, prepare: Callable[[Engine, RunState], None]) -> RunState:
    """Reconcile, then one run in this process: ``prepare`` checks the input and scores it
    into the run's folder, then the version is published and the run recorded.

    The run's lease is held throughout; if anything fails, what the run
    staged is discarded and the failure recorded before the error is raised.
    """
    engine = engine_for(config.database_url, config.names)
    ensure_schema(engine)
    try:
        reconcile(engine, config.redis_url, Keyspace(config.names.redis_prefix), config.home,
                  config.lock_wait_seconds)
    except Exception as err:
        clear = store_lost(err)
        if clear is not None:
            raise clear from err
        raise
    run_id = runs.new_run_id("nightly", config.run_date)
    with runs.lease(engine, run_id):
        state = begin(engine, config, run_id)
        try:
            prepare(engine, state)
            publish(engine, config.redis_url, state)
            finish(engine, state)
        except NothingToScoreError as err:
            empty_day(engine, state, err, config.empty_day, config.alerts)
            raise
        except BaseException as err:
            clear = store_lost(err)
            fail(engine, state, clear or err, config.redis_url)
            alert_failed(engine, config.alerts, state.run_id, clear or err)
            if clear is not None:
                raise clear from err
            raise
    engine.dispose()
    return state


def publish(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """The publish stages of the run's plan, in order (see :data:`PLANS`)."""
    for stage in PUBLISH_STAGES:
        run_stage(engine, redis_url, state, stage)
    return state


def run_stage(engine: Engine, redis_url: str, state: RunState, stage: str) -> RunState:
    """The steps of one stage of the run's plan; the Airflow DAG runs a task per stage."""
    for step in PLANS[state.kind][stage]:
        state = run_step(step, engine, redis_url, state)
    return state


def reconcile(engine: Engine, redis_url: str, keys: Keyspace, home: Path,
              lock_wait_seconds: float = protocol.DEFAULT_LOCK_WAIT_SECONDS) -> Any:
    """Repair what earlier runs left (see :mod:`jobs.publish.reconcile`); its report."""
    from jobs.publish.reconcile import reconcile as repair

    return repair(engine, connect(redis_url), keys, home / "staging",
                  wait_seconds=lock_wait_seconds)


def begin(engine: Engine, config: NightlyConfig, run_id: str | None = None,
          lease_seconds: int = 0) -> RunState:
    """Choose the model, record the run as started, and create its staging folder.

    The caller holds ``run_id``'s lease (see :func:`jobs.platform.runs.lease`);
    ``lease_seconds`` is how long the run may go without a process holding
    it before reconcile counts it gone.
    """
    ensure_schema(engine)
    refuse_future_date(config.run_date, datetime.now(UTC).date(), config.allow_future_date)
    if config.shadow_version is not None and config.canary_version is not None:
        raise RunRequestError("a run is a shadow run or a canary run, not both")
    if config.force and not (config.reason or "").strip():
        raise RunRequestError("--force needs --reason: why the model serves despite its "
                              "gates is recorded")
    shadow = trial_model(engine, config.shadow_version, "shadow")
    canary = trial_model(engine, config.canary_version, "canary")
    model = shadow or registry.model_for_date(engine, config.run_date, config.model_version)
    gated = [(chosen, kind) for chosen, kind in
             ((None if shadow else model, "--model-version"), (canary, "--canary"))
             if chosen is not None and chosen.status in REFUSED_MODEL_STATUSES]
    for chosen, option in gated:
        if not config.force:
            raise RunRequestError(
                f"model version {chosen.version} is {chosen.status.replace('_', ' ')}: its "
                f"gates or a rollback keep it from serving ({option}); pass --force with "
                "--reason to serve it anyway")
    run_id = runs.start(engine, "nightly", config.run_date, model.version,
                        run_id=run_id, lease_seconds=lease_seconds)
    for chosen, _ in gated:
        registry.record_forced_use(engine, chosen.version, current_user(),
                                   f"served by run {run_id} despite its status: {config.reason}")
    state = RunState(
        run_id=run_id, run_date=config.run_date.isoformat(), model_version=model.version,
        model_path=model_path(model.artifact_uri), k=config.k, home=str(config.home),
        work_dir=str(config.home / "staging" / run_id),
        input_path=str(config.input_path) if config.input_path else None,
        input_format=config.input_format, serve_older_date=config.serve_older_date,
        allow_future_date=config.allow_future_date, stats={"k": config.k, "data_docs": {}},
        kind="shadow" if shadow else "canary" if canary else "serve",
        lock_wait_seconds=config.lock_wait_seconds, redis_prefix=config.names.redis_prefix,
        history_root=history.root(engine, config.history_uri, config.home),
        keep_versions=config.keep_versions,
    )
    if canary is not None:
        state.canary_model_version = canary.version
        state.canary_model_path = model_path(canary.artifact_uri)
        state.canary_fraction = canary_fraction(config.canary_fraction)
        state.stats["canary"] = {"model_version": canary.version,
                                 "fraction": state.canary_fraction}
    logger.info("run %s: %s with model version %d%s", run_id, config.run_date, model.version,
                " (shadow: stored, not served)" if shadow else
                f" (canary: version {canary.version} for {state.canary_fraction:.0%} of users)"
                if canary else "")
    return state.save()


def refuse_future_date(run_date: date, today: date, allowed: bool) -> None:
    """Refuse a run date after ``today`` (UTC) unless ``allowed``.

    A date ahead of the clock (a typo, or events stamped years ahead picked as
    the newest date) would take over serving, and no normal run would serve
    again until someone passed --serve-older-date.
    """
    if run_date > today and not allowed:
        raise RunRequestError(
            f"run date {run_date} is after today ({today}, UTC): a future date would take "
            "over serving from every normal run after it; nothing was run. Name the date "
            "with --run-date (the default is the newest event's), or pass --allow-future-date "
            "(the DAG param allow_future_date) to run it anyway")


def trial_model(engine: Engine, version: int | None,
                kind: str) -> registry.ModelVersion | None:
    """The version a shadow or canary run tries out; it must not be the serving one."""
    if version is None:
        return None
    model = registry.get(engine, version)
    if model.status == "serving":
        raise RunRequestError(
            f"model version {version} already serves; a {kind} run tries out another version")
    return model


def canary_fraction(fraction: float | None) -> float:
    from jobs.contracts.canary import check_fraction
    from jobs.contracts.engine import load_contracts_config

    if fraction is None:
        fraction = float(load_contracts_config()["canary"]["default_fraction"])
    return check_fraction(fraction)


def validate_inputs(engine: Engine, state: RunState) -> RunState:
    """The input contract, then the interaction history the scoring job reads: the days
    the load changed are written again (:func:`jobs.data.history.sync`).

    Raises :class:`NothingToScoreError` when the date has no events; the caller
    records the run as skipped (:func:`skip`).
    """
    validator = Validator(Path(state.home), state.run_id)
    run_date = state.logical_date
    batch = (read_input_file(Path(state.input_path), state.input_format)
             if state.input_path else table_batch(engine, run_date))
    try:
        # The time of loading: events stamped after it are quarantined.
        outcome = check_input(validator, engine, run_date, batch, run_name=state.run_id,
                              now=datetime.now(UTC), future_allowed=state.allow_future_date)
    except ContractError as err:
        state.stats["data_docs"].update(err.docs_urls)
        state.save()
        raise
    state.stats["data_docs"]["input"] = outcome.report.docs_url
    state.stats.update(batch_stats(batch, outcome))
    state.stats.update(quarantine_and_load(engine, state.run_id, run_date, batch, outcome))
    history.sync(engine, state.history_root)
    if history.events_up_to(engine, run_date) == 0:
        raise InputError(f"no interactions up to {run_date}; nothing to score")
    return state.save()


def score_in_process(state: RunState, spark_master: str | None) -> ScoreStats:
    from jobs.scoring import score as score_job

    config = score_job.parse_args(state.score_args())
    return score_job.run(ScoreConfig(**{**asdict(config), "spark_master": spark_master}))


def validate_predictions(state: RunState) -> RunState:
    """The prediction contract on what the scoring job wrote."""
    scored = ScoreStats.read(state.folder)
    summary = prediction_summary(scored)
    state.stats.update(summary_stats(summary))
    state.stats.update({
        "active_users": scored.active_users,
        "scored_users": scored.scored_users,
        "users_without_factors": scored.users_without_factors,
    })
    try:
        reports = check_predictions(
            Validator(Path(state.home), state.run_id),
            read_checks(state.folder), summary,
            requested_model_version=state.model_version, run_name=state.run_id,
            label=f"{state.run_date} (run {state.run_id})",
        )
    except ContractError as err:
        state.stats["data_docs"].update(err.docs_urls)
        state.save()
        raise
    state.stats["data_docs"].update({report.suite: report.docs_url for report in reports})
    return state.save()


def publish_postgres(engine: Engine, state: RunState) -> RunState:
    """Load the version aside in PostgreSQL: a staged table, indexed, not yet attached.

    Run again, it discards what an earlier attempt left staged and loads
    afresh; once the version was switched in, it does nothing.
    """
    postgres = PostgresPublisher(engine)
    if state.publish_id is not None:
        status = version_status(engine, state.publish_id)
        if status in SWITCHED:
            logger.info("postgres: version %d was already switched in", state.publish_id)
            return state
        # An earlier attempt's version, staged or already discarded: load afresh.
        postgres.discard(state.publish_id)
    canary = (Canary(state.canary_model_version, state.canary_fraction)
              if state.canary_model_version is not None and state.canary_fraction else None)
    version = postgres.allocate(state.run_id, state.model_version, state.logical_date, state.k,
                                canary=canary)
    state.publish_id = version.publish_id
    state.save()
    try:
        postgres.prepare(version)
        write_scored(postgres, "postgres", POSTGRES_COLUMNS, state)
        postgres.write_fallback(pq.read_table(state.folder / POPULAR_FILE))
        postgres.finish_load()
    except BaseException:
        postgres.abort()
        raise
    state.stats.update({"publish_id": version.publish_id, "rows": postgres.rows})
    return state.save()


def write_scored(publisher: PostgresPublisher | RedisPublisher, store: str,
                 columns: Sequence[str], state: RunState) -> None:
    """Every block of the run's scoring output (``columns`` of it) to one store's staged
    version, its progress shown as users written."""
    with progress(store, int(state.stats.get("scored_users", 0)), "users",
                  verb="written") as written:
        publisher.write_blocks(read_blocks(state.folder / RECOMMENDATIONS_DIR, columns=columns),
                               progress=written)


def record_canary_users(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """A canary run's step: which users of the staged version the canary model scored."""
    if state.publish_id is None or state.canary_model_version is None:
        raise RuntimeError(f"run {state.run_id} has no staged canary version")
    postgres = PostgresPublisher(engine)
    postgres.version = state.publish_version()
    canary_users = pq.read_table(state.folder / CANARY_USERS_FILE).column("user_id")
    state.stats["canary"]["users"] = postgres.record_canary_users(
        canary_users.to_numpy(), state.canary_model_version)
    return state.save()


def version_status(engine: Engine, publish_id: int) -> str | None:

    with engine.connect() as conn:
        return conn.execute(statement(conn, "SELECT status FROM {schema}.prediction_versions"
                                    " WHERE publish_id = :id"), {"id": publish_id}).scalar()


def publish_redis(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """Write the version's keys aside in Redis, each expiring unless the version is served.

    Safe to run again: keys are overwritten, never deleted, and once the
    version was switched in nothing is written, so a retry never touches
    what readers are served.
    """
    if state.publish_id is None:
        raise RuntimeError(f"run {state.run_id} has no version written to Postgres yet")
    status = version_status(engine, state.publish_id)
    if status in SWITCHED:
        logger.info("redis: version %d was already switched in; nothing to write",
                    state.publish_id)
        return state
    if status != "staged":
        raise VersionStateError(f"version {state.publish_id} is {status}: run "
                                "publish_postgres again before writing it to Redis")
    publisher = RedisPublisher(connect(redis_url), state.keys)
    publisher.prepare(state.publish_version())
    write_scored(publisher, "redis", REDIS_COLUMNS, state)
    publisher.write_fallback(pq.read_table(state.folder / POPULAR_FILE))
    publisher.write_meta()
    return state


def switch(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """Switch the version in, PostgreSQL then Redis, under the publish lock; then clean up.

    Safe to run again.
    """
    return switched(engine, state, connect(redis_url), shadow=False)


def keep_aside(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """A shadow run's switch: the version is attached in PostgreSQL, never served."""
    return switched(engine, state, None, shadow=True)


def switched(engine: Engine, state: RunState, client: redis.Redis | None,
             shadow: bool) -> RunState:
    if state.publish_id is None:
        raise RuntimeError(f"run {state.run_id} has no version written to Postgres yet")
    with protocol.publish_lock(engine, f"run {state.run_id}", state.lock_wait_seconds):
        outcome = protocol.switch(engine, client, state.keys, state.publish_id, shadow=shadow,
                                  force_serve=state.serve_older_date,
                                  keep_versions=state.keep_versions)
    state.switch = asdict(outcome)
    state.stats.update({"publish_id": state.publish_id, "served": outcome.served})
    return state.save()


def smoke_check(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """Read a sample of users back from both stores, and check they serve the same version.

    A version for an older date than the one served is kept in PostgreSQL only
    (Redis holds the served version and the one before it): its rows are
    checked, and Redis's pointer.
    """

    client = connect(redis_url)
    keys = state.keys
    publish_id = state.publish_id
    with engine.connect() as conn:
        status = conn.execute(statement(conn,
            "SELECT status FROM {schema}.prediction_versions WHERE publish_id = :id"),
            {"id": publish_id}).scalar()
        sample = conn.execute(statement(conn,
            "SELECT user_id, item_ids FROM {schema}.prediction_lists"
            " WHERE publish_id = :id ORDER BY user_id LIMIT :n"),
            {"id": publish_id, "n": SMOKE_SAMPLE_USERS}).all()
    served = served_publish_id(engine)
    pointer = client.get(keys.pointer_key())
    problems = []
    if status != "published":
        problems.append(f"postgres: version {publish_id} is {status!r}, not published")
    if served is not None and (pointer is None or int(pointer) != served):
        problems.append(f"postgres serves version {served} but the redis pointer names "
                        f"{pointer.decode() if pointer else None}")
    if not sample:
        problems.append(f"postgres has no rows for version {publish_id}")
    in_redis = served == publish_id
    for user_id, items in sample if in_redis else []:
        value = client.get(keys.user_key(publish_id, user_id))
        stored = [item for item, _ in contract.decode_items(value)] if value else None
        if stored != list(items):
            problems.append(f"user {user_id}: postgres has {list(items)[:5]}..., "
                            f"redis has {stored[:5] if stored else stored}")
    if problems:
        raise RuntimeError("smoke check failed: " + "; ".join(problems[:5]))
    if in_redis:
        logger.info("smoke check: %d users read back from both stores agree; version %s is "
                    "served", len(sample), served)
    else:
        logger.info("smoke check: version %s is in postgres (%d users read), not served; "
                    "version %s is served in both stores", publish_id, len(sample), served)
    return state


def compare_shadow(engine: Engine, state: RunState) -> RunState:
    """How the shadow version differs from the served one, on a fixed sample of users."""
    from jobs.training.differential import compare
    from jobs.training.gates import GateConfig

    served = served_publish_id(engine)
    report: dict[str, Any] = {"publish_id": state.publish_id, "compared_with": served}
    if served is None:
        report["differential"] = None
        logger.info("shadow: nothing is served yet to compare with")
    else:
        sample = GateConfig.load().differential.sample_users
        shadow_lists, served_lists = sampled_lists(engine, state.publish_id, served, sample)
        if shadow_lists and served_lists and set(shadow_lists) & set(served_lists):
            differential = compare(shadow_lists, served_lists, state.k)
            report["differential"] = differential.to_json()
            logger.info("shadow vs served version %d on %d users: overlap@%d %.3f, rank "
                        "correlation %.3f, score shift (KS) %.3f", served, differential.users,
                        state.k, differential.overlap_at_k, differential.rank_correlation,
                        differential.score_ks)
        else:
            report["differential"] = None
    state.stats["shadow"] = report
    return state.save()


def sampled_lists(engine: Engine, publish_id: int, other: int, sample_size: int
                  ) -> tuple[dict[int, tuple[list[int], list[float]]], ...]:
    """Both versions' lists for a fixed sample of ``publish_id``'s users (stable hash)."""
    import numpy as np

    from jobs.contracts.canary import fixed_sample

    with engine.connect() as conn:
        users = np.array(conn.execute(statement(conn,
            "SELECT user_id FROM {schema}.prediction_lists WHERE publish_id = :id"),
            {"id": publish_id}).scalars().all(), dtype=np.int64)
        chosen = [int(user) for user in fixed_sample(users, sample_size)]
        lists = []
        for version in (publish_id, other):
            rows: dict[int, tuple[list[int], list[float]]] = {}
            for user, items, scores in conn.execute(statement(conn,
                "SELECT user_id, item_ids, scores FROM {schema}.prediction_lists"
                " WHERE publish_id = :id AND user_id = ANY(:users)"),
                    {"id": version, "users": chosen}):
                rows[int(user)] = (list(items), list(scores))
            lists.append(rows)
    return tuple(lists)


def record_trial(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """A shadow or canary run that got this far moves its model forward in the registry."""
    if state.kind == "shadow":
        registry.record_trial(engine, state.model_version, "shadow",
                              f"shadow run {state.run_id} for {state.run_date}",
                              current_user())
    else:
        registry.record_trial(engine, state.canary_model_version, "canary",
                              f"canary run {state.run_id} for {state.run_date}: "
                              f"{state.canary_fraction:.0%} of users", current_user())
    return state


def finish(engine: Engine, state: RunState) -> RunState:
    """Record the run as succeeded; remove its staging folder."""
    for step in PLANS[state.kind]["record"]:
        state = run_step(step, engine, "", state)
    runs.succeed(engine, state.run_id, state.stats)
    shutil.rmtree(state.folder, ignore_errors=True)
    return state


def monitor(engine: Engine, run_id: str, raise_errors: bool = False) -> dict[str, Any]:
    """The monitor step of a recorded, succeeded run (see :mod:`jobs.monitoring.monitor`).

    A failure unpublishes nothing: it is logged and kept in the run's stats as
    ``monitoring_error``, and the record returned says so (``error``); with
    ``raise_errors`` (the DAG task, which Airflow retries) it is raised after that.
    """
    from jobs.monitoring.monitor import monitor as measure

    try:
        result = measure(engine, run_id).to_json()
        runs.annotate(engine, run_id, {"monitoring": {"crossings": len(result["crossings"]),
                                                      "retrain": result["retrain"]}},
                      drop=("monitoring_error",))
        return result
    except Exception as err:
        message = f"{type(err).__name__}: {err}"
        logger.error("run %s: monitoring failed (%s); the run stays published", run_id,
                     message)
        try:
            runs.annotate(engine, run_id, {"monitoring_error": message})
        except Exception as lost:  # the monitoring error is the one to report
            logger.error("run %s: could not record the monitoring failure (%s)", run_id, lost)
        if raise_errors:
            raise
        return {"run_id": run_id, "crossings": [], "retrain": False, "error": message}


def empty_day(engine: Engine, state: RunState, nothing: NothingToScoreError, policy: str,
              alerts: AlertSettings, context: dict[str, Any] | None = None) -> None:
    """A date without input events: raise the ``empty`` alert, then record the run as
    ``policy`` says, skipped or failed; under ``fail`` raise :class:`EmptyDayError`. The
    run's stats say so (``empty_day``), for ``runs list`` and the report."""
    delivered = False
    try:
        delivered = raise_alert(engine, alerts, state.run_id, empty=str(nothing),
                                context=context).delivered
    except Exception as err:  # recording the run matters more; the log still tells
        logger.error("run %s: its empty-day alert could not be recorded (%s: %s)",
                     state.run_id, type(err).__name__, err)
    state.stats["empty_day"] = {"policy": policy, "alerted": delivered}
    if policy == "fail":
        message = f"empty day (BATCHSCORE_EMPTY_DAY=fail): {nothing}"
        fail(engine, state, message)
        raise EmptyDayError(message) from nothing
    skip(engine, state, nothing)


def skip(engine: Engine, state: RunState, reason: BaseException | str) -> None:
    """Record a run that had nothing new to score; it staged nothing, so nothing is
    discarded but its folder."""
    runs.skip(engine, state.run_id, str(reason), state.stats)
    shutil.rmtree(state.folder, ignore_errors=True)


def fail(engine: Engine, state: RunState, error: BaseException | str,
         redis_url: str | None = None) -> None:
    """Discard what the run staged (unless it was already switched in) and record why.

    Each part is tried on its own: if a store is out of reach, what it holds
    of the run is left for reconcile, and the error that failed the run is
    what the caller raises.
    """
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    discarded = False
    recorded = False
    try:
        discarded = (state.publish_id is not None
                     and PostgresPublisher(engine).discard(state.publish_id))
        runs.fail(engine, state.run_id, message, state.stats)
        recorded = True
        if discarded and redis_url is not None:
            retire_version(connect(redis_url), state.keys, state.publish_id)
    except Exception as err:  # the run's own error matters more; reconcile finishes this
        logger.error("run %s: could not clean up after its failure (%s: %s); "
                     "`batchscore reconcile` will", state.run_id, type(err).__name__, err)
    if recorded:
        shutil.rmtree(state.folder, ignore_errors=True)


def alert_failed(engine: Engine, settings: AlertSettings, run_id: str | None,
                 error: BaseException | str, context: dict[str, Any] | None = None) -> None:
    """Raise the ``failed`` alert of a run. An alert that cannot even be recorded is
    logged, never raised over the error that failed the run."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        raise_alert(engine, settings, run_id, failure=message, context=context)
    except Exception as err:
        logger.error("run %s: its failure alert could not be recorded (%s: %s)", run_id,
                     type(err).__name__, err)


def after_monitor(engine: Engine, config: NightlyConfig, monitored: dict[str, Any]
                  ) -> dict[str, Any]:
    """What follows the monitor step in this process: one alert for the levels the run
    crossed (none when it crossed none) and its metrics written for Prometheus.

    ``monitored`` is the monitor step's result (``run_id``, ``crossings``,
    ``retrain``). Airflow runs the same as the tasks ``alert`` and
    ``export_metrics``, and signals a retrain with an asset event; here a crossed
    retrain level is said in the result, for whoever runs ``batchscore train``.
    """
    crossings = [crossing_from_json(record) for record in monitored.get("crossings", [])]
    raised = (raise_alert(engine, config.alerts, monitored["run_id"], crossings=crossings)
              if crossings else None)
    where = export_metrics(engine, config.prometheus, config.home, monitored["run_id"])
    return {"alert": raised.to_json() if raised else None, "metrics_written_to": where,
            "retrain": bool(monitored.get("retrain"))}


def prediction_summary(scored: ScoreStats) -> PredictionSummary:
    return summarize(ExposureTotals(**scored.exposure), HistoryTotals(**scored.history),
                     model_version=scored.model_version, active_users=scored.active_users,
                     scored_users=scored.scored_users, catalog_items=scored.catalog_items,
                     k=scored.k)


def model_path(artifact_uri: str) -> str:
    path = artifact_path(artifact_uri)
    if not path.exists():
        raise FileNotFoundError(f"the model's artifact {path} is missing")
    return str(path)


# ---------------------------------------------------------------- the kinds of run

# The publish stages every run goes through, in order; the nightly DAG has a task for
# each (publish_postgres, publish_redis, switch, smoke_check), then record_run ("record").
PUBLISH_STAGES = ("write_postgres", "write_redis", "switch", "check")
# Each kind of run is its own small plan: the steps (functions of this module) of each
# stage.
PLANS: dict[str, dict[str, tuple[str, ...]]] = {
    # Score with the serving model and serve the result in both stores.
    "serve": {"write_postgres": ("publish_postgres",), "write_redis": ("publish_redis",),
              "switch": ("switch",), "check": ("smoke_check",), "record": ()},
    # Serve a candidate to a stable share of users, the serving model to the rest.
    "canary": {"write_postgres": ("publish_postgres", "record_canary_users"),
               "write_redis": ("publish_redis",), "switch": ("switch",),
               "check": ("smoke_check",), "record": ("record_trial",)},
    # Store a candidate's lists beside the served ones, serve nothing, report the difference.
    "shadow": {"write_postgres": ("publish_postgres",), "write_redis": (),
               "switch": ("keep_aside",), "check": ("compare_shadow",),
               "record": ("record_trial",)},
}


def run_step(name: str, engine: Engine, redis_url: str, state: RunState) -> RunState:
    """Run the step ``name``, looked up when it runs; steps that use Redis get its URL."""
    step = globals()[name]
    if "redis_url" in inspect.signature(step).parameters:
        return step(engine, redis_url, state)
    return step(engine, state)
