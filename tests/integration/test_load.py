"""`batchscore data load` against the embedded PostgreSQL: all or nothing."""

import io
import logging
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.contracts.inputs import load_file
from jobs.data.load import CsvLayout, InputError
from tests.conftest import write_lines

GOOD = ["1\t10\t4\t881250949", "1\t11\t3\t881250950", "2\t10\t5\t881250951"]


def table(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
            " FROM batchscore.interactions ORDER BY user_id, item_id"
        ))]


def test_movielens_file_is_loaded(engine, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "u.data", GOOD)
    assert load_file(engine, tmp_path, path, file_format="movielens").loaded == 3
    assert table(engine) == [(1, 10, 4.0, 881250949), (1, 11, 3.0, 881250950),
                             (2, 10, 5.0, 881250951)]


def test_replace_swaps_the_contents(engine, tmp_path: Path) -> None:
    load_file(engine, tmp_path, write_lines(tmp_path / "a.data", GOOD), file_format="movielens")
    load_file(engine, tmp_path, write_lines(tmp_path / "b.data", ["9\t90\t1\t100"]),
              file_format="movielens", replace=True)
    assert table(engine) == [(9, 90, 1.0, 100)]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "no interactions found, nothing loaded"),
        ([*GOOD, "3\tabc\t4\t881250949"], "line 4: item id 'abc' is not a whole number"),
        ([*GOOD, "3\t12\t-2\t881250949"], "line 4: rating -2 is not positive"),
        (["3\t12\t4"], "line 1: expected 4 tab-separated fields, found 3"),
    ],
)
def test_bad_input_loads_nothing(engine, tmp_path: Path, lines: list[str], message: str) -> None:
    load_file(engine, tmp_path, write_lines(tmp_path / "first.data", GOOD), file_format="movielens")
    before = table(engine)
    path = write_lines(tmp_path / "bad.data", lines)
    with pytest.raises(InputError, match=message):
        load_file(engine, tmp_path, path, file_format="movielens", replace=True)
    assert table(engine) == before


def test_csv_with_other_column_names(engine, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "export.csv", ["uid;iid;score;ts", "5;50;2;1000"])
    layout = CsvLayout(user_col="uid", item_col="iid", rating_col="score", timestamp_col="ts",
                       delimiter=";")
    assert load_file(engine, tmp_path, path, file_format="csv", layout=layout).loaded == 1
    assert table(engine) == [(5, 50, 2.0, 1000)]


def test_parquet_with_other_column_names(engine, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({"uid": pa.array([5, 6], pa.int16()), "iid": [50, 60],
                             "score": pa.array([2.0, 0.5], pa.float32()),
                             "ts": pa.array([1000, 2000], pa.int64()), "device": ["a", "b"]}),
                   path)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['user_id', 'item_id', 'rating',"
                                         r" 'timestamp'\]; found \['uid', 'iid', 'score', 'ts',"
                                         r" 'device'\]\. Name the columns with --user-col"):
        load_file(engine, tmp_path, path)
    layout = CsvLayout(user_col="uid", item_col="iid", rating_col="score", timestamp_col="ts")
    assert load_file(engine, tmp_path, path, layout=layout).loaded == 2
    assert table(engine) == [(5, 50, 2.0, 1000), (6, 60, 0.5, 2000)]


def test_unknown_format_is_named(engine, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown format 'xml'; use movielens, csv, parquet"):
        load_file(engine, tmp_path, write_lines(tmp_path / "x", GOOD), file_format="xml")
    with pytest.raises(InputError, match="cannot tell the format from the extension; name it"
                                         " with --format"):
        load_file(engine, tmp_path, write_lines(tmp_path / "x.txt", GOOD))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_load_logs_a_line_per_pass(engine, tmp_path: Path,
                                                        caplog) -> None:
    path = write_lines(tmp_path / "u.data", GOOD)   # 3 lines of 17 bytes
    with caplog.at_level(logging.INFO, logger="jobs.platform.progress"):
        assert load_file(engine, tmp_path, path, file_format="movielens").loaded == 3
    assert [record.getMessage() for record in caplog.records
            if record.name == "jobs.platform.progress"] == [
        "checking u.data: 51B / 51B read", "loading interactions: 3 / 3 rows sent"]


def test_at_a_terminal_a_load_draws_a_bar_per_pass(engine, tmp_path: Path,
                                                   monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert load_file(engine, tmp_path, write_lines(tmp_path / "u.data", GOOD),
                     file_format="movielens").loaded == 3
    shown = terminal.getvalue()
    assert "checking u.data: 100%|##########| 51.0/51.0 [" in shown
    assert "loading interactions: 100%|##########| 3/3 [" in shown
