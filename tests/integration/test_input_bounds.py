"""The input contract at and beyond each of its documented bounds.

Every bound of README's "Data contracts" (the defaults of the ``input`` section
of schemas/contracts.json, written here by hand) gets a value just inside,
which passes, and one just outside, which is quarantined or refused with a
message that names the expectation, the rows and the setting.
"""

from __future__ import annotations

import csv
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.contracts.engine import ContractError, Validator, load_contracts_config
from jobs.contracts.inputs import (
    NothingToScoreError,
    VolumeBaseline,
    check_input,
    quarantine_and_load,
    read_input_file,
    snapshot_baseline,
    table_batch,
)
from jobs.data.store import epoch_to_sql
from jobs.lifecycle.registry import NewModel, register
from jobs.platform import runs

RUN_DATE = date(2026, 11, 20)
DAY = 86_400
START = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
END = START + DAY
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # loading at noon of the run date
NOON = int(NOW.timestamp())
MAX_ID = 2**31 - 1

AGE = "a late event at most max_event_age_days before the run date"
FUTURE = ("no event stamped after the time of loading, beyond clock_skew_seconds (a future "
          "timestamp)")
SKEW = 300  # clock_skew_seconds
AFTER_DAY = "no event after the end of the run date"
RATING = "rating within the configured range (rating_min..rating_max)"
USER = "user_id is a positive integer below 2^31"
ITEM = "item_id is a positive integer below 2^31"


def good_rows(n: int, users: int = 100, first_item: int = 1, at: int = START + 3600
              ) -> list[list]:
    """``n`` distinct events of ``users`` users on the run date, before the time of loading."""
    return [[1 + i % users, first_item + i, 3.0, at + i] for i in range(n)]


