"""The interaction history Spark reads: a Parquet file per event day, written from
PostgreSQL for exactly the days loads changed, and read back day by day."""

import io
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from jobs.data import history
from jobs.data.store import copy_interactions

NOV_18, NOV_19, NOV_20 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)


def seconds(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


# Three days of events; 23:59:59 and 00:00:00 sit on either side of a day's end (UTC).
EVENTS = """\
1,10,1.0,2026-11-18 09:00:00+00
2,11,2.5,2026-11-18 23:59:59+00
1,12,1.0,2026-11-19 00:00:00+00
3,10,4.0,2026-11-20 12:30:00+00
"""


def load(engine, rows: str, replace: bool = False) -> None:
    copy_interactions(engine, io.StringIO(rows), replace=replace)


def day_rows(root: Path, day: date) -> list[tuple]:
    table = pq.read_table(Path(history.day_folder(str(root), day)) / history.FILE_NAME)
    return sorted(zip(*(table[name].to_pylist() for name in history.SCHEMA.names),
                      strict=True))


def days_on_disk(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


def marked(engine) -> list[date]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT event_date FROM batchscore.history_days WHERE marked_at IS NOT NULL"
            " ORDER BY 1")).scalars())


def test_each_day_is_written_once_and_again_only_when_a_load_changes_it(engine,
                                                                         tmp_path) -> None:
    root = tmp_path / "history"
    load(engine, EVENTS)
    assert marked(engine) == [NOV_18, NOV_19, NOV_20]
    assert history.sync(engine, str(root)) == history.SyncReport(3, 0, 4)
    assert days_on_disk(root) == ["event_date=2026-11-18", "event_date=2026-11-19",
                                  "event_date=2026-11-20"]
    assert day_rows(root, NOV_18) == [(1, 10, 1.0, seconds("2026-11-18 09:00:00")),
                                      (2, 11, 2.5, seconds("2026-11-18 23:59:59"))]
    assert day_rows(root, NOV_19) == [(1, 12, 1.0, seconds("2026-11-19 00:00:00"))]
    assert marked(engine) == []
    assert history.sync(engine, str(root)) == history.SyncReport(0, 0, 0)
    assert history.events_up_to(engine, NOV_19) == 3

    # A late event of the 19th: only that day is written again.
    load(engine, "4,13,3.0,2026-11-19 18:00:00+00\n")
    assert marked(engine) == [NOV_19]
    assert history.sync(engine, str(root)) == history.SyncReport(1, 0, 2)
    assert day_rows(root, NOV_19) == [(1, 12, 1.0, seconds("2026-11-19 00:00:00")),
                                      (4, 13, 3.0, seconds("2026-11-19 18:00:00"))]


def test_removed_events_and_a_replaced_table_are_followed(engine, tmp_path) -> None:
    root = tmp_path / "history"
    load(engine, EVENTS)
    history.sync(engine, str(root))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM batchscore.interactions WHERE event_at >= :d"),
                     {"d": datetime(2026, 11, 20, tzinfo=UTC)})
    assert history.sync(engine, str(root)) == history.SyncReport(0, 1, 0)
    assert days_on_disk(root) == ["event_date=2026-11-18", "event_date=2026-11-19"]

    # data load --replace: the old days go, the new one comes.
    load(engine, "5,20,1.0,2026-11-21 08:00:00+00\n", replace=True)
    assert history.sync(engine, str(root)) == history.SyncReport(1, 2, 1)
    assert days_on_disk(root) == ["event_date=2026-11-21"]
    assert history.events_up_to(engine, NOV_20) == 0


def test_a_folder_of_a_day_the_database_does_not_have_is_removed(engine, tmp_path) -> None:
    root = tmp_path / "history"
    stray = root / "event_date=2026-10-01"
    stray.mkdir(parents=True)
    (stray / history.FILE_NAME).write_bytes(b"left by another database")
    load(engine, EVENTS)
    assert history.sync(engine, str(root)).days_removed == 1
    assert "event_date=2026-10-01" not in days_on_disk(root)


def test_a_sync_cut_short_leaves_its_days_marked_and_the_next_one_finishes(engine,
                                                                         tmp_path) -> None:
    root = tmp_path / "history"
    load(engine, EVENTS)
    # The 19th's folder cannot be made: a file is in its way.
    root.mkdir()
    blocker = Path(history.day_folder(str(root), NOV_19))
    blocker.write_text("in the way")
    with pytest.raises(OSError):
        history.sync(engine, str(root))
    assert marked(engine) == [NOV_19, NOV_20]
    assert day_rows(root, NOV_18)[0][0] == 1
    blocker.unlink()
    assert history.sync(engine, str(root)) == history.SyncReport(2, 0, 2)
    assert marked(engine) == []
    assert day_rows(root, NOV_20) == [(3, 10, 4.0, seconds("2026-11-20 12:30:00"))]


def test_readers_take_only_the_days_up_to_theirs(engine, spark, tmp_path) -> None:
    root = tmp_path / "history"
    load(engine, EVENTS)
    history.sync(engine, str(root))
    read = history.read_events(spark, str(root), NOV_19)
    assert sorted(tuple(row) for row in read.collect()) == [
        (1, 10, 1.0, seconds("2026-11-18 09:00:00")),
        (1, 12, 1.0, seconds("2026-11-19 00:00:00")),
        (2, 11, 2.5, seconds("2026-11-18 23:59:59"))]
    # Spark lists only the folders of those days.
    assert "PartitionFilters: [isnotnull(event_date" in read._jdf.queryExecution(
        ).executedPlan().toString()

    snapshot = tmp_path / "training_set.parquet"
    assert history.write_snapshot(str(root), NOV_18, snapshot) == 2
    table = pq.read_table(snapshot)
    assert table.schema == history.SCHEMA
    assert sorted(table["user_id"].to_pylist()) == [1, 2]


def test_each_database_gets_its_own_default_folder(engine, tmp_path) -> None:
    first = history.root(engine, None, tmp_path)
    assert first.startswith(str(tmp_path / "history")) and len(Path(first).name) == 36
    assert history.root(engine, "s3a://bucket/history", tmp_path) == "s3a://bucket/history"
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE batchscore.history_store SET store_id = gen_random_uuid()"))
    assert history.root(engine, None, tmp_path) != first
