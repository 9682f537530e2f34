"""Publishing a scored version to the stores readers use.

One module per store (:mod:`jobs.publish.postgres`, :mod:`jobs.publish.redis`)
writes a version aside; :mod:`jobs.publish.protocol` switches both stores to
it under one lock, and :mod:`jobs.publish.reconcile` repairs them after a
crash. The states a version moves through and what each store holds in each
are written down in ``schemas/publishing.md``. Readers never see a version
until it is switched in whole.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.dataset as ds

from jobs.contracts import redis as redis_contract

T = TypeVar("T")

# Users a publisher holds in memory at a time, read in blocks of a quarter of
# this: PostgreSQL loads two blocks at once while one waits and the next is
# read; Redis sends one while the next is read (see read_ahead).
BLOCK_USERS = 10_000


@dataclass(frozen=True)
class PublishVersion:
    publish_id: int
    run_id: str
    model_version: int
    logical_date: date
    k: int
    # Set when a canary model serves part of the users (see jobs.contracts.canary).
    canary_model_version: int | None = None
    canary_fraction: float | None = None


@dataclass(frozen=True)
class SwitchOutcome:
    """What the switch did, decided once by the system of record (Postgres)."""

    served: bool
    previous_served: int | None = None
    superseded: list[int] = field(default_factory=list)


# What each store reads of the scoring output.
POSTGRES_COLUMNS = ("user_id", "items", "scores")
REDIS_COLUMNS = ("user_id", redis_contract.VALUE_COLUMN)


def read_blocks(recommendations_dir: Path, block_users: int = BLOCK_USERS // 4,
                columns: Sequence[str] = POSTGRES_COLUMNS) -> Iterator[pa.RecordBatch]:
    """Stream rows of ``columns`` from the scoring output, a block at a time.

    Spark may write many small files; their rows are gathered into blocks of
    ``block_users`` (the last one smaller), so no more than a block is held.
    """
    dataset = ds.dataset(str(recommendations_dir), format="parquet")
    missing = sorted(set(columns) - set(dataset.schema.names))
    if missing:
        raise ValueError(f"{recommendations_dir} has no column {', '.join(missing)}: "
                         "score the date again with this version of the scoring job")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    # Arrow reads no further ahead than the next batch.
    for batch in dataset.to_batches(columns=list(columns), batch_size=block_users,
                                    batch_readahead=1, fragment_readahead=1):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= block_users:
            combined = pa.Table.from_batches(pending).combine_chunks()
            yield from combined.slice(0, block_users).to_batches()
            rest = combined.slice(block_users)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield from pa.Table.from_batches(pending).combine_chunks().to_batches()


def read_ahead(items: Iterable[T], limit: int = 2) -> Iterator[T]:
    """``items`` in order, each produced on a background thread while the caller
    works on the ones before it; at most ``limit`` are produced and not yet done
    with (one is done with when the caller asks for the next).

    Publishing uses it to read and encode the next block while the current one
    is being sent. An error on either side stops both and is raised to the caller.
    """
    if limit < 2:
        raise ValueError(f"limit must be at least 2 to read ahead, got {limit}")
    permits = threading.Semaphore(limit - 1)
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                permits.acquire()
                if stop.is_set():
                    return
                ready.put((item, None))
            ready.put((done, None))
        except BaseException as err:  # handed to the caller's thread
            ready.put((done, err))

    producer = threading.Thread(target=produce, name="read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            item, err = ready.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
            permits.release()
    finally:
        stop.set()
        permits.release()
        producer.join()
