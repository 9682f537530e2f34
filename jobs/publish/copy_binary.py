"""PostgreSQL's binary COPY format for prediction lists, built with numpy.

One row is a user's list in one version: ``(publish_id bigint, user_id
bigint, item_ids integer[], scores real[])``, best first. Rows whose lists
have the same length have the same width in the binary format, so a block's
users are grouped by the length of their list and each group is one numpy
structured array of big-endian fields, filled column by column; the groups
are sent one after another in one buffer. A user with an empty list has no
row, as a user without predictions has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Signature, flags (no OIDs), header extension length.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"

# PostgreSQL's type oids of the arrays' elements.
INT4_OID = 23
FLOAT4_OID = 700
# An array's header in the binary format: dimensions, has-nulls flag, element
# type, then the length and lower bound of its one dimension.
ARRAY_HEADER = [("ndim", ">i4"), ("has_null", ">i4"), ("element", ">i4"),
                ("length", ">i4"), ("lower", ">i4")]
ARRAY_HEADER_BYTES = 20
# The view's rank column is a smallint; item ids are the table's integers (the input
# contract allows 1 to 2^31 - 1).
MAX_RANK = np.iinfo(np.int16).max
MIN_ITEM_ID, MAX_ITEM_ID = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)


@dataclass(frozen=True)
class CopyPayload:
    data: bytes
    rows: int  # the (user, rank) pairs the payload holds


def list_row(length: int) -> np.dtype:
    """The binary COPY row of a user whose list has ``length`` entries."""
    return np.dtype([
        ("fields", ">i2"),
        ("publish_id_size", ">i4"), ("publish_id", ">i8"),
        ("user_id_size", ">i4"), ("user_id", ">i8"),
        ("items_size", ">i4"), *[(f"items_{name}", kind) for name, kind in ARRAY_HEADER],
        ("items", [("size", ">i4"), ("value", ">i4")], (length,)),
        ("scores_size", ">i4"), *[(f"scores_{name}", kind) for name, kind in ARRAY_HEADER],
        ("scores", [("size", ">i4"), ("value", ">f4")], (length,)),
    ])


def copy_lists_binary(publish_id: int, block: pa.RecordBatch) -> CopyPayload:
    """A whole binary COPY stream (header, rows, trailer) for one block of
    (user_id, items, scores) rows: one row per user with a list."""
    items = block.column("items")
    scores = block.column("scores")
    lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy().astype(np.int64)
    score_lengths = pc.fill_null(pc.list_value_length(scores), 0).to_numpy()
    if not np.array_equal(lengths, score_lengths):
        raise ValueError("every user needs as many scores as items")
    if len(lengths) and lengths.max() > MAX_RANK:
        raise ValueError(f"at most {MAX_RANK} items per user fit the rank column")
    flat_items = pc.list_flatten(items).to_numpy(zero_copy_only=False)
    flat_scores = pc.list_flatten(scores).to_numpy(zero_copy_only=False)
    if len(flat_items) and (flat_items.min() < MIN_ITEM_ID or flat_items.max() > MAX_ITEM_ID):
        raise ValueError(f"item ids must be {MIN_ITEM_ID} to {MAX_ITEM_ID} (PostgreSQL's "
                         f"integer) to be stored; got {int(flat_items.min())} to "
                         f"{int(flat_items.max())}")
    users = block.column("user_id").to_numpy(zero_copy_only=False)
    starts = np.cumsum(lengths) - lengths
    parts = [COPY_HEADER]
    for length in np.unique(lengths[lengths > 0]):
        length = int(length)
        chosen = np.flatnonzero(lengths == length)
        rows = np.empty(len(chosen), dtype=list_row(length))
        rows["fields"] = 4
        rows["publish_id_size"], rows["publish_id"] = 8, publish_id
        rows["user_id_size"], rows["user_id"] = 8, users[chosen]
        # Each element's place in the flat columns: its user's start plus its rank - 1.
        at = starts[chosen][:, None] + np.arange(length)
        for column, oid, values in (("items", INT4_OID, flat_items),
                                    ("scores", FLOAT4_OID, flat_scores)):
            rows[f"{column}_size"] = ARRAY_HEADER_BYTES + 8 * length
            rows[f"{column}_ndim"], rows[f"{column}_has_null"] = 1, 0
            rows[f"{column}_element"], rows[f"{column}_length"] = oid, length
            rows[f"{column}_lower"] = 1
            rows[column]["size"] = 4
            rows[column]["value"] = values[at]
        parts.append(rows.tobytes())
    parts.append(COPY_TRAILER)
    return CopyPayload(data=b"".join(parts), rows=int(lengths.sum()))
