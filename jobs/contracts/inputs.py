"""The input contract: one run date's interactions, before they are scored.

The day's batch comes from a file handed to the run (``nightly --input``) or,
without one, from the interactions table (events on the run date). Schema and
volume failures fail the run. Row-level failures quarantine the rows into
``batchscore.rejects`` while they stay under the configured fraction; above
it, the run fails. Nothing is loaded or published when the run fails. A
batch without events is neither: :class:`NothingToScoreError` says so.

Time is judged against the clock of the caller (``now``, read here only when
the caller does not pass it): an event stamped after the time of loading is
quarantined. An event already loaded is a duplicate whichever file it came in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import statistics
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
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
from jobs.data.load import (
    CsvLayout,
    InputError,
    file_format_of,
    read_events_file,
    read_parquet_frame,
)
from jobs.data.store import (
    COPY_INTERACTIONS,
    copy_with_progress,
    day_end,
    epoch_to_sql,
    rows_to_csv,
)
from jobs.platform.db import composed, cursor, statement

logger = logging.getLogger(__name__)

COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
SUITE = "interactions"
TABLE_SOURCE = "table"
INPUT_FORMATS = ("csv", "movielens", "parquet")
# The kind of run a `batchscore data load` is recorded as.
LOAD_KIND = "load"


@dataclass(frozen=True)
class InputBatch:
    """A run date's interactions; the index names each row (file line or event id)."""

    frame: pd.DataFrame
    source: str
    row_label: str
    sha256: str | None = None


class NothingToScoreError(RuntimeError):
    """The run date's batch holds no events: there is nothing new to score, and nothing
    is published. The run raises an ``empty`` alert and, as ``BATCHSCORE_EMPTY_DAY``
    says, is recorded as skipped (the default) or failed (:class:`EmptyDayError`)."""


class EmptyDayError(RuntimeError):
    """The run date had no input events and ``BATCHSCORE_EMPTY_DAY=fail``: the run
    failed, and nothing was published."""


@dataclass(frozen=True)
class VolumeBaseline:
    """The typical day the volume gate compares the run date with, and where it comes from."""

    rows: float
    users: float
    source: str


@dataclass
class InputOutcome:
    report: Report
    rejected: dict[Any, list[str]] = field(default_factory=dict)

    @property
    def accepted_rows(self) -> int:
        return self.report.row_count - len(self.rejected)


def read_input_file(path: Path, file_format: str | None = None) -> InputBatch:
    """Read a day's file as it is, for the contract to judge; only unreadable files fail here.

    ``file_format`` is csv, movielens or parquet (None: parquet for a
    ``.parquet`` file, else csv). Rows of a text file are named by line
    number, rows of a Parquet file by their index in it (the first row is 0).
    """
    file_format = file_format_of(path, file_format, INPUT_FORMATS, default="csv")
    if not path.exists():
        raise InputError(f"{path}: file not found")
    raw = path.read_bytes()
    if not raw:
        raise InputError(f"{path}: the file is empty")
    if file_format == "parquet":
        frame = read_parquet_frame(path)
        frame.index = pd.RangeIndex(0, len(frame), name="row")
        return InputBatch(
            frame=whole_numbers_as_integers(frame), source=f"file:{path.name}", row_label="row",
            sha256=hashlib.sha256(raw).hexdigest())
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); "
            "the file mixes encodings or is not text"
        ) from None
    if not text.endswith("\n"):
        last_line = text.count("\n") + 1
        raise InputError(
            f"{path}: truncated: line {last_line} has no line end, so the file was cut short"
        )
    if file_format == "csv":
        read = {"sep": ",", "header": 0}
        first_line = 2
    else:
        read = {"sep": "\t", "header": None, "names": COLUMNS}
        first_line = 1
    try:
        frame = pd.read_csv(io.StringIO(text), skipinitialspace=True, **read)
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: not a well-formed {file_format} file: {err}") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    frame.index = pd.RangeIndex(first_line, first_line + len(frame), name="line")
    return InputBatch(
        frame=whole_numbers_as_integers(frame), source=f"file:{path.name}", row_label="line",
        sha256=hashlib.sha256(raw).hexdigest())


