"""Every loader at and beyond each documented bound, against the embedded PostgreSQL.

The interaction loaders (`batchscore data load`: movielens, csv, parquet) and the
metadata loaders (`load-items`, `load-users`) take a value just inside a bound and
refuse one just outside it with a message naming the row and the bound, loading
nothing: the table keeps what it had. The interaction loaders apply the nightly's
input contract too, the clock included: a few defective events among many are
quarantined with their reason, more than max_reject_fraction refuse the file.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.inputs import load_file
from jobs.contracts.metadata import load_metadata_file
from jobs.data.load import InputError

LAST_SECOND = 253402300799          # 9999-12-31T23:59:59Z
# The time of loading the tests pass, and the clock skew the contract allows after it
# (clock_skew_seconds in schemas/contracts.json).
NOW = datetime(2026, 11, 21, tzinfo=UTC)
SKEW = 300
GOOD = {"user_id": 7, "item_id": 8, "rating": 4.0, "timestamp": 1_000_000}
LOADERS = ["movielens", "csv", "parquet"]


def interactions(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
            " FROM batchscore.interactions ORDER BY user_id, item_id, event_at"))]


def text_of(value: Any) -> str:
    return "" if value is None else str(value)


def write_interactions(tmp_path: Path, loader: str, rows: list[dict[str, Any]],
                       types: dict[str, pa.DataType] | None = None) -> Path:
    """``rows`` in the loader's layout; a Parquet file gets ``types`` (else inferred)."""
    columns = list(GOOD)
    if loader == "movielens":
        path = tmp_path / "u.data"
        path.write_text("".join("\t".join(text_of(row[c]) for c in columns) + "\n"
                                for row in rows))
    elif loader == "csv":
        path = tmp_path / "day.csv"
        path.write_text(",".join(columns) + "\n" + "".join(
            ",".join(text_of(row[c]) for c in columns) + "\n" for row in rows))
    else:
        path = tmp_path / "day.parquet"
        types = types or {}
        # A text column holds text in every row, the good ones too.
        pq.write_table(pa.table({c: pa.array(
            [text_of(row[c]) if types.get(c) == pa.string() else row[c] for row in rows],
            type=types.get(c)) for c in columns}), path)
    return path


def refused_and_nothing_loaded(engine, path: Path, loader: str, message: str,
                               error: type[Exception] = InputError) -> str:
    load_file(engine, path.parent, seed(path.parent), file_format="csv")
    before = interactions(engine)
    with pytest.raises(error) as caught:
        load_file(engine, path.parent, path, file_format=loader, replace=True, now=NOW)
    assert message in str(caught.value), str(caught.value)
    assert interactions(engine) == before
    return str(caught.value)


def seed(folder: Path) -> Path:
    path = folder / "seed.csv"
    path.write_text("user_id,item_id,rating,timestamp\n1,1,1.0,100\n")
    return path


# Values just inside each bound, and what the table then holds.
ACCEPTED = [
    ("user_id", 1, 1),
    ("user_id", 2**31 - 1, 2**31 - 1),
    ("item_id", 1, 1),
    ("item_id", 2**31 - 1, 2**31 - 1),
    ("rating", 0.5, 0.5),                           # rating_min
    ("rating", 5, 5.0),                             # rating_max
    ("timestamp", 0, 0),
    ("timestamp", int(NOW.timestamp()) + SKEW, int(NOW.timestamp()) + SKEW),
    ("timestamp", "1970-01-01T00:00:00", 0),
    ("timestamp", "2026-11-20T10:00:00+02:00",
     int(datetime(2026, 11, 20, 8, tzinfo=UTC).timestamp())),
    ("timestamp", "2026-11-20T10:00:00Z", int(datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp())),
]

