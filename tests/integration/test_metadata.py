"""`load-items` and `load-users` against the embedded PostgreSQL: the file is checked
whole by its contract, then upserted in one transaction."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.metadata import load_metadata_file
from jobs.data.load import InputError
from tests.conftest import write_lines


@pytest.fixture
def validator(tmp_path: Path) -> Validator:
    return Validator(tmp_path / "home")


def items(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT item_id, title, attributes FROM batchscore.items ORDER BY item_id"))]


def users(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT user_id, attributes FROM batchscore.users ORDER BY user_id"))]


def test_extra_columns_become_attributes_and_blanks_are_left_out(engine, validator,
                                                                 tmp_path: Path) -> None:
    path = write_lines(tmp_path / "items.csv", [
        "item_id,title,genre,year",
        '1,"Heat, the film",crime,1995',
        "2,,drama,",
    ])
    load = load_metadata_file(validator, engine, "items", path)
    assert (load.table, load.rows, load.inserted, load.updated) == ("items", 2, 2, 0)
    assert items(engine) == [(1, "Heat, the film", {"genre": "crime", "year": "1995"}),
                             (2, None, {"genre": "drama"})]


def test_a_json_attributes_column(engine, validator, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "users.csv", [
        "user_id,attributes",
        '1,"{""country"": ""DE"", ""plan"": ""free"", ""age"": 34}"',
        "2,",
    ])
    load_metadata_file(validator, engine, "users", path)
    assert users(engine) == [(1, {"country": "DE", "plan": "free", "age": 34}), (2, {})]


def test_parquet_struct_attributes_and_typed_extra_columns(engine, validator,
                                                           tmp_path: Path) -> None:
    structs = tmp_path / "items.parquet"
    pq.write_table(pa.table({
        "item_id": pa.array([10, 11], pa.int32()),
        "title": ["Alien", "Brazil"],
        "attributes": pa.array([{"genre": "sci-fi", "year": 1979}, None],
                               pa.struct([("genre", pa.string()), ("year", pa.int64())])),
    }), structs)
    load_metadata_file(validator, engine, "items", structs)
    assert items(engine) == [(10, "Alien", {"genre": "sci-fi", "year": 1979}),
                             (11, "Brazil", {})]
    typed = tmp_path / "users.data"   # not an extension that says the format
    pq.write_table(pa.table({"user_id": pa.array([1.0, 2.0]), "premium": [True, False],
                             "score": [0.5, float("nan")], "country": ["DE", None]}), typed)
    load_metadata_file(validator, engine, "users", typed, file_format="parquet")
    assert users(engine) == [(1, {"premium": True, "score": 0.5, "country": "DE"}),
                             (2, {"premium": False})]


def test_an_id_given_again_is_updated_and_absent_columns_are_kept(engine, validator,
                                                                  tmp_path: Path) -> None:
    load_metadata_file(validator, engine, "items", write_lines(tmp_path / "a.csv", [
        "item_id,title,genre", "1,Heat,crime", "2,Ran,drama"]))
    load = load_metadata_file(validator, engine, "items", write_lines(tmp_path / "b.csv", [
        "item_id,genre", "2,war", "3,comedy"]))
    assert (load.rows, load.inserted, load.updated, load.replaced) == (2, 1, 1, False)
    # No title column: item 2 keeps its title; item 3 has none.
    assert items(engine) == [(1, "Heat", {"genre": "crime"}), (2, "Ran", {"genre": "war"}),
                             (3, None, {"genre": "comedy"})]
    load_metadata_file(validator, engine, "items", write_lines(tmp_path / "c.csv", [
        "item_id,title", "1,Heat (1995)"]))
    assert items(engine)[0] == (1, "Heat (1995)", {"genre": "crime"})


def test_replace_empties_the_table_in_the_same_load(engine, validator, tmp_path: Path) -> None:
    load_metadata_file(validator, engine, "users", write_lines(tmp_path / "a.csv", [
        "user_id,plan", "1,free", "2,paid"]))
    load = load_metadata_file(validator, engine, "users", write_lines(tmp_path / "b.csv", [
        "user_id,plan", "2,free"]), replace=True)
    assert (load.inserted, load.updated, load.replaced) == (1, 0, True)
    assert users(engine) == [(2, {"plan": "free"})]


def test_a_failing_file_names_expectations_and_lines_and_loads_nothing(engine, validator,
                                                                        tmp_path: Path) -> None:
    load_metadata_file(validator, engine, "items", write_lines(tmp_path / "a.csv", [
        "item_id,title", "1,Heat"]))
    path = write_lines(tmp_path / "bad.csv", [
        "item_id,title,genre", "1,Heat,crime", "5,Ran,drama", "5,Ran again,war", ",Nothing,x",
        "7,Brazil,comedy"])
    with pytest.raises(ContractError) as caught:
        load_metadata_file(validator, engine, "items", path, replace=True)
    message = str(caught.value)
    assert message.startswith(f"items contract failed for {path}, nothing loaded: "
                              "2 expectation(s) failed\n")
    assert ("  - expect_column_values_to_not_be_null(item_id): item_id is present — 1 of 5 rows"
            " fail; e.g. line 5: item_id=None, title=Nothing, attributes={'genre': 'x'}") \
        in message
    assert ("  - expect_column_values_to_be_unique(item_id): each item_id appears once in the "
            "file — 2 of 5 rows fail; e.g. line 3: item_id=5, title=Ran, "
            "attributes={'genre': 'drama'}; line 4: item_id=5") in message
    assert ("Fix the rows named above and load the file again (columns: item_id, optional "
            "title, then attributes as one JSON-object column attributes or as extra columns;"
            " this file has attributes from the columns genre)") in message
    assert items(engine) == [(1, "Heat", {})]


@pytest.mark.parametrize(("lines", "message"), [
    (["id,title", "1,Heat"], "expect_column_to_exist(item_id): the file has an item_id column"),
    (["item_id,title"], "expect_table_row_count_to_be_between: at least one item"),
])
def test_a_file_without_ids_or_rows_is_refused(engine, validator, tmp_path: Path,
                                               lines: list[str], message: str) -> None:
    with pytest.raises(ContractError) as caught:
        load_metadata_file(validator, engine, "items", write_lines(tmp_path / "i.csv", lines))
    assert message in str(caught.value)
    assert "1 expectation(s) failed" in str(caught.value)
    assert items(engine) == []


def test_titles_must_be_text_and_map_keys_must_be_text(engine, validator,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": [1, 2], "title": ["Heat", None]}), path)
    load_metadata_file(validator, engine, "items", path)
    numbered = tmp_path / "numbered.parquet"
    pq.write_table(pa.table({"item_id": [3], "title": [1995]}), numbered)
    with pytest.raises(ContractError, match=r"\(title\): title is text — 1 of 1 rows fail; "
                                            r"e\.g\. row 0: item_id=3, title=1995"):
        load_metadata_file(validator, engine, "items", numbered)
    nul = tmp_path / "nul.parquet"
    pq.write_table(pa.table({"item_id": [4], "title": ["Heat\x00"]}), nul)
    with pytest.raises(ContractError, match=r"\(title\): title has no NUL character"):
        load_metadata_file(validator, engine, "items", nul)
    keyed = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user_id": [1], "attributes": pa.array(
        [[(1, "a")]], pa.map_(pa.int64(), pa.string()))}), keyed)
    with pytest.raises(ContractError, match=r"attributes is a JSON object: text keys"):
        load_metadata_file(validator, engine, "users", keyed)
    assert items(engine) == [(1, "Heat", {}), (2, None, {})] and users(engine) == []


def test_unreadable_files_are_input_errors(engine, validator, tmp_path: Path) -> None:
    both = write_lines(tmp_path / "both.csv", ['user_id,attributes,plan', '1,"{}",free'])
    with pytest.raises(InputError, match="has an attributes column and other columns"
                                         r" \['plan'\]; give attributes either as one JSON"):
        load_metadata_file(validator, engine, "users", both)
    with pytest.raises(InputError, match="cannot tell the format from the extension"):
        load_metadata_file(validator, engine, "users", write_lines(tmp_path / "u.txt", ["x"]))
    with pytest.raises(InputError, match="file not found"):
        load_metadata_file(validator, engine, "users", tmp_path / "absent.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("user_id,city\n1,K\xf6ln\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        load_metadata_file(validator, engine, "users", latin)
    assert users(engine) == []