def whole_numbers_as_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep id and time columns numeric only when every value is a whole number.

    pandas reads an integer column with a blank as floats, which the contract
    accepts (the blank fails the missing-value check). A column holding a real
    fraction (``1.5``) is turned into plain objects, so that the type check
    fails and names it.
    """
    frame = frame.copy()
    for column in ("user_id", "item_id", "timestamp"):
        if column not in frame or frame[column].dtype != np.float64:
            continue
        present = frame[column].dropna()
        if not (np.isfinite(present) & (present == present.round())).all():
            frame[column] = frame[column].astype(object)
    return frame


def table_batch(engine: Engine, run_date: date) -> InputBatch:
    """The interactions table's events on ``run_date``, indexed by event id."""
    start = day_end(run_date - timedelta(days=1))
    with engine.connect() as conn:
        frame = pd.read_sql(
            statement(conn, "SELECT event_id, user_id, item_id, rating,"
                " extract(epoch FROM event_at)::bigint AS timestamp"
                " FROM {schema}.interactions WHERE event_at >= :start AND event_at < :end"
                " ORDER BY event_id"),
            conn, params={"start": start, "end": day_end(run_date)}, index_col="event_id",
        )
    return InputBatch(frame=frame, source=TABLE_SOURCE, row_label="event")


def volume_baseline(engine: Engine, run_date: date, runs: int) -> VolumeBaseline | None:
    """Median input rows and users of the last ``runs`` succeeded nightly runs before the date."""
    with engine.connect() as conn:
        rows = conn.execute(
            statement(conn, "SELECT (stats->>'input_rows')::float, (stats->>'input_users')::float"
                " FROM {schema}.runs WHERE kind = 'nightly' AND status = 'succeeded'"
                " AND logical_date < :d AND stats ? 'input_rows'"
                " ORDER BY logical_date DESC, finished_at DESC LIMIT :n"),
            {"d": run_date, "n": runs},
        ).all()
    if not rows:
        return None
    return VolumeBaseline(rows=statistics.median(row[0] for row in rows),
                          users=statistics.median(row[1] for row in rows),
                          source=f"median of the last {len(rows)} succeeded nightly run(s)")


def snapshot_baseline(engine: Engine) -> VolumeBaseline | None:
    """The typical day of the serving model's training snapshot.

    A first night has no earlier runs to compare with; the days the model was
    trained on are the best evidence of a normal day. A snapshot recorded
    before it carried daily figures gets them from the interactions table over
    its date range. None when no model serves or its snapshot has no date
    range.
    """
    with engine.connect() as conn:
        found = conn.execute(statement(conn,
            "SELECT version, data_snapshot FROM {schema}.model_versions"
            " WHERE status = 'serving'")).first()
        if found is None:
            return None
        version, snapshot = found
        if "median_daily_rows" in snapshot and "median_daily_users" in snapshot:
            days, rows, users = (snapshot.get("days"), snapshot["median_daily_rows"],
                                 snapshot["median_daily_users"])
        elif "first_event" in snapshot and "last_event" in snapshot:
            days, rows, users = conn.execute(statement(conn,
                "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY rows),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY users)"
                " FROM (SELECT count(*) AS rows, count(DISTINCT user_id) AS users"
                "  FROM {schema}.interactions WHERE event_at >= :first AND event_at <= :last"
                "  GROUP BY (event_at AT TIME ZONE 'UTC')::date) AS daily"),
                {"first": snapshot["first_event"], "last": snapshot["last_event"]}).one()
            if not days:
                return None
        else:
            return None
    return VolumeBaseline(rows=float(rows), users=float(users),
                          source=f"median day of model version {version}'s training snapshot"
                                 + (f" ({days} days)" if days else ""))


def known_items(engine: Engine) -> list[int] | None:
    with engine.connect() as conn:
        items = conn.execute(statement(conn, "SELECT item_id FROM {schema}.items")).scalars().all()
    return [int(item) for item in items] or None


