"""PostgreSQL's binary COPY format for prediction rows, built with numpy.

One prediction row is ``(publish_id bigint, user_id bigint, rank smallint,
item_id bigint, score real)``. Every row has the same width in the binary
format, so a block's rows are one numpy structured array of big-endian
fields, filled column by column and sent as one buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Signature, flags (no OIDs), header extension length.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"

PREDICTION_ROW = np.dtype([
    ("fields", ">i2"),
    ("publish_id_size", ">i4"), ("publish_id", ">i8"),
    ("user_id_size", ">i4"), ("user_id", ">i8"),
    ("rank_size", ">i4"), ("rank", ">i2"),
    ("item_id_size", ">i4"), ("item_id", ">i8"),
    ("score_size", ">i4"), ("score", ">f4"),
])
MAX_RANK = np.iinfo(np.int16).max


@dataclass(frozen=True)
class CopyPayload:
    data: bytes
    rows: int


def copy_rows_binary(publish_id: int, block: pa.RecordBatch) -> CopyPayload:
    """A whole binary COPY stream (header, rows, trailer) for one block of
    (user_id, items, scores) rows: one row per (user, rank), ranks from 1."""
    items = block.column("items")
    scores = block.column("scores")
    lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy().astype(np.int64)
    score_lengths = pc.fill_null(pc.list_value_length(scores), 0).to_numpy()
    if not np.array_equal(lengths, score_lengths):
        raise ValueError("every user needs as many scores as items")
    if len(lengths) and lengths.max() > MAX_RANK:
        raise ValueError(f"at most {MAX_RANK} items per user fit the rank column")
    total = int(lengths.sum())
    rows = np.empty(total, dtype=PREDICTION_ROW)
    rows["fields"] = 5
    for name in ("publish_id", "user_id", "rank", "item_id", "score"):
        rows[f"{name}_size"] = PREDICTION_ROW[name].itemsize
    rows["publish_id"] = publish_id
    rows["user_id"] = np.repeat(
        block.column("user_id").to_numpy(zero_copy_only=False), lengths)
    starts = np.cumsum(lengths) - lengths
    rows["rank"] = np.arange(1, total + 1) - np.repeat(starts, lengths)
    rows["item_id"] = pc.list_flatten(items).to_numpy(zero_copy_only=False)
    rows["score"] = pc.list_flatten(scores).to_numpy(zero_copy_only=False)
    return CopyPayload(data=COPY_HEADER + rows.tobytes() + COPY_TRAILER, rows=total)
