"""The interaction history as Spark reads it: a Parquet data set, one folder per event day.

PostgreSQL's ``batchscore.interactions`` stays the record every load writes to
(the input contract's duplicate check and monitoring's drift read it there).
Training and the nightly read the history instead, only the days and columns
they need, from ``<root>/event_date=YYYY-MM-DD/events.parquet``: columns
``user_id`` and ``item_id`` (int64), ``rating`` (float64) and ``event_at`` (Unix
seconds, int64). The root is a local folder by default
(``$BATCHSCORE_HOME/history/<id>``, an id each database gets when migrated,
so two databases never share one) or any URI Spark's Hadoop file systems
read (``BATCHSCORE_HISTORY_URI``: ``s3a://bucket/history``, ``hdfs://...``).

A day's file is written again from PostgreSQL whenever a load changed that day:
triggers on ``batchscore.interactions`` mark the days a statement touched in
``batchscore.history_days``, in the statement's own transaction
(``sql/012_history.sql``), and :func:`sync` writes each marked day (to a
temporary name, then renamed into place) and clears its mark only if no load
marked it again meanwhile. A sync cut short leaves its days marked, so the
next one writes them again; nothing but the changed days is read or written.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from sqlalchemy.engine import Engine

from jobs.data.store import day_end
from jobs.platform.db import composed, cursor, statement
from jobs.platform.progress import progress

logger = logging.getLogger(__name__)

SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                    ("rating", pa.float64()), ("event_at", pa.int64())])
# What Spark reads: the file's columns and the folder's day.
SPARK_SCHEMA = "user_id long, item_id long, rating double, event_at long, event_date date"
FILE_NAME = "events.parquet"
# A row of PostgreSQL's binary COPY of (user_id, item_id, rating, event_at seconds).
COPY_ROW = np.dtype([("fields", ">i2"),
                     ("user_id_size", ">i4"), ("user_id", ">i8"),
                     ("item_id_size", ">i4"), ("item_id", ">i8"),
                     ("rating_size", ">i4"), ("rating", ">f8"),
                     ("event_at_size", ">i4"), ("event_at", ">i8")])
COPY_HEADER_BYTES = 19
# Rows handed to the Parquet writer at a time while a day is copied out.
ROWS_PER_WRITE = 1 << 20


class HistoryError(RuntimeError):
    """The history cannot be read or written where it is configured."""


def root(engine: Engine, configured: str | None, home: Path) -> str:
    """The history's root: the configured URI, else ``home/history/<store id>``, the id
    this database was given when migrated (``batchscore.history_store``)."""
    if configured:
        return configured
    with engine.connect() as conn:
        store_id = conn.execute(statement(conn, "SELECT store_id FROM {schema}.history_store")
                                ).scalar_one()
    return str(home / "history" / str(store_id))


def day_folder(root: str, day: date) -> str:
    return f"{root.rstrip('/')}/event_date={day.isoformat()}"


def folder_day(name: str) -> date | None:
    """The day a folder of the history holds, or None for a name that is not one."""
    try:
        return date.fromisoformat(name.removeprefix("event_date="))
    except ValueError:
        return None


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system and path for a root Spark would read: Hadoop's ``s3a://``
    is pyarrow's ``s3://``; a plain path is local."""
    if "://" not in root:
        return pafs.LocalFileSystem(), str(Path(root).absolute())
    uri = "s3://" + root.removeprefix("s3a://") if root.startswith("s3a://") else root
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise HistoryError(f"the interaction history at {root} cannot be written from "
                           f"here: {err}") from err


@dataclass(frozen=True)
class SyncReport:
    days_written: int
    days_removed: int
    events_written: int


def sync(engine: Engine, root: str) -> SyncReport:
    """Write every day a load changed since the last sync, and remove the folders of days
    PostgreSQL has no events for; see the module's notes."""
    with engine.connect() as conn:
        days = conn.execute(statement(conn,
            "SELECT event_date, marked_at FROM {schema}.history_days ORDER BY event_date")
            ).all()
    known = {day for day, _ in days}
    marked = [(day, marked_at) for day, marked_at in days if marked_at is not None]
    files, base = filesystem(root)
    strays = [info.path for info in files.get_file_info(
        pafs.FileSelector(base, allow_not_found=True))
        if info.type == pafs.FileType.Directory and folder_day(info.base_name) not in known]
    for folder in strays:
        files.delete_dir(folder)
    if strays:
        logger.info("interaction history at %s: %d folder(s) of days without events removed",
                    root, len(strays))
    written, removed, events = 0, len(strays), 0
    if not marked:
        return SyncReport(written, removed, events)
    with progress("writing the interaction history", len(marked), "days") as done:
        for number, (day, marked_at) in enumerate(marked, start=1):
            count = write_day(engine, files, base, day)
            with engine.begin() as conn:
                if count:
                    conn.execute(statement(conn,
                        "UPDATE {schema}.history_days SET marked_at = NULL, events = :n,"
                        " written_at = now() WHERE event_date = :d AND marked_at = :m"),
                        {"n": count, "d": day, "m": marked_at})
                else:
                    conn.execute(statement(conn, "DELETE FROM {schema}.history_days"
                        " WHERE event_date = :d AND marked_at = :m"), {"d": day, "m": marked_at})
            written, removed = written + bool(count), removed + (not count)
            events += count
            done(number)
    logger.info("interaction history at %s: %d day(s) written (%d events), %d removed", root,
                written, events, removed)
    return SyncReport(written, removed, events)


