from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.publish import REDIS_COLUMNS, read_blocks

SCHEMA = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                    ("scores", pa.list_(pa.float32()))])


def write_file(path: Path, users: range) -> None:
    pq.write_table(pa.table({
        "user_id": list(users),
        "items": [[user, user + 1] for user in users],
        "scores": [[1.0, 0.5] for _ in users],
    }, schema=SCHEMA), path)


def test_small_files_are_gathered_into_blocks(tmp_path: Path) -> None:
    write_file(tmp_path / "part-0.parquet", range(1, 4))     # 3 users
    write_file(tmp_path / "part-1.parquet", range(4, 9))     # 5 users
    write_file(tmp_path / "part-2.parquet", range(9, 11))    # 2 users
    blocks = list(read_blocks(tmp_path, block_users=4))
    assert [block.num_rows for block in blocks] == [4, 4, 2]
    users = [user for block in blocks for user in block.column("user_id").to_pylist()]
    assert sorted(users) == list(range(1, 11))
    first = blocks[0].to_pylist()[0]
    assert first["items"] == [first["user_id"], first["user_id"] + 1]


def test_one_large_file_is_split(tmp_path: Path) -> None:
    write_file(tmp_path / "part-0.parquet", range(1, 12))
    assert [block.num_rows for block in read_blocks(tmp_path, block_users=5)] == [5, 5, 1]


def test_only_the_asked_columns_are_read(tmp_path: Path) -> None:
    write_file(tmp_path / "part-0.parquet", range(1, 4))
    block = next(read_blocks(tmp_path, columns=("user_id", "scores")))
    assert block.schema.names == ["user_id", "scores"]


def test_output_scored_before_redis_values_existed_is_refused_by_name(tmp_path: Path) -> None:
    write_file(tmp_path / "part-0.parquet", range(1, 4))
    with pytest.raises(ValueError, match="has no column redis_value: score the date again"):
        next(read_blocks(tmp_path, columns=REDIS_COLUMNS))