def check_input(
    validator: Validator, engine: Engine, run_date: date, batch: InputBatch,
    run_name: str | None = None, *, now: datetime | None = None, future_allowed: bool = False,
) -> InputOutcome:
    """Run the input contract; raise :class:`ContractError` when the run must stop, and
    :class:`NothingToScoreError` when the batch has no events.

    ``now`` is the time of loading (default: the clock, UTC): later events are
    quarantined. With ``future_allowed`` (a run date after today, allowed on
    purpose) events up to the end of the run date count as on time. With no
    earlier runs, the serving model's training snapshot is the volume baseline.
    """
    if batch.frame.empty and list(batch.frame.columns) == COLUMNS:
        raise NothingToScoreError(
            f"nothing new to score for {run_date}: {batch.source} holds no events; "
            "nothing was published, the served version stays")
    config = load_contracts_config()["input"]
    now = now or datetime.now(UTC)
    end = int(day_end(run_date).timestamp())
    loaded_at = loading_time(now, config)
    if future_allowed:
        loaded_at = max(loaded_at, end - 1)
    parameters: dict[str, Any] = {
        "rating_min": config["rating_min"],
        "rating_max": config["rating_max"],
        "latest_timestamp": end - 1,
        "loaded_at_timestamp": loaded_at,
        "earliest_timestamp": end - (1 + int(config["max_event_age_days"])) * 86_400,
        "freshest_timestamp": end - 86_400,
    }
    unavailable = set()
    items = known_items(engine)
    if items is None:
        unavailable.add("items")
    else:
        parameters["known_items"] = items
    baseline = (volume_baseline(engine, run_date, int(config["volume_history_runs"]))
                or snapshot_baseline(engine))
    if baseline is None:
        unavailable.add("history")
    else:
        # Counts are whole: the bounds are the whole numbers inside the ratios (GX would
        # truncate a fractional minimum, letting a count just below it pass).
        parameters.update(
            rows_min=math.ceil(baseline.rows * config["volume_min_ratio"]),
            rows_max=math.floor(baseline.rows * config["volume_max_ratio"]),
            users_min=math.ceil(baseline.users * config["volume_min_ratio"]),
            users_max=math.floor(baseline.users * config["volume_max_ratio"]),
        )
    report = validator.validate(SUITE, batch.frame, parameters, unavailable=unavailable,
                                row_label=batch.row_label, run_name=run_name)
    title = f"input contract failed for {run_date} ({batch.source})"
    fatal = report.failures_at("schema", "volume")
    if fatal:
        if report.failures_at("volume") and baseline is not None:
            title += (f"; volume baseline: {baseline.rows:.10g} rows and "
                      f"{baseline.users:.10g} users a day, the {baseline.source}")
        raise ContractError(failure_message(title, fatal, [report]), [report])
    defective = set(report.row_failures)
    return judged(report, batch, title, config,
                  loaded_before(engine, run_date, batch, exclude=defective))


def loading_time(now: datetime, config: Mapping[str, Any]) -> int:
    """The latest event time accepted at ``now``: the time of loading plus the allowance
    for clocks that run a little apart (``clock_skew_seconds``)."""
    return int(now.timestamp()) + int(config["clock_skew_seconds"])


def judged(report: Report, batch: InputBatch, title: str, config: Mapping[str, Any],
           already: Mapping[Any, int]) -> InputOutcome:
    """The rows to quarantine, from the contract's ``report`` on ``batch``, its exact
    duplicates and the rows ``already`` loaded ({row: event id}); raise
    :class:`ContractError` when duplicates or defective rows pass their bounds."""
    rejected = dict(report.row_failures)
    defective = set(rejected)
    duplicated = batch.frame.duplicated(subset=COLUMNS, keep="first")
    for index in batch.frame.index[duplicated.to_numpy()]:
        rejected.setdefault(index, []).append("exact duplicate of an earlier event")
    for index, event_id in already.items():
        rejected.setdefault(index, []).append(
            f"exact duplicate of an event already loaded (event {event_id})")
    # A duplicate loses nothing when it is dropped, so duplicates have a bound of their
    # own; max_reject_fraction bounds the defective rows, whose events would be lost.
    duplicates = set(rejected) - defective
    tolerance = float(config["duplicate_tolerance"])
    if report.row_count and len(duplicates) / report.row_count > tolerance:
        examples = "; ".join(
            f"{batch.row_label} {index} = event {already[index]}" if index in already
            else f"{batch.row_label} {index} repeats an earlier {batch.row_label}"
            for index in sorted(duplicates)[:3])
        raise ContractError(
            f"{title}: {len(duplicates)} of {report.row_count} rows are exact duplicates "
            f"({len(already)} of them of events already loaded), more than the "
            f"{tolerance:.1%} that duplicate_tolerance allows; e.g. {examples}. Was the file, "
            "or part of it, sent before?"
            + "".join(f"\n  Data Docs: {url}" for url in [report.docs_url] if url),
            [report])
    limit = float(config["max_reject_fraction"])
    if report.row_count and len(defective) / report.row_count > limit:
        row_failures = report.failures_at("row")
        raise ContractError(
            failure_message(
                f"{title}: {len(defective)} of {report.row_count} rows are defective, more "
                f"than the {limit:.1%} that may be quarantined (max_reject_fraction)",
                row_failures, [report]),
            [report],
        )
    if rejected:
        logger.warning("input contract: %d of %d rows quarantined", len(rejected),
                       report.row_count)
    return InputOutcome(report=report, rejected=rejected)