def write(tmp_path: Path, rows: list[list], name: str = "day.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "item_id", "rating", "timestamp"])
        writer.writerows(rows)
    return path


def check(engine, tmp_path: Path, rows: list[list], run_date: date = RUN_DATE,
          now: datetime | None = NOW, name: str = "day.csv", **kwargs):
    batch = read_input_file(write(tmp_path, rows, name))
    return batch, check_input(Validator(tmp_path), engine, run_date, batch, now=now, **kwargs)


def refusal(engine, tmp_path: Path, rows: list[list], **kwargs) -> str:
    with pytest.raises(ContractError) as raised:
        check(engine, tmp_path, rows, **kwargs)
    return str(raised.value)


def line_of(rows: list[list], row: list) -> int:
    return rows.index(row) + 2  # line 1 is the header


def test_the_documented_defaults() -> None:
    assert load_contracts_config()["input"] == {
        "max_reject_fraction": 0.01, "duplicate_tolerance": 0.05, "rating_min": 0.5,
        "rating_max": 5.0, "max_event_age_days": 7, "clock_skew_seconds": 300,
        "volume_history_runs": 7, "volume_min_ratio": 0.4, "volume_max_ratio": 10.0}


def test_row_values_at_each_bound_pass(engine, tmp_path: Path) -> None:
    rows = [
        *good_rows(1000),
        [1, 1001, 0.5, START + 10], [2, 1002, 5.0, START + 11],
        [MAX_ID, 1003, 3.0, START + 12], [3, MAX_ID, 3.0, START + 13],
        [4, 1004, 3.0, START - 7 * DAY],  # the oldest late event allowed
        [5, 1005, 3.0, NOON + SKEW],      # the time of loading, with the clocks' skew
    ]
    _, outcome = check(engine, tmp_path, rows)
    assert outcome.report.success, [f.describe() for f in outcome.report.failures]
    assert outcome.rejected == {}
    assert outcome.accepted_rows == 1006


def test_row_values_beyond_each_bound_are_quarantined_by_reason(engine, tmp_path: Path
                                                                ) -> None:
    bad = {
        "rating low": [1, 1001, 0.49, START + 10], "rating high": [2, 1002, 5.01, START + 11],
        "user zero": [0, 1003, 3.0, START + 12], "user 2^31": [MAX_ID + 1, 1004, 3.0, START + 13],
        "item zero": [3, 0, 3.0, START + 14], "item 2^31": [4, MAX_ID + 1, 3.0, START + 15],
        "too old": [5, 1005, 3.0, START - 7 * DAY - 1],
        "future": [6, 1006, 3.0, NOON + SKEW + 1],
        "next day": [7, 1007, 3.0, END],
    }
    rows = good_rows(1000) + list(bad.values())
    _, outcome = check(engine, tmp_path, rows)
    assert {line: sorted(reasons) for line, reasons in outcome.rejected.items()} == {
        line_of(rows, bad["rating low"]): [RATING],
        line_of(rows, bad["rating high"]): [RATING],
        line_of(rows, bad["user zero"]): [USER],
        line_of(rows, bad["user 2^31"]): [USER],
        line_of(rows, bad["item zero"]): [ITEM],
        line_of(rows, bad["item 2^31"]): [ITEM],
        line_of(rows, bad["too old"]): [AGE],
        line_of(rows, bad["future"]): [FUTURE],
        line_of(rows, bad["next day"]): sorted([AFTER_DAY, FUTURE]),
    }


def test_the_reject_fraction_bound(engine, tmp_path: Path) -> None:
    def with_bad_ratings(bad: int) -> list[list]:
        rows = good_rows(1000)
        for row in rows[:bad]:
            row[2] = 9.0
        return rows

    _, outcome = check(engine, tmp_path, with_bad_ratings(10))  # exactly 1%
    assert len(outcome.rejected) == 10
    message = refusal(engine, tmp_path, with_bad_ratings(11))
    assert ("input contract failed for 2026-11-20 (file:day.csv): 11 of 1000 rows are "
            "defective, more than the 1.0% that may be quarantined (max_reject_fraction)"
            in message)
    assert f"expect_column_values_to_be_between(rating): {RATING} (expected 0.5 to 5)" \
        in message
    assert "— 11 of 1000 rows fail; e.g. line 2: user_id=1, item_id=1, rating=9" in message


def test_the_duplicate_tolerance_bound(engine, tmp_path: Path) -> None:
    def with_copies(copies: int) -> list[list]:
        unique = good_rows(1000 - copies)
        return unique + [list(row) for row in unique[:copies]]

    _, outcome = check(engine, tmp_path, with_copies(50))  # exactly 5%
    assert len(outcome.rejected) == 50
    assert set(map(tuple, outcome.rejected.values())) == {
        ("exact duplicate of an earlier event",)}
    message = refusal(engine, tmp_path, with_copies(51))
    assert ("input contract failed for 2026-11-20 (file:day.csv): 51 of 1000 rows are exact "
            "duplicates (0 of them of events already loaded), more than the 5.0% that "
            "duplicate_tolerance allows; e.g. line 951 repeats an earlier line") in message


def record_runs(engine, rows: float, users: float, count: int = 3) -> None:
    for back in range(1, count + 1):
        run_id = runs.start(engine, "nightly", RUN_DATE - timedelta(days=back), None)
        runs.succeed(engine, run_id, {"input_rows": rows, "input_users": users})


def test_the_volume_ratio_bounds_around_recent_runs(engine, tmp_path: Path) -> None:
    record_runs(engine, rows=1000, users=100)
    # The baseline is 1000 rows and 100 users a day: 400..10000 rows, 40..1000 users.
    for rows, users in ((400, 40), (10_000, 1000)):
        _, outcome = check(engine, tmp_path, good_rows(rows, users))
        assert outcome.report.success, (rows, users)
    baseline = ("volume baseline: 1000 rows and 100 users a day, the median of the last 3 "
                "succeeded nightly run(s)")
    rows_bound = ("expect_table_row_count_to_be_between: the day's row count is within "
                  "volume_min_ratio..volume_max_ratio of the volume baseline")
    users_bound = ("expect_column_unique_value_count_to_be_between(user_id): the day's active "
                   "users are within volume_min_ratio..volume_max_ratio of the volume baseline")
    message = refusal(engine, tmp_path, good_rows(399, 40))
    assert baseline in message
    assert f"{rows_bound} (expected 400 to 10000) — observed 399" in message
    assert users_bound not in message
    message = refusal(engine, tmp_path, good_rows(400, 39))
    assert f"{users_bound} (expected 40 to 1000) — observed 39" in message
    assert rows_bound not in message
    message = refusal(engine, tmp_path, good_rows(10_001, 1001))
    assert f"{rows_bound} (expected 400 to 10000) — observed 10001" in message
    assert f"{users_bound} (expected 40 to 1000) — observed 1001" in message


def test_a_fractional_volume_bound_is_the_whole_count_inside_it(engine, tmp_path: Path
                                                                ) -> None:
    record_runs(engine, rows=1001, users=101)  # 0.4x: 400.4 rows and 40.4 users
    _, outcome = check(engine, tmp_path, good_rows(401, 41))
    assert outcome.report.success
    message = refusal(engine, tmp_path, good_rows(400, 41))
    assert "(expected 401 to 10010) — observed 400" in message


def test_the_newest_event_must_fall_on_the_run_date(engine, tmp_path: Path) -> None:
    _, outcome = check(engine, tmp_path, good_rows(200, at=START - 199))  # newest: 00:00:00
    assert outcome.report.success
    message = refusal(engine, tmp_path, good_rows(200, at=START - 200))
    assert ("expect_column_max_to_be_between(timestamp): the newest event falls on the run "
            f"date (expected at least {START}) — observed {START - 1}") in message


def test_future_events_against_the_real_clock(engine, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    midnight = int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp())
    ahead = int(datetime.now(UTC).timestamp()) + 3600
    rows = [[1 + i % 50, 1 + i, 3.0, midnight] for i in range(200)] + [[1, 999, 3.0, ahead]]
    _, outcome = check(engine, tmp_path, rows, run_date=today, now=None)
    assert list(outcome.rejected) == [202]
    assert FUTURE in outcome.rejected[202]


def test_a_future_date_allowed_on_purpose_takes_its_events_as_on_time(engine, tmp_path: Path
                                                                      ) -> None:
    before_the_day = datetime(2026, 11, 19, 23, tzinfo=UTC)
    _, outcome = check(engine, tmp_path, good_rows(200), now=before_the_day,
                       future_allowed=True)
    assert outcome.rejected == {}
    message = refusal(engine, tmp_path, good_rows(200), now=before_the_day)
    assert "200 of 200 rows are defective" in message
    assert FUTURE in message


def test_a_day_without_events_has_nothing_new_to_score(engine, tmp_path: Path) -> None:
    with pytest.raises(NothingToScoreError, match=re.escape(
            "nothing new to score for 2026-11-20: file:empty.csv holds no events; nothing "
            "was published, the served version stays")):
        check(engine, tmp_path, [], name="empty.csv")
    with pytest.raises(NothingToScoreError, match="nothing new to score for 2026-11-20: table"):
        check_input(Validator(tmp_path), engine, RUN_DATE, table_batch(engine, RUN_DATE),
                    now=NOW)


def load(engine, tmp_path: Path, run_date: date, rows: list[list], name: str
         ) -> tuple[dict, dict[int, list[str]]]:
    batch, outcome = check(engine, tmp_path, rows, run_date=run_date, name=name,
                           now=datetime(2026, 11, 25, tzinfo=UTC))
    run_id = runs.start(engine, "nightly", run_date, None)
    return quarantine_and_load(engine, run_id, run_date, batch, outcome), outcome.rejected


def events_on(engine, day: date) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(*) FROM batchscore.interactions WHERE event_at >= :d"
            " AND event_at < CAST(:d AS date) + 1"), {"d": day}).scalar()


