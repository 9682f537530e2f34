"""A day's file in Parquet under the input contract: the same checks as CSV, rows named
by their index in the file."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.inputs import check_input, quarantine_and_load, read_input_file
from jobs.data.load import InputError
from jobs.platform import runs

RUN_DATE = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)
ROWS = 200


def day_columns() -> dict[str, pa.Array]:
    """200 good events on the run date: 100 users, 2 items each; narrow types, as exports
    write them, and a timestamp type."""
    return {
        "user_id": pa.array([1 + n // 2 for n in range(ROWS)], pa.int64()),
        "item_id": pa.array([7 + n % 2 for n in range(ROWS)], pa.int32()),
        "rating": pa.array([3.0] * ROWS, pa.float32()),
        "timestamp": pa.array([NOON.replace(second=n % 60, minute=n // 60) for n in range(ROWS)],
                              pa.timestamp("ms", "UTC")),
    }


def write(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_a_good_parquet_day_is_checked_and_loaded(engine, tmp_path: Path) -> None:
    columns = day_columns()
    columns["user_id"] = pa.array([None if n == 3 else 1 + n // 2 for n in range(ROWS)],
                                  pa.int64())
    batch = read_input_file(write(tmp_path / "day.parquet", columns))   # from the extension
    assert batch.row_label == "row" and batch.source == "file:day.parquet"
    assert batch.frame.loc[0, "timestamp"] == int(NOON.timestamp())
    outcome = check_input(Validator(tmp_path), engine, RUN_DATE, batch)
    assert outcome.rejected == {3: ["user_id is present"]}
    run_id = runs.start(engine, "nightly", RUN_DATE, None)
    assert quarantine_and_load(engine, run_id, RUN_DATE, batch, outcome) == {
        "loaded": ROWS - 1, "rejected": 1}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT row_number, reasons FROM batchscore.rejects")
                            ).one() == (3, ["user_id is present"])
        assert conn.execute(sa.text(
            "SELECT min(extract(epoch FROM event_at))::bigint, count(*)"
            " FROM batchscore.interactions")).one() == (int(NOON.timestamp()), ROWS - 1)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: {**{("user" if k == "user_id" else k): v for k, v in c.items()}},
     "expect_table_columns_to_match_set: exactly the columns user_id, item_id, rating, timestamp"),
    (lambda c: {**c, "user_id": pa.array([f"u{n}" for n in range(ROWS)])},
     "expect_column_values_to_be_in_type_list(user_id): user_id holds whole numbers"),
    (lambda c: {**c, "item_id": pa.array([2.5] * ROWS)},
     "expect_column_values_to_be_in_type_list(item_id): item_id holds whole numbers"),
    (lambda c: {**c, "rating": pa.array([9.0 if n % 5 == 0 else 3.0 for n in range(ROWS)])},
     "rating within the configured range (rating_min..rating_max) (expected 0.5 to 5) — "
     "40 of 200 rows fail; e.g. "
     "row 0: user_id=1, item_id=7, rating=9, timestamp=1795176000; row 5: "),
    (lambda c: {**c, "item_id": pa.array([2**31 if n % 5 == 0 else 7 for n in range(ROWS)],
                                         pa.int64())},
     "item_id is a positive integer below 2^31 (expected 1 to 2147483647) — 40 of 200 rows fail;"
     " e.g. row 0: user_id=1, item_id=2147483648"),
    (lambda c: {**c, "item_id": pa.array([2**64 - 1 if n % 5 == 0 else 7 for n in range(ROWS)],
                                         pa.uint64())},
     "item_id is a positive integer below 2^31 (expected 1 to 2147483647) — 40 of 200 rows fail;"
     " e.g. row 0: user_id=1, item_id=18446744073709551616"),
], ids=["wrong_names", "text_ids", "fractional_ids", "ratings_out_of_range", "ids_too_large",
        "ids_beyond_int64"])
def test_a_defective_parquet_day_fails_by_name_and_row(engine, tmp_path: Path, change,
                                                       message: str) -> None:
    path = write(tmp_path / "export.bin", change(day_columns()))
    batch = read_input_file(path, "parquet")
    with pytest.raises(ContractError) as caught:
        check_input(Validator(tmp_path), engine, RUN_DATE, batch)
    assert message in str(caught.value), str(caught.value)


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    path = tmp_path / "day.parquet"
    path.write_text("user_id,item_id,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(InputError, match=r"day\.parquet: not a readable Parquet file"):
        read_input_file(path)
    with pytest.raises(InputError, match="unknown format 'orc'; use csv, movielens, parquet"):
        read_input_file(path, "orc")
