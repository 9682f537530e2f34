"""The scoring output's lists, written by the scoring tasks themselves.

Each task writes the Arrow batches it scored straight to a Parquet file with
pyarrow, instead of handing every list back to the JVM for Spark's writer: at
1,000,000 users that handoff and Spark's nested-array encoder cost more than the
top-K selection. A task writes ``_attempts/<name>-<attempt>.parquet`` and, once
its last batch is written, renames it to ``part-<job>-<partition>.parquet``, so
a killed or retried attempt never leaves a partial file under a final name, and
a retry replaces what an earlier attempt of the same partition finished (the
same rows). The task returns one row, its file and row count; the driver removes
``_attempts/`` when the job has finished. Readers (pyarrow datasets) skip names
starting with ``_``.

The folder must be reachable at the same path by the driver and every executor,
as for any Spark job writing to a local path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import types as T

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

ATTEMPTS_DIR = "_attempts"
# LZ4 compresses the lists as well as Snappy and publishing reads them back about
# four times faster; one row group per scored batch (about 10,000 users) lets
# publishing hold little more than a block and start sending as soon as the first
# group is read.
COMPRESSION = "lz4"
# Only the item ids repeat across users: a dictionary of the scores, the Redis values
# or the checks costs a third of the writing and saves nothing.
DICTIONARY_COLUMNS = ["items.list.element"]
WRITTEN_SCHEMA = T.StructType([
    T.StructField("file", T.StringType(), nullable=True),
    T.StructField("rows", T.LongType(), nullable=False),
])

TaskFunction = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def write_scored(users: DataFrame, scorer: TaskFunction, folder: Path, job: str) -> list[str]:
    """Run ``scorer`` over ``users`` in Spark tasks that write its batches under
    ``folder`` as ``part-<job>-<partition>.parquet``; the files written, by name."""
    target = str(folder)
    written = users.mapInArrow(task_writer(scorer, target, job), WRITTEN_SCHEMA).collect()
    shutil.rmtree(folder / ATTEMPTS_DIR, ignore_errors=True)
    return sorted(row["file"] for row in written if row["file"])


def task_writer(scorer: TaskFunction, folder: str, job: str) -> TaskFunction:
    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        context = TaskContext.get()
        name = f"part-{job}-{context.partitionId():05d}"
        attempt = Path(folder) / ATTEMPTS_DIR / f"{name}-{context.taskAttemptId()}.parquet"
        writer = None
        rows = 0
        try:
            for batch in scorer(batches):
                if writer is None:
                    attempt.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(attempt, batch.schema, compression=COMPRESSION,
                                              use_dictionary=DICTIONARY_COLUMNS)
                writer.write_batch(batch)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        final = None
        if writer is not None:
            final = f"{name}.parquet"
            os.replace(attempt, Path(folder) / final)
        yield pa.RecordBatch.from_pydict(
            {"file": pa.array([final], pa.string()), "rows": pa.array([rows], pa.int64())})

    return write
