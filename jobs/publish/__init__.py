"""Publishing a scored version to the stores readers use.

Each backend lives in its own module behind :class:`Publisher`: prepare a
version aside, write its blocks, switch readers to it, abort (discard what was
staged) and clean up what is no longer kept. Readers never see a version
until it is switched in whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.dataset as ds

# Users per block: what one publisher holds in memory at a time.
BLOCK_USERS = 10_000


@dataclass(frozen=True)
class PublishVersion:
    publish_id: int
    run_id: str
    model_version: int
    logical_date: date
    k: int
    # Set when a canary model serves part of the users (see jobs.canary).
    canary_model_version: int | None = None
    canary_fraction: float | None = None


@dataclass(frozen=True)
class SwitchOutcome:
    """What the switch did, decided once by the system of record (Postgres)."""

    served: bool
    previous_served: int | None = None
    superseded: list[int] = field(default_factory=list)


class Publisher(Protocol):
    def prepare(self, version: PublishVersion) -> None: ...

    def write(self, block: pa.RecordBatch) -> int: ...

    def write_fallback(self, popular: pa.Table) -> None: ...

    def abort(self) -> None: ...


def read_blocks(recommendations_dir: Path, block_users: int = BLOCK_USERS
                ) -> Iterator[pa.RecordBatch]:
    """Stream (user_id, items, scores) rows from the scoring output, a block at a time.

    Spark may write many small files; their rows are gathered into blocks of
    ``block_users`` (the last one smaller), so no more than a block is held.
    """
    dataset = ds.dataset(str(recommendations_dir), format="parquet")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in dataset.to_batches(batch_size=block_users):
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= block_users:
            combined = pa.Table.from_batches(pending).combine_chunks()
            yield from combined.slice(0, block_users).to_batches()
            rest = combined.slice(block_users)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield from pa.Table.from_batches(pending).combine_chunks().to_batches()