# Values just outside each bound (or not values at all), and the reason given.
REFUSED = [
    ("user_id", 0, "user_id 0 is not a positive integer"),
    ("user_id", -1, "user_id -1 is not a positive integer"),
    ("user_id", 2**31, "user_id 2147483648 is not below 2^31 (at most 2147483647)"),
    ("item_id", 2**31, "item_id 2147483648 is not below 2^31"),
    ("item_id", 2**63, "item_id 9223372036854775808 is not below 2^31"),
    ("item_id", 2.5, "item_id '2.5' is not a whole number"),
    ("item_id", None, "item_id is missing"),
    ("rating", 0, "rating 0 is not positive"),
    ("rating", -1.0, "rating -1 is not positive"),
    ("rating", float("nan"), "rating 'nan' is not a finite number"),
    ("rating", float("inf"), "rating 'inf' is not a finite number"),
    ("timestamp", -1, "timestamp -1 is before 1970"),
    ("timestamp", LAST_SECOND + 1, "timestamp 253402300800 is after 9999"),
    ("timestamp", "1969-12-31T23:59:59", "timestamp '1969-12-31T23:59:59' is before 1970"),
    ("timestamp", "1970-01-01T01:59:59+02:00",
     "timestamp '1970-01-01T01:59:59+02:00' is before 1970"),
    ("timestamp", "yesterday", "timestamp 'yesterday' is neither Unix seconds nor an ISO 8601"),
]


def parquet_types(column: str, value: Any) -> dict[str, pa.DataType]:
    """The Parquet column type a producer would write ``value`` with."""
    if value is None:
        return {column: pa.int64()}
    if column == "timestamp" and isinstance(value, str):
        return {column: pa.string()}
    if column == "item_id" and value == 2**63:
        return {column: pa.uint64()}
    return {}


def label(loader: str) -> str:
    # Line 1 of a CSV file is its header; a Parquet file's rows count from 0.
    return {"movielens": "line 1", "csv": "line 2", "parquet": "row 0"}[loader]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("column", "value", "stored"), ACCEPTED,
                         ids=[f"{c}={v}" for c, v, _ in ACCEPTED])
def test_a_value_just_inside_a_bound_is_loaded(engine, tmp_path: Path, loader: str,
                                               column: str, value: Any, stored: Any) -> None:
    path = write_interactions(tmp_path, loader, [{**GOOD, column: value}],
                              parquet_types(column, value))
    assert load_file(engine, tmp_path, path, file_format=loader, now=NOW).loaded == 1
    expected = {**GOOD, column: stored}
    assert interactions(engine) == [(expected["user_id"], expected["item_id"],
                                     float(expected["rating"]), expected["timestamp"])]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("column", "value", "reason"), REFUSED,
                         ids=[f"{c}={v}" for c, v, _ in REFUSED])
def test_a_value_beyond_a_bound_is_refused_by_row(engine, tmp_path: Path, loader: str,
                                                  column: str, value: Any, reason: str) -> None:
    if loader == "parquet" and value == 2.5:
        reason = reason.replace("'2.5'", "2.5")    # a number in the file, not text
    if loader == "movielens":                       # no header: fields have no column names
        reason = reason.replace("user_id", "user id").replace("item_id", "item id")
    path = write_interactions(tmp_path, loader, [{**GOOD, column: value}, GOOD],
                              parquet_types(column, value))
    message = refused_and_nothing_loaded(engine, path, loader, reason)
    assert f"1 malformed {label(loader).split()[0]}(s), nothing loaded" in message
    assert f"{label(loader)}: {reason}" in message


# Values the input contract refuses, and the expectation that names them.
CONTRACT_REFUSED = [
    ("rating", 0.49, "rating within the configured range (rating_min..rating_max) "
                     "(expected 0.5 to 5)"),
    ("rating", 5.01, "rating within the configured range (rating_min..rating_max) "
                     "(expected 0.5 to 5)"),
    ("timestamp", int(NOW.timestamp()) + SKEW + 1,
     "no event stamped after the time of loading, beyond clock_skew_seconds (a future "
     f"timestamp) (expected at most {int(NOW.timestamp()) + SKEW})"),
    ("timestamp", LAST_SECOND, "(a future timestamp)"),
]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("column", "value", "reason"), CONTRACT_REFUSED,
                         ids=[f"{c}={v}" for c, v, _ in CONTRACT_REFUSED])