def write_day(engine: Engine, files: pafs.FileSystem, base: str, day: date) -> int:
    """Write one day's events from PostgreSQL to its file, or remove the file when the day
    has none; the events written."""
    folder = day_folder(base, day)
    final, staged = f"{folder}/{FILE_NAME}", f"{folder}/.{uuid.uuid4().hex}.tmp"
    query = ("COPY (SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
             " FROM {schema}.interactions WHERE event_at >= %s AND event_at < %s"
             " ORDER BY event_at, user_id) TO STDOUT WITH (FORMAT binary)")
    files.create_dir(folder, recursive=True)
    sink = RowsToParquet(files.open_output_stream(staged))
    try:
        with cursor(engine) as cur:
            cur.copy_expert(cur.mogrify(composed(cur, query), (day_end(day) - timedelta(days=1),
                                                day_end(day))).decode(), sink)
        sink.close()
    except BaseException:
        sink.close()
        files.delete_file(staged)
        raise
    if sink.rows:
        files.move(staged, final)
    else:
        files.delete_file(staged)
        files.delete_dir(folder)
    return sink.rows


class RowsToParquet:
    """A file-like sink for a binary ``COPY ... TO STDOUT`` of :data:`COPY_ROW` rows that
    writes them to Parquet as they arrive, a block at a time."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.writer = pq.ParquetWriter(stream, SCHEMA, compression="zstd")
        self.pending = bytearray()
        self.header_left = COPY_HEADER_BYTES
        self.rows = 0

    def write(self, data: bytes) -> int:
        chunk = memoryview(data)
        if self.header_left:
            skipped = min(self.header_left, len(chunk))
            self.header_left -= skipped
            chunk = chunk[skipped:]
        self.pending += chunk
        if len(self.pending) >= ROWS_PER_WRITE * COPY_ROW.itemsize:
            self.flush_rows()
        return len(data)

    def flush_rows(self) -> None:
        whole = len(self.pending) // COPY_ROW.itemsize * COPY_ROW.itemsize
        if not whole:
            return
        rows = np.frombuffer(bytes(self.pending[:whole]), dtype=COPY_ROW)
        del self.pending[:whole]
        if (rows["fields"] != len(SCHEMA)).any():
            raise HistoryError("the COPY stream of interactions is not rows of four fields")
        self.writer.write_table(pa.table(
            {name: rows[name].astype(SCHEMA.field(name).type.to_pandas_dtype())
             for name in SCHEMA.names}, schema=SCHEMA))
        self.rows += len(rows)

    def close(self) -> None:
        if self.writer is None:
            return
        self.flush_rows()
        # What is left is the trailer (-1 as a 16-bit field count).
        if bytes(self.pending) not in (b"", b"\xff\xff"):
            raise HistoryError(f"the COPY stream ended in {len(self.pending)} stray bytes")
        self.writer.close()
        self.stream.close()
        self.writer = None


def events_up_to(engine: Engine, until: date) -> int:
    """Events the history holds up to the end of ``until`` (after a sync)."""
    with engine.connect() as conn:
        return int(conn.execute(statement(conn,
            "SELECT coalesce(sum(events), 0) FROM {schema}.history_days"
            " WHERE event_date <= :d"), {"d": until}).scalar_one())


def read_events(spark: Any, root: str, until: date) -> Any:
    """The history's events up to the end of ``until`` as a Spark DataFrame of
    ``user_id, item_id, rating, event_at``: only those days' folders are read."""
    from pyspark.sql import functions as F

    return (spark.read.schema(SPARK_SCHEMA).option("basePath", root).parquet(root)
            .where(F.col("event_date") <= F.lit(until))
            .select("user_id", "item_id", "rating", "event_at"))


def write_snapshot(root: str, until: date, path: Path) -> int:
    """The history's events up to the end of ``until`` in one Parquet file at ``path``
    (a training set kept beside its model); the events written."""
    import pyarrow.dataset as ds

    files, base = filesystem(root)
    try:
        dataset = ds.dataset(base, filesystem=files, format="parquet",
                             schema=SCHEMA.append(pa.field("event_date", pa.date32())),
                             partitioning=ds.partitioning(
                                 pa.schema([("event_date", pa.date32())]), flavor="hive"))
    except FileNotFoundError:
        dataset = None
    rows = 0
    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
        for batch in batches(dataset, until):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def batches(dataset: Any, until: date) -> Iterator[pa.RecordBatch]:
    import pyarrow.dataset as ds

    if dataset is None:
        return
    yield from dataset.to_batches(columns=SCHEMA.names,
                                  filter=ds.field("event_date") <= pa.scalar(until, pa.date32()))