@dataclass(frozen=True)
class LoadOutcome:
    """What ``batchscore data load`` did with a file: its run, the events loaded and
    quarantined."""

    run_id: str
    loaded: int
    rejected: int


def check_events(validator: Validator, engine: Engine, batch: InputBatch, now: datetime,
                 run_name: str | None = None) -> InputOutcome:
    """The input contract's checks of each event, for events that belong to no run date
    (``batchscore data load``): the same suite as :func:`check_input` without what
    needs a run date or earlier runs; an event stamped after ``now`` (beyond
    ``clock_skew_seconds``) is quarantined as a future timestamp."""
    config = load_contracts_config()["input"]
    parameters: dict[str, Any] = {"rating_min": config["rating_min"],
                                  "rating_max": config["rating_max"],
                                  "loaded_at_timestamp": loading_time(now, config)}
    unavailable = {"run_date", "history"}
    items = known_items(engine)
    if items is None:
        unavailable.add("items")
    else:
        parameters["known_items"] = items
    report = validator.validate(SUITE, batch.frame, parameters, unavailable=unavailable,
                                row_label=batch.row_label, run_name=run_name)
    title = f"input contract failed for {batch.source}"
    fatal = report.failures_at("schema", "volume")
    if fatal:
        raise ContractError(failure_message(title, fatal, [report]), [report])
    return judged(report, batch, title, config, already={})


def load_file(engine: Engine, home: Path, path: Path, *, file_format: str | None = None,
              layout: CsvLayout | None = None, replace: bool = False,
              now: datetime | None = None) -> LoadOutcome:
    """``batchscore data load``: check every line of ``path`` (malformed lines refuse the
    file), then the input contract's checks of each event (:func:`check_events`); load
    the accepted events and quarantine the others into ``batchscore.rejects`` in one
    transaction, recorded as a run of kind ``load``. A file with more defective rows
    than ``max_reject_fraction`` (or more duplicates than ``duplicate_tolerance``) is a
    :class:`ContractError` and loads nothing. With ``replace`` the table is emptied
    first, in the same transaction."""
    from jobs.platform import runs

    frame, label = read_events_file(path, file_format=file_format, layout=layout)
    batch = InputBatch(frame=frame, source=f"file:{path.name}", row_label=label)
    now = now or datetime.now(UTC)
    run_id = runs.new_run_id(LOAD_KIND, now.date())
    with runs.lease(engine, run_id):
        runs.start(engine, LOAD_KIND, now.date(), None, run_id)
        try:
            outcome = check_events(Validator(home, run_id), engine, batch, now, run_id)
            loaded = store_load(engine, run_id, batch, outcome, replace)
        except BaseException as err:
            runs.fail(engine, run_id, f"{type(err).__name__}: {err}")
            raise
        runs.succeed(engine, run_id, {
            "input_source": batch.source, "input_rows": loaded,
            "rejected": len(outcome.rejected),
            "data_docs": {"input": outcome.report.docs_url}})
    return LoadOutcome(run_id=run_id, loaded=loaded, rejected=len(outcome.rejected))