def test_an_event_the_input_contract_refuses_is_named_and_nothing_loaded(
        engine, tmp_path: Path, loader: str, column: str, value: Any, reason: str) -> None:
    path = write_interactions(tmp_path, loader, [{**GOOD, column: value}, GOOD])
    message = refused_and_nothing_loaded(engine, path, loader, reason, ContractError)
    assert (f"input contract failed for file:{path.name}: 1 of 2 rows are defective, more "
            "than the 1.0% that may be quarantined (max_reject_fraction)") in message
    assert f"e.g. {label(loader)}: " in message


@pytest.mark.parametrize("loader", LOADERS)
def test_a_few_defective_events_are_quarantined_and_the_rest_loaded(
        engine, tmp_path: Path, loader: str) -> None:
    future = int(NOW.timestamp()) + SKEW + 60
    rows = [{**GOOD, "user_id": user} for user in range(1, 201)]
    rows[150] = {**GOOD, "user_id": 151, "timestamp": future}  # one of 200: 0.5%
    path = write_interactions(tmp_path, loader, rows)
    outcome = load_file(engine, tmp_path, path, file_format=loader, now=NOW)
    assert (outcome.loaded, outcome.rejected) == (199, 1)
    assert len(interactions(engine)) == 199 and all(row[3] != future
                                                    for row in interactions(engine))
    number = {"movielens": 151, "csv": 152, "parquet": 150}[loader]
    with engine.connect() as conn:
        rejected = conn.execute(sa.text(
            "SELECT r.source, r.row_number, r.row, r.reasons, runs.kind, runs.status"
            " FROM batchscore.rejects r JOIN batchscore.runs USING (run_id)"
            " WHERE run_id = :id"), {"id": outcome.run_id}).one()
    assert rejected == (f"file:{path.name}", number,
                        {"user_id": 151, "item_id": 8, "rating": 4.0, "timestamp": future},
                        ["no event stamped after the time of loading, beyond "
                         "clock_skew_seconds (a future timestamp)"], "load", "succeeded")


@pytest.mark.parametrize(("moment", "stored"), [
    (datetime(1970, 1, 1), 0),
    (datetime(2026, 11, 20, 10, 0, 0, 900_000, tzinfo=timezone(timedelta(hours=2))),
     int(datetime(2026, 11, 20, 8, tzinfo=UTC).timestamp())),
])
def test_a_parquet_timestamp_type_is_loaded_as_utc(engine, tmp_path: Path, moment: datetime,
                                                   stored: int) -> None:
    tz = "+02:00" if moment.tzinfo else None
    path = write_interactions(tmp_path, "parquet", [{**GOOD, "timestamp": moment}],
                              {"timestamp": pa.timestamp("us", tz)})
    assert load_file(engine, tmp_path, path, now=NOW).loaded == 1  # format from the extension
    assert interactions(engine)[0][3] == stored


def test_a_parquet_timestamp_before_1970_is_refused(engine, tmp_path: Path) -> None:
    path = write_interactions(tmp_path, "parquet",
                              [GOOD, {**GOOD, "timestamp": datetime(1969, 12, 31, 23, 59, 59)}],
                              {"timestamp": pa.timestamp("s")})
    refused_and_nothing_loaded(engine, path, "parquet",
                               "row 1: timestamp 1969-12-31 23:59:59 is before 1970")


# -- load-items and load-users: the same id bounds, under their contracts.

def metadata_rows(engine, table: str) -> list[tuple]:
    id_column = {"items": "item_id", "users": "user_id"}[table]
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            f"SELECT {id_column}, attributes FROM batchscore.{table} ORDER BY 1"))]


def write_metadata(tmp_path: Path, file_format: str, id_column: str, ids: list[Any],
                   attributes: list[str] | None = None) -> Path:
    """A metadata file of ``ids``, with ``attributes`` (JSON text) when given."""
    columns: dict[str, list[Any]] = {id_column: ids}
    if attributes:
        columns["attributes"] = attributes
    if file_format == "csv":
        path = tmp_path / "meta.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([text_of(value) for value in row]
                             for row in zip(*columns.values(), strict=True))
        return path
    path = tmp_path / "meta.parquet"
    pq.write_table(pa.table({name: pa.array(values, type=pa.uint64() if name == id_column
                                            and any(v == 2**63 for v in values) else None)
                             for name, values in columns.items()}), path)
    return path


