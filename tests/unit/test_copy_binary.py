"""PostgreSQL's binary COPY stream for prediction rows, byte for byte."""

import struct

import pyarrow as pa
import pytest

from jobs.publish.copy_binary import COPY_HEADER, COPY_TRAILER, copy_rows_binary

SCHEMA = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                    ("scores", pa.list_(pa.float32()))])


def row(publish_id: int, user_id: int, rank: int, item_id: int, score: float) -> bytes:
    return (struct.pack(">h", 5)
            + struct.pack(">iq", 8, publish_id) + struct.pack(">iq", 8, user_id)
            + struct.pack(">ih", 2, rank) + struct.pack(">iq", 8, item_id)
            + struct.pack(">if", 4, score))


def test_one_row_per_user_and_rank_in_the_binary_format() -> None:
    block = pa.RecordBatch.from_pydict(
        {"user_id": [42, 7, 9], "items": [[300, 100], [], [5]],
         "scores": [[0.5, -1.25], [], [2.0]]}, schema=SCHEMA)
    payload = copy_rows_binary(17, block)
    assert payload.rows == 3
    assert payload.data == (
        b"PGCOPY\n\xff\r\n\x00" + bytes(8)
        + row(17, 42, 1, 300, 0.5) + row(17, 42, 2, 100, -1.25) + row(17, 9, 1, 5, 2.0)
        + b"\xff\xff"
    )


def test_an_empty_block_is_a_header_and_a_trailer() -> None:
    block = pa.RecordBatch.from_pydict({"user_id": [], "items": [], "scores": []},
                                       schema=SCHEMA)
    assert copy_rows_binary(1, block).data == COPY_HEADER + COPY_TRAILER


def test_a_sliced_block_starts_at_its_own_first_user() -> None:
    block = pa.RecordBatch.from_pydict(
        {"user_id": [1, 2], "items": [[10, 11], [20]], "scores": [[1.0, 0.5], [3.0]]},
        schema=SCHEMA).slice(1)
    assert copy_rows_binary(4, block).data == COPY_HEADER + row(4, 2, 1, 20, 3.0) + COPY_TRAILER


def test_items_and_scores_must_pair_up() -> None:
    block = pa.RecordBatch.from_pydict({"user_id": [1], "items": [[10, 11]], "scores": [[1.0]]},
                                       schema=SCHEMA)
    with pytest.raises(ValueError, match="as many scores as items"):
        copy_rows_binary(1, block)
