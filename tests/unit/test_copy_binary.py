"""PostgreSQL's binary COPY stream for prediction lists, byte for byte."""

import struct

import pyarrow as pa
import pytest

from jobs.publish.copy_binary import COPY_HEADER, COPY_TRAILER, copy_lists_binary

SCHEMA = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                    ("scores", pa.list_(pa.float32()))])


def row(publish_id: int, user_id: int, items: list[int], scores: list[float]) -> bytes:
    """One row as PostgreSQL's documentation of the binary format spells it out."""
    def array(oid: int, code: str, values: list) -> bytes:
        body = struct.pack(">iiiii", 1, 0, oid, len(values), 1) + b"".join(
            struct.pack(">i" + code, 4, value) for value in values)
        return struct.pack(">i", len(body)) + body

    return (struct.pack(">h", 4)
            + struct.pack(">iq", 8, publish_id) + struct.pack(">iq", 8, user_id)
            + array(23, "i", items) + array(700, "f", scores))


def test_one_row_per_user_with_a_list_in_the_binary_format() -> None:
    block = pa.RecordBatch.from_pydict(
        {"user_id": [42, 7, 9, 11], "items": [[300, 100], [], [5], [8, 6]],
         "scores": [[0.5, -1.25], [], [2.0], [1.5, 1.0]]}, schema=SCHEMA)
    payload = copy_lists_binary(17, block)
    assert payload.rows == 5
    # Users are grouped by the length of their list, shortest first.
    assert payload.data == (
        b"PGCOPY\n\xff\r\n\x00" + bytes(8)
        + row(17, 9, [5], [2.0])
        + row(17, 42, [300, 100], [0.5, -1.25]) + row(17, 11, [8, 6], [1.5, 1.0])
        + b"\xff\xff"
    )


def test_an_empty_block_is_a_header_and_a_trailer() -> None:
    block = pa.RecordBatch.from_pydict({"user_id": [], "items": [], "scores": []},
                                       schema=SCHEMA)
    assert copy_lists_binary(1, block).data == COPY_HEADER + COPY_TRAILER


def test_a_sliced_block_starts_at_its_own_first_user() -> None:
    block = pa.RecordBatch.from_pydict(
        {"user_id": [1, 2], "items": [[10, 11], [20]], "scores": [[1.0, 0.5], [3.0]]},
        schema=SCHEMA).slice(1)
    assert copy_lists_binary(4, block).data == COPY_HEADER + row(4, 2, [20], [3.0]) + COPY_TRAILER


def test_items_and_scores_must_pair_up() -> None:
    block = pa.RecordBatch.from_pydict({"user_id": [1], "items": [[10, 11]], "scores": [[1.0]]},
                                       schema=SCHEMA)
    with pytest.raises(ValueError, match="as many scores as items"):
        copy_lists_binary(1, block)


def test_an_item_id_beyond_the_integer_column_is_refused() -> None:
    block = pa.RecordBatch.from_pydict({"user_id": [1], "items": [[10, 2**31]],
                                        "scores": [[1.0, 0.5]]}, schema=SCHEMA)
    with pytest.raises(ValueError,
                       match=r"item ids must be -2147483648 to 2147483647.*got 10 to 2147483648"):
        copy_lists_binary(1, block)