@pytest.fixture
def validator(tmp_path: Path) -> Validator:
    return Validator(tmp_path / "home")


METADATA = [(table, file_format) for table in ("items", "users")
            for file_format in ("csv", "parquet")]


@pytest.mark.parametrize(("table", "file_format"), METADATA)
def test_metadata_ids_at_the_bounds_are_loaded(engine, validator, tmp_path: Path, table: str,
                                               file_format: str) -> None:
    id_column = table[:-1] + "_id"
    path = write_metadata(tmp_path, file_format, id_column, [1, 2**31 - 1])
    load = load_metadata_file(validator, engine, table, path)
    assert (load.rows, load.inserted, load.updated) == (2, 2, 0)
    assert metadata_rows(engine, table) == [(1, {}), (2**31 - 1, {})]


METADATA_REFUSED = [
    (0, "is a positive integer below 2^31 (expected 1 to 2147483647) — 1 of 2 rows fail"),
    (-1, "is a positive integer below 2^31 (expected 1 to 2147483647) — 1 of 2 rows fail"),
    (2**31, "is a positive integer below 2^31 (expected 1 to 2147483647) — 1 of 2 rows fail"),
    (2.5, "is a whole number (digits, or a whole number in Parquet) — 1 of 2 rows fail"),
    (None, "is present — 1 of 2 rows fail"),
]


@pytest.mark.parametrize(("table", "file_format"), METADATA)
@pytest.mark.parametrize(("value", "reason"), METADATA_REFUSED,
                         ids=[str(value) for value, _ in METADATA_REFUSED])
def test_metadata_ids_beyond_the_bounds_are_refused(engine, validator, tmp_path: Path,
                                                    table: str, file_format: str, value: Any,
                                                    reason: str) -> None:
    id_column = table[:-1] + "_id"
    load_metadata_file(validator, engine, table,
                       write_metadata(tmp_path, "csv", id_column, [5]))
    path = write_metadata(tmp_path, file_format, id_column, [value, 6])
    with pytest.raises(ContractError) as caught:
        load_metadata_file(validator, engine, table, path, replace=True)
    message = str(caught.value)
    assert f"{table} contract failed for {path}, nothing loaded" in message
    assert f"({id_column}): {id_column} {reason}" in message
    row = "line 2" if file_format == "csv" else "row 0"
    shown = "None" if value is None else str(value)
    assert f"e.g. {row}: {id_column}={shown}" in message
    assert metadata_rows(engine, table) == [(5, {})]


ATTRIBUTES_REFUSED = [
    '{"score": NaN}',          # Python's json takes it; PostgreSQL's jsonb does not
    '{"score": Infinity}',
    '{"big": 1e999}',          # a float too large: infinity
    '{"nul": "a\\u0000b"}',   # jsonb cannot hold the NUL character
    '["a", "list"]',
    '{"unclosed": 1',
]


@pytest.mark.parametrize(("table", "file_format"), METADATA)
@pytest.mark.parametrize("attributes", ATTRIBUTES_REFUSED)
def test_attributes_that_are_not_a_json_object_are_refused(engine, validator, tmp_path: Path,
                                                           table: str, file_format: str,
                                                           attributes: str) -> None:
    id_column = table[:-1] + "_id"
    path = write_metadata(tmp_path, file_format, id_column, [1, 2],
                          ['{"plan": "free"}', attributes])
    with pytest.raises(ContractError) as caught:
        load_metadata_file(validator, engine, table, path)
    message = str(caught.value)
    assert "expect_column_values_to_be_in_type_list(attributes): attributes is a JSON object" \
        in message
    assert "— 1 of 2 rows fail" in message
    assert metadata_rows(engine, table) == []