def store_load(engine: Engine, run_id: str, batch: InputBatch, outcome: InputOutcome,
               replace: bool) -> int:
    """The rejects and the accepted events of a load, in one transaction."""
    accepted = batch.frame.drop(index=list(outcome.rejected))
    with tempfile.TemporaryFile("w+", encoding="utf-8") as staged:
        count = rows_to_csv(accepted[COLUMNS].itertuples(index=False), staged)
        staged.seek(0)
        with cursor(engine) as cur:
            if replace:
                cur.execute(composed(cur, "TRUNCATE {schema}.interactions"))
            cur.executemany(
                composed(cur,
                        "INSERT INTO {schema}.rejects (run_id, source, row_number, row, reasons)"
                        " VALUES (%s, %s, %s, %s, %s)"),
                [(run_id, batch.source, int(index), json_row(batch.frame.loc[index]), reasons)
                 for index, reasons in sorted(outcome.rejected.items())])
            copy_with_progress(cur, COPY_INTERACTIONS, staged, "loading interactions", count)
    logger.info("load %s: %d events loaded, %d quarantined", run_id, count,
                len(outcome.rejected))
    return count


def loaded_before(engine: Engine, run_date: date, batch: InputBatch,
                  exclude: set[Any]) -> dict[Any, int]:
    """The batch's rows (by index) that repeat an event already in the interactions table,
    each with the id of the loaded event; rows in ``exclude`` are not looked up.

    Only a file can repeat history: the table's batch is every event of the
    date, so a copy of one of its events is in the batch itself, and the copy
    loaded first (the lowest event id) is the one kept. The date's own earlier
    load is not history: a re-run replaces it, or skips the same file.

    The batch's rows go to a temporary table and are joined with the events of
    the batch's users in its time range, which the indexes on ``user_id`` and
    ``event_at`` find; only the matches come back.
    """
    if batch.source == TABLE_SOURCE:
        return {}
    frame = batch.frame.drop(index=list(exclude))[COLUMNS].dropna()
    if frame.empty:
        return {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for index, (user_id, item_id, rating, seconds) in zip(
            frame.index, frame.itertuples(index=False), strict=True):
        writer.writerow((int(index), int(user_id), int(item_id), repr(float(rating)),
                         epoch_to_sql(int(seconds))))
    buffer.seek(0)
    with cursor(engine) as cur:
        cur.execute("CREATE TEMPORARY TABLE batch_events (row_key bigint, user_id bigint,"
                    " item_id bigint, rating double precision, event_at timestamptz)"
                    " ON COMMIT DROP")
        cur.copy_expert("COPY batch_events FROM STDIN WITH (FORMAT csv)", buffer)
        cur.execute("ANALYZE batch_events")
        cur.execute(
            composed(cur, "SELECT b.row_key, min(i.event_id) FROM batch_events AS b"
            " JOIN {schema}.interactions AS i USING (user_id, item_id, rating, event_at)"
            " WHERE i.user_id = ANY(%(users)s) AND i.event_at BETWEEN %(first)s AND %(last)s"
            " AND (i.load_id IS NULL OR i.load_id NOT IN (SELECT load_id"
            "  FROM {schema}.input_loads WHERE run_date = %(run_date)s))"
            " GROUP BY b.row_key"),
            {"users": sorted({int(user) for user in frame["user_id"]}),
             "first": epoch_to_sql(int(frame["timestamp"].min())),
             "last": epoch_to_sql(int(frame["timestamp"].max())), "run_date": run_date})
        matches = cur.fetchall()
    return {int(key): int(event_id) for key, event_id in matches}


def json_row(values: pd.Series) -> str:
    record = {}
    for name, value in values.items():
        if pd.isna(value):
            record[str(name)] = None
        elif isinstance(value, float | np.floating):
            record[str(name)] = float(value) if np.isfinite(value) else str(value)
        elif isinstance(value, int | np.integer):
            record[str(name)] = int(value)
        else:
            record[str(name)] = str(value)
    return json.dumps(record)


def quarantine_and_load(engine: Engine, run_id: str, run_date: date, batch: InputBatch,
                        outcome: InputOutcome) -> dict[str, int]:
    """Move rejected rows to ``batchscore.rejects`` and load a file's accepted rows.

    One transaction: the rejects, the removal of an earlier load of the same
    date (a re-run replaces it) and the new rows land together or not at all.
    """
    rejects = [
        (run_id, batch.source, int(index), json_row(batch.frame.loc[index]), reasons)
        for index, reasons in sorted(outcome.rejected.items())
    ]
    with cursor(engine) as cur:
        cur.executemany(
            composed(cur, "INSERT INTO {schema}.rejects (run_id, source, row_number, row, reasons)"
            " VALUES (%s, %s, %s, %s, %s)"), rejects,
        )
        loaded = 0
        if batch.source == TABLE_SOURCE:
            cur.execute(composed(cur, "DELETE FROM {schema}.interactions WHERE event_id = ANY(%s)"),
                        ([int(index) for index in outcome.rejected],))
        else:
            loaded = _load_file_rows(cur, run_id, run_date, batch, outcome)
    logger.info("input: %d rows loaded, %d quarantined", loaded, len(rejects))
    return {"loaded": loaded, "rejected": len(rejects)}


def _load_file_rows(cur: Any, run_id: str, run_date: date, batch: InputBatch,
                    outcome: InputOutcome) -> int:
    cur.execute(composed(cur,
            "SELECT load_id, sha256 FROM {schema}.input_loads WHERE run_date = %s"),
                (run_date,))
    previous = cur.fetchall()
    if any(sha == batch.sha256 for _, sha in previous):
        logger.info("input: this file was already loaded for %s; not loading it again", run_date)
        return 0
    if previous:
        cur.execute(composed(cur, "DELETE FROM {schema}.interactions WHERE load_id = ANY(%s)"),
                    ([load_id for load_id, _ in previous],))
        cur.execute(composed(cur, "DELETE FROM {schema}.input_loads WHERE run_date = %s"),
                    (run_date,))
    cur.execute(
        composed(cur, "INSERT INTO {schema}.input_loads (run_date, sha256, source, run_id)"
        " VALUES (%s, %s, %s, %s) RETURNING load_id"),
        (run_date, batch.sha256, batch.source, run_id),
    )
    load_id = cur.fetchone()[0]
    accepted = batch.frame.drop(index=list(outcome.rejected))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for user_id, item_id, rating, seconds in accepted[COLUMNS].itertuples(index=False):
        writer.writerow((int(user_id), int(item_id), repr(float(rating)),
                         epoch_to_sql(int(seconds)), load_id))
    buffer.seek(0)
    copy_with_progress(
        cur, "COPY {schema}.interactions (user_id, item_id, rating, event_at, load_id)"
        " FROM STDIN WITH (FORMAT csv)", buffer, "loading the input", len(accepted))
    cur.execute(composed(cur, "UPDATE {schema}.input_loads SET rows = %s WHERE load_id = %s"),
                (len(accepted), load_id))
    return len(accepted)


def batch_stats(batch: InputBatch, outcome: InputOutcome) -> dict[str, Any]:
    accepted = batch.frame.drop(index=list(outcome.rejected))
    return {
        "input_source": batch.source,
        "input_rows": len(accepted),
        "input_users": int(accepted["user_id"].nunique()),
        "input_rejected": len(outcome.rejected),
    }


def list_rejects(engine: Engine, run_id: str | None = None, limit: int = 100
                 ) -> list[dict[str, Any]]:
    """Quarantined input rows with their reasons, newest first (of one run, if given)."""
    with engine.connect() as conn:
        rows = conn.execute(statement(conn,
            "SELECT run_id, source, row_number, row, reasons, rejected_at FROM {bi}.rejects"
            " WHERE CAST(:run_id AS text) IS NULL OR run_id = :run_id"
            " ORDER BY rejected_at DESC, run_id, row_number LIMIT :n"),
            {"run_id": run_id, "n": limit}).mappings().all()
    return [dict(row) for row in rows]


def validate_by_hand(validator: Validator, engine: Engine, run_date: date,
                     path: Path | None, file_format: str | None = None
                     ) -> tuple[InputBatch, InputOutcome]:
    """The input contract on a file (or, without one, the run date's events in the table);
    nothing is loaded."""
    batch = read_input_file(path, file_format) if path else table_batch(engine, run_date)
    return batch, check_input(validator, engine, run_date, batch)
