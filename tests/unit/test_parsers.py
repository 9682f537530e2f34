"""The line checks of `batchscore data load`, without a database."""

from pathlib import Path

import pytest

from jobs.data.load import CsvLayout, InputError, parse_csv, parse_movielens
from tests.conftest import write_lines


def read_all(rows) -> list[tuple[int, int, int, float, int]]:
    return list(rows)


def test_movielens_rows_are_parsed(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "u.data", ["196\t242\t3\t881250949", "186\t302\t3.5\t891717742"])
    assert read_all(parse_movielens(path)) == [  # each after its line number
        (1, 196, 242, 3.0, 881250949),
        (2, 186, 302, 3.5, 891717742),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("196 242 3 881250949", "line 2: expected 4 tab-separated fields, found 1"),
        ("abc\t242\t3\t881250949", "line 2: user id 'abc' is not a whole number"),
        ("196\t-4\t3\t881250949", "line 2: item id -4 is not a positive integer"),
        ("196\t242\t-1\t881250949", "line 2: rating -1 is not positive"),
        ("196\t242\t\t881250949", "line 2: rating is missing"),
        ("196\t242\tnan\t881250949", "line 2: rating 'nan' is not a finite number"),
        ("196\t242\t3\tyesterday", "line 2: timestamp 'yesterday' is neither Unix seconds"),
        ("0\t242\t3\t881250949", "line 2: user id 0 is not a positive integer"),
    ],
)
def test_a_malformed_line_is_named_with_its_number(tmp_path: Path, line: str, reason: str) -> None:
    path = write_lines(tmp_path / "u.data", ["1\t2\t3\t881250949", line])
    with pytest.raises(InputError, match=reason):
        read_all(parse_movielens(path))


def test_every_bad_line_is_counted_and_the_first_ones_listed(tmp_path: Path) -> None:
    lines = ["1\t2\t3\t881250949"] + ["x\t2\t3\t1"] * 25
    path = write_lines(tmp_path / "u.data", lines)
    with pytest.raises(InputError) as caught:
        read_all(parse_movielens(path))
    message = str(caught.value)
    assert "25 malformed line(s), nothing loaded" in message
    assert "line 2: user id 'x'" in message
    assert "line 21:" in message and "line 22:" not in message
    assert "... and 5 more" in message


def test_missing_file_and_wrong_encoding(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_all(parse_movielens(tmp_path / "absent.data"))
    latin = tmp_path / "latin.data"
    latin.write_bytes("1\t2\t3\t881250949\n\xe9\t2\t3\t1\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_all(parse_movielens(latin))


def test_csv_with_named_columns_and_iso_timestamps(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.csv", [
        "when,who,what,stars",
        "2026-11-20T10:00:00,7,70,4",
        "2026-11-20T10:00:00+01:00,8,80,2.5",
    ])
    layout = CsvLayout(user_col="who", item_col="what", rating_col="stars",
                       timestamp_col="when")
    assert read_all(parse_csv(path, layout)) == [
        (2, 7, 70, 4.0, 1795168800),  # line 2: 2026-11-20 10:00 UTC
        (3, 8, 80, 2.5, 1795165200),  # line 3: an hour earlier
    ]


def test_csv_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.csv", ["user,item,rating,ts", "1,2,3,4"])
    expected = (r"header lacks column\(s\) \['user_id', 'item_id', 'timestamp'\]; "
                r"found \['user', 'item', 'rating', 'ts'\]")
    with pytest.raises(InputError, match=expected):
        read_all(parse_csv(path, CsvLayout()))


def test_csv_bad_rows_name_line_and_column(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "events.csv", [
        "user_id,item_id,rating,timestamp", "1,2,3,4", "1,two,3,4", "1,2,3",
    ])
    with pytest.raises(InputError) as caught:
        read_all(parse_csv(path, CsvLayout()))
    assert "line 3: item_id 'two' is not a whole number" in str(caught.value)
    assert "line 4: expected 4 fields, found 3" in str(caught.value)


def test_empty_csv_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError, match="the file is empty"):
        read_all(parse_csv(path, CsvLayout()))


def test_the_scoring_job_reads_empty_canary_options_as_no_canary() -> None:
    from jobs.scoring.score import parse_args

    base = ["--interactions", "i.csv", "--run-date", "2026-11-20", "--model-path", "m",
            "--output", "o"]
    plain = parse_args([*base, "--canary-model-path", "", "--canary-fraction", ""])
    assert (plain.canary_model_path, plain.canary_fraction) == (None, None)
    canary = parse_args([*base, "--canary-model-path", "c", "--canary-fraction", "0.25"])
    assert (str(canary.canary_model_path), canary.canary_fraction) == ("c", 0.25)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reproduce", "3", "--rank", "8", "--seed", "1"],
         "train: error: --reproduce uses the version's recorded as-of date and parameters; "
         "drop --rank, --seed"),
        ([], "train: error: give --as-of DATE (or --reproduce VERSION)"),
    ],
)
def test_the_training_job_refuses_options_reproduce_would_ignore(extra, message,
                                                                  capsys) -> None:
    from jobs.training.train import parse_args

    with pytest.raises(SystemExit) as stopped:
        parse_args(["--database-url", "postgresql://nowhere/none", *extra])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