def test_events_already_loaded_are_duplicates_whichever_file_brings_them(
        engine, tmp_path: Path) -> None:
    yesterday = RUN_DATE - timedelta(days=1)
    first = good_rows(300, at=START - DAY + 3600)
    assert load(engine, tmp_path, yesterday, first, "first.csv") == (
        {"loaded": 300, "rejected": 0}, {})
    with engine.connect() as conn:
        loaded_ids = dict(conn.execute(sa.text(
            "SELECT item_id, event_id FROM batchscore.interactions")).all())
    # The next day's file resends three of yesterday's events among its own.
    resent = [first[0], first[7], first[299]]
    second = good_rows(300, first_item=1001) + [list(row) for row in resent]
    expected = {line_of(second, row): [
        f"exact duplicate of an event already loaded (event {loaded_ids[row[1]]})"]
        for row in resent}
    assert load(engine, tmp_path, RUN_DATE, second, "second.csv") == (
        {"loaded": 300, "rejected": 3}, expected)
    # The same file again for the date: the same verdict, and nothing is loaded twice.
    assert load(engine, tmp_path, RUN_DATE, second, "second.csv") == (
        {"loaded": 0, "rejected": 3}, expected)
    assert (events_on(engine, yesterday), events_on(engine, RUN_DATE)) == (300, 300)
    # A new file for the date replaces its earlier load: that load is not history.
    third = second + good_rows(2, first_item=2001)
    assert load(engine, tmp_path, RUN_DATE, third, "third.csv") == (
        {"loaded": 302, "rejected": 3}, expected)
    assert (events_on(engine, yesterday), events_on(engine, RUN_DATE)) == (300, 302)
    # Yesterday's whole file sent again inside the next day's: refused, nothing loaded.
    tomorrow = RUN_DATE + timedelta(days=1)
    resend = first + good_rows(10, first_item=3001, at=END + 60)
    with pytest.raises(ContractError, match=(
            r"input contract failed for 2026-11-21 \(file:resend.csv\): 300 of 310 rows are "
            r"exact duplicates \(300 of them of events already loaded\), more than the 5.0% "
            rf"that duplicate_tolerance allows; e.g. line 2 = event {loaded_ids[1]};.* Was "
            r"the file, or part of it, sent before\?")):
        load(engine, tmp_path, tomorrow, resend, "resend.csv")
    assert events_on(engine, tomorrow) == 0


