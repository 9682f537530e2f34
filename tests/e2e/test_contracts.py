"""The data contracts on a nightly run's input file: a corpus of bad inputs.

Each bad file must fail the run with its own message, load nothing, publish
nothing and leave the served version exactly as it was. A file with a few
bad rows passes, with those rows quarantined.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.cli import main
from tests.e2e.conftest import cli_world

pytestmark = pytest.mark.spark

HISTORY_DATE = "2026-11-19"
RUN_DATE = "2026-11-20"
DAY = 86_400
RUN_DAY_START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
HEADER = ["user_id", "item_id", "rating", "timestamp"]


@pytest.fixture(scope="module")
def world(spark, settings, endpoints):
    """A trained model, one published nightly (the volume history) and the item table."""
    with cli_world(settings, endpoints) as (engine, client):
        assert main(["data", "generate", "--users", "1000", "--items", "200", "--days", "20",
                     "--seed", "11", "--end-date", HISTORY_DATE]) == 0
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO batchscore.items (item_id) SELECT generate_series(1, 200)"))
        assert main(["train", "--as-of", HISTORY_DATE]) == 0
        assert main(["nightly", "--run-date", HISTORY_DATE, "--k", "10"]) == 0
        with engine.connect() as conn:
            day_rows = conn.execute(sa.text(
                "SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
                " FROM batchscore.interactions WHERE event_at >= CAST(:d AS date)"
                " ORDER BY event_id"), {"d": HISTORY_DATE}).all()
        # The run date's good file: the history day's events, a day later.
        good = [[int(u), int(i), float(r), int(t) + DAY] for u, i, r, t in day_rows]
        yield engine, client, good


def write_csv(path: Path, rows: list[list], header: list[str] = HEADER) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def every_fifth(rows: list[list], change: Callable[[list], list]) -> list[list]:
    return [change(list(row)) if n % 5 == 0 else row for n, row in enumerate(rows)]


def with_value(column: int, value: object) -> Callable[[list], list]:
    def change(row: list) -> list:
        row[column] = value
        return row
    return change


def snapshot(engine, client) -> tuple:
    """Everything a reader or a later run could see: it must not move on a failed run."""
    with engine.connect() as conn:
        served = conn.execute(sa.text(
            "SELECT user_id, rank, item_id, score, run_id FROM bi.recommendations"
            " ORDER BY user_id, rank")).all()
        versions = conn.execute(sa.text(
            "SELECT publish_id, status FROM batchscore.prediction_versions ORDER BY 1")).all()
        interactions = conn.execute(sa.text(
            "SELECT count(*), sum(hashtext(user_id || ':' || item_id || ':' || rating || ':'"
            " || event_at)) FROM batchscore.interactions")).one()
        rejects = conn.execute(sa.text("SELECT count(*) FROM batchscore.rejects")).scalar()
    # The versions key is a set; every other key holds a string.
    keys = {key: client.smembers(key) if key.endswith(b":versions") else client.get(key)
            for key in client.scan_iter(match=b"batchscore:*")}
    return served, versions, tuple(interactions), rejects, keys


def make(kind: str, tmp_path: Path, good: list[list]) -> Path:
    path = tmp_path / f"{kind}.csv"
    if kind == "wrong_column_names":
        return write_csv(path, good, ["user", "item", "rating", "timestamp"])
    if kind == "extra_column":
        return write_csv(path, [[*row, "x"] for row in good], [*HEADER, "device"])
    if kind == "wrong_types":
        return write_csv(path, [[f"u{row[0]}", *row[1:]] for row in good])
    if kind == "fractional_ids":
        return write_csv(path, every_fifth(good, with_value(1, 2.5)))
    if kind == "null_ids":
        return write_csv(path, every_fifth(good, with_value(0, "")))
    if kind == "negative_ids":
        return write_csv(path, every_fifth(good, lambda row: [row[0], -row[1], *row[2:]]))
    if kind == "ids_too_large":
        return write_csv(path, every_fifth(good, with_value(0, 2**40)))
    if kind == "nan_ratings":
        return write_csv(path, every_fifth(good, with_value(2, "nan")))
    if kind == "out_of_range_ratings":
        return write_csv(path, every_fifth(good, with_value(2, 9.0)))
    if kind == "future_timestamps":
        return write_csv(path, every_fifth(good, lambda row: [*row[:3], row[3] + 2 * DAY]))
    if kind == "absurdly_old_timestamps":
        return write_csv(path, every_fifth(good, with_value(3, 100)))
    if kind == "duplicate_flood":
        return write_csv(path, good + good[: len(good) // 2])
    if kind == "empty_data":
        return write_csv(path, [])
    if kind == "volume_drop":
        return write_csv(path, good[: int(len(good) * 0.3)])
    if kind == "volume_jump":
        return write_csv(path, [[*row[:3], RUN_DAY_START + (n % DAY)]
                                for n, row in enumerate(good * 11)])
    if kind == "stale_data":
        return write_csv(path, [[*row[:3], row[3] - 3 * DAY] for row in good])
    if kind == "unknown_items":
        return write_csv(path, every_fifth(good, lambda row: [row[0], 5000 + row[1], *row[2:]]))
    if kind == "mixed_encodings":
        write_csv(path, good)
        path.write_bytes(path.read_bytes() + "7,3,4.0,1795132800,caf\xe9\n".encode("latin-1"))
        return path
    if kind == "truncated_file":
        write_csv(path, good)
        path.write_bytes(path.read_bytes()[:-7])
        return path
    if kind == "ragged_rows":
        write_csv(path, good)
        with path.open("a") as handle:
            handle.write("1,2,3.0,1795132800,5,6\n")
        return path
    raise AssertionError(kind)


CORPUS = [
    ("wrong_column_names", "expect_table_columns_to_match_set: exactly the columns"),
    ("extra_column", "expect_table_columns_to_match_set: exactly the columns"),
    ("wrong_types",
     "expect_column_values_to_be_in_type_list(user_id): user_id holds whole numbers"),
    ("fractional_ids",
     "expect_column_values_to_be_in_type_list(item_id): item_id holds whole numbers"),
    ("null_ids", "expect_column_values_to_not_be_null(user_id): user_id is present"),
    ("negative_ids", "expect_column_values_to_be_between(item_id): item_id is a positive"),
    ("ids_too_large", "expect_column_values_to_be_between(user_id): user_id is a positive"),
    ("nan_ratings", "expect_column_values_to_not_be_null(rating): rating is present and not NaN"),
    ("out_of_range_ratings",
     "expect_column_values_to_be_between(rating): rating within the configured range"),
    ("future_timestamps", "no event after the end of the run date"),
    ("absurdly_old_timestamps", "a late event at most max_event_age_days before the run date"),
    ("duplicate_flood", "that duplicate_tolerance allows"),
    ("volume_drop", "the day's row count is within volume_min_ratio..volume_max_ratio of the "
                    "volume baseline (expected"),
    ("volume_jump", "the day's row count is within volume_min_ratio..volume_max_ratio of the "
                    "volume baseline (expected"),
    ("stale_data", "the newest event falls on the run date"),
    ("unknown_items", "expect_column_values_to_be_in_set(item_id): item_id is in batchscore.items"),
    ("mixed_encodings", "not UTF-8 text"),
    ("truncated_file", "truncated: line"),
    ("ragged_rows", "not a well-formed csv file"),
]


@pytest.mark.parametrize(("kind", "message"), CORPUS, ids=[kind for kind, _ in CORPUS])
def test_bad_input_fails_by_name_and_changes_nothing(world, tmp_path: Path, capsys,
                                                     kind: str, message: str) -> None:
    engine, client, good = world
    path = make(kind, tmp_path, good)
    before = snapshot(engine, client)
    capsys.readouterr()
    assert main(["nightly", "--run-date", RUN_DATE, "--k", "10", "--input", str(path)]) == 1
    error = capsys.readouterr().err
    assert message in error, error
    assert snapshot(engine, client) == before


def test_row_level_failures_name_rows_and_counts(world, tmp_path: Path, capsys) -> None:
    good = world[2]
    path = make("out_of_range_ratings", tmp_path, good)
    capsys.readouterr()
    assert main(["nightly", "--run-date", RUN_DATE, "--k", "10", "--input", str(path)]) == 1
    error = capsys.readouterr().err
    bad = len(range(0, len(good), 5))
    assert f"{bad} of {len(good)} rows are defective, more than the 1.0% that may be quarantined" \
        in error
    assert f"— {bad} of {len(good)} rows fail" in error
    # The first bad row is line 2 (line 1 is the header): named with its values.
    first = good[0]
    assert f"line 2: user_id={first[0]}, item_id={first[1]}, rating=9, timestamp={first[3]}" \
        in error


def test_a_few_bad_rows_are_quarantined_and_the_run_goes_on(world, tmp_path: Path) -> None:
    engine, _, good = world
    rows = [list(row) for row in good]
    rows[3][2] = 9.0          # line 5: rating out of range
    rows[10][0] = ""          # line 12: no user id
    rows.append(list(rows[20]))  # the last line: an exact duplicate of line 22
    path = write_csv(tmp_path / "day.csv", rows)
    assert main(["nightly", "--run-date", RUN_DATE, "--k", "10", "--input", str(path)]) == 0
    with engine.connect() as conn:
        run_id, stats = conn.execute(sa.text(
            "SELECT run_id, stats FROM batchscore.runs WHERE status = 'succeeded'"
            " AND logical_date = :d"), {"d": RUN_DATE}).one()
        rejects = conn.execute(sa.text(
            "SELECT row_number, reasons, row FROM bi.rejects WHERE run_id = :r"
            " ORDER BY row_number"), {"r": run_id}).all()
        loaded = conn.execute(sa.text(
            "SELECT count(*) FROM batchscore.interactions WHERE event_at >= CAST(:d AS date)"
            " AND event_at < CAST(:d AS date) + 1"), {"d": RUN_DATE}).scalar()
        served_date = conn.execute(sa.text(
            "SELECT DISTINCT logical_date FROM bi.recommendations")).scalar()
    last_line = len(rows) + 1
    assert [(r.row_number, r.reasons) for r in rejects] == [
        (5, ["rating within the configured range (rating_min..rating_max)"]),
        (12, ["user_id is present"]),
        (last_line, ["exact duplicate of an earlier event"]),
    ]
    assert rejects[0].row["rating"] == 9.0
    assert loaded == len(good) - 2
    assert stats["input_rejected"] == 3 and stats["input_rows"] == len(good) - 2
    assert set(stats["data_docs"]) == {"input", "predictions", "predictions_summary"}
    assert str(served_date) == RUN_DATE

    # Re-running the date with the same file loads nothing twice.
    assert main(["nightly", "--run-date", RUN_DATE, "--k", "10", "--input", str(path)]) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*) FROM batchscore.interactions WHERE event_at >= CAST(:d AS date)"
            " AND event_at < CAST(:d AS date) + 1"), {"d": RUN_DATE}).scalar() == loaded


def test_validate_command_runs_the_same_gates_by_hand(world, tmp_path: Path, capsys) -> None:
    engine, client, good = world
    before = snapshot(engine, client)
    capsys.readouterr()
    assert main(["validate", "--predictions"]) == 0
    assert "prediction contract passed for the served version" in capsys.readouterr().out
    path = make("future_timestamps", tmp_path, good)
    assert main(["validate", "--input", str(path), "--run-date", RUN_DATE]) == 1
    assert "no event after the end of the run date" in capsys.readouterr().err
    assert snapshot(engine, client) == before


def runs_of(engine, day: str) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT status, error FROM batchscore.runs WHERE logical_date = :d"
            " ORDER BY started_at"), {"d": day})]


def test_a_day_without_events_has_nothing_new_to_score(world, tmp_path: Path, capsys) -> None:
    engine, client, good = world
    path = make("empty_data", tmp_path, good)
    day = "2026-11-25"
    before = snapshot(engine, client)
    capsys.readouterr()
    assert main(["nightly", "--run-date", day, "--k", "10", "--input", str(path)]) == 0
    message = ("nothing new to score for 2026-11-25: file:empty_data.csv holds no events; "
               "nothing was published, the served version stays")
    assert capsys.readouterr().out.strip() == message + (
        "\nan empty-day alert was raised; the run is recorded as skipped "
        "(BATCHSCORE_EMPTY_DAY=fail fails it instead)")
    assert snapshot(engine, client) == before
    assert runs_of(engine, day) == [("skipped", message)]
    assert main(["validate", "--input", str(path), "--run-date", day]) == 0
    assert capsys.readouterr().out.strip() == message


def test_a_run_date_after_today_is_refused_unless_allowed(world, tmp_path: Path, capsys
                                                          ) -> None:
    engine, client, good = world
    today = datetime.now(UTC).date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    before = snapshot(engine, client)
    capsys.readouterr()
    assert main(["nightly", "--run-date", tomorrow, "--k", "10"]) == 1
    assert (
        f"error: run date {tomorrow} is after today ({today}, UTC): a future date would take "
        "over serving from every normal run after it; nothing was run. Name the date with "
        "--run-date (the default is the newest event's), or pass --allow-future-date (the DAG "
        "param allow_future_date) to run it anyway\n") in capsys.readouterr().err
    assert runs_of(engine, tomorrow) == []
    # Allowed, the date gets past the clock to the contract (here: a day with no events).
    path = make("empty_data", tmp_path, good)
    assert main(["nightly", "--run-date", tomorrow, "--k", "10", "--input", str(path),
                 "--allow-future-date"]) == 0
    assert f"nothing new to score for {tomorrow}" in capsys.readouterr().out
    assert snapshot(engine, client) == before


def test_a_file_resending_loaded_events_is_refused_by_name(world, tmp_path: Path, capsys
                                                           ) -> None:
    engine, client, good = world
    # The history day's events, already in the table, sent again a day later (late
    # arrivals by their stamps), with one new event of the day.
    history = [[u, i, r, t - DAY] for u, i, r, t in good]
    path = write_csv(tmp_path / "resent.csv", [*history, [1, 1, 4.0, RUN_DAY_START + 5]])
    before = snapshot(engine, client)
    capsys.readouterr()
    assert main(["nightly", "--run-date", RUN_DATE, "--k", "10", "--input", str(path)]) == 1
    error = capsys.readouterr().err
    assert (f"input contract failed for {RUN_DATE} (file:resent.csv): {len(history)} of "
            f"{len(history) + 1} rows are exact duplicates ({len(history)} of them of events "
            "already loaded), more than the 5.0% that duplicate_tolerance allows; e.g. "
            "line 2 = event ") in error
    assert "Was the file, or part of it, sent before?" in error
    assert snapshot(engine, client) == before


def test_the_first_night_compares_volume_with_the_training_snapshot(world, tmp_path: Path,
                                                                    capsys) -> None:
    engine, _, good = world
    # No run before the history date: its baseline is the model's training snapshot, whose
    # median day is worked out here from the table the model was trained on.
    with engine.connect() as conn:
        daily = conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT user_id) FROM batchscore.interactions"
            " WHERE event_at < CAST(:d AS date) + 1"
            " GROUP BY (event_at AT TIME ZONE 'UTC')::date"), {"d": HISTORY_DATE}).all()
    rows = statistics.median(day[0] for day in daily)
    users = statistics.median(day[1] for day in daily)
    history = [[u, i, r, t - DAY] for u, i, r, t in good]
    path = write_csv(tmp_path / "drop.csv", history[: int(len(history) * 0.3)])
    capsys.readouterr()
    assert main(["validate", "--input", str(path), "--run-date", HISTORY_DATE]) == 1
    error = capsys.readouterr().err
    assert (f"volume baseline: {rows:.10g} rows and {users:.10g} users a day, the median day of "
            f"model version 1's training snapshot ({len(daily)} days)") in error
    # The bounds are the whole counts inside 0.4x and 10x the baseline.
    assert (f"(expected {math.ceil(rows * 0.4)} to {math.floor(rows * 10)}) — observed "
            f"{int(len(history) * 0.3)}") in error, error