def test_a_copy_of_an_event_in_the_table_is_quarantined_and_the_first_kept(
        engine, tmp_path: Path) -> None:
    rows = good_rows(200)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO batchscore.interactions (user_id, item_id, rating, event_at)"
            " VALUES (:u, :i, :r, CAST(:t AS timestamptz))"),
            [{"u": u, "i": i, "r": r, "t": epoch_to_sql(t)} for u, i, r, t in rows + rows[:2]])
        ids = conn.execute(sa.text("SELECT event_id FROM batchscore.interactions"
                                   " WHERE item_id IN (1, 2) ORDER BY event_id")).scalars().all()
    outcome = check_input(Validator(tmp_path), engine, RUN_DATE, table_batch(engine, RUN_DATE),
                          now=NOW)
    assert outcome.rejected == {ids[2]: ["exact duplicate of an earlier event"],
                                ids[3]: ["exact duplicate of an earlier event"]}


def serving_model(engine, snapshot: dict) -> int:
    return register(engine, NewModel(
        created_by="test", trained_as_of=RUN_DATE - timedelta(days=1), params={}, metrics={},
        data_snapshot=snapshot, code_version="test", artifact_uri="file:///nowhere")).version


def test_the_first_night_takes_its_volume_baseline_from_the_training_snapshot(
        engine, tmp_path: Path) -> None:
    assert snapshot_baseline(engine) is None  # no model serves: no baseline at all
    _, outcome = check(engine, tmp_path, good_rows(50, 5))
    assert outcome.report.success  # so no volume gate, as before any model
    version = serving_model(engine, {"rows": 20_000, "days": 20, "median_daily_rows": 1000.0,
                                     "median_daily_users": 100.0})
    _, outcome = check(engine, tmp_path, good_rows(400, 40))
    assert outcome.report.success
    message = refusal(engine, tmp_path, good_rows(399, 40))
    assert (f"volume baseline: 1000 rows and 100 users a day, the median day of model version "
            f"{version}'s training snapshot (20 days)") in message
    assert "(expected 400 to 10000) — observed 399" in message
    # Runs of its own, once there are any, are the baseline instead.
    record_runs(engine, rows=500, users=50, count=1)
    _, outcome = check(engine, tmp_path, good_rows(399, 40))
    assert outcome.report.success


def test_an_older_snapshot_gets_its_daily_figures_from_the_table(engine) -> None:
    def day(n: int, users: int, on: date) -> list[dict]:
        start = int(datetime(on.year, on.month, on.day, tzinfo=UTC).timestamp())
        return [{"u": 1 + i % users, "i": 1 + i, "t": epoch_to_sql(start + 60 * i)}
                for i in range(n)]

    events = (day(10, 5, date(2026, 11, 17)) + day(30, 8, date(2026, 11, 18))
              + day(20, 2, date(2026, 11, 19)) + day(99, 99, date(2026, 11, 20)))
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO batchscore.interactions (user_id, item_id, rating, event_at)"
            " VALUES (:u, :i, 1, CAST(:t AS timestamptz))"), events)
    version = serving_model(engine, {"rows": 60, "first_event": "2026-11-17T00:00:00+00:00",
                                     "last_event": "2026-11-19T00:19:00+00:00"})
    # Days 17, 18, 19 (the 20th is after the snapshot): rows 10, 30, 20; users 5, 8, 2.
    assert snapshot_baseline(engine) == VolumeBaseline(
        rows=20.0, users=5.0,
        source=f"median day of model version {version}'s training snapshot (3 days)")
