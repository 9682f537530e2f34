"""Item and user metadata loaded through the CLI, and what they turn on: the input
contract's known-item check on a nightly's Parquet day file, and the attribute
segments of a trained model's fairness report."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from jobs.cli import main
from tests.e2e.conftest import cli_world

pytestmark = pytest.mark.spark

HISTORY_DATE = "2026-11-19"
RUN_DATE = "2026-11-20"
DAY = 86_400
ITEMS = 120
USERS = 400
UNKNOWN_ITEM = 5000


def run(capsys, *argv: str, code: int = 0) -> str:
    capsys.readouterr()
    returned = main(list(argv))
    captured = capsys.readouterr()
    assert returned == code, captured
    return captured.out if code == 0 else captured.err


@pytest.fixture(scope="module")
def world(spark, settings, endpoints, tmp_path_factory):
    """Interactions, the item catalogue (CSV) and user plans (Parquet), all through the CLI,
    and a model trained on them."""
    folder = tmp_path_factory.mktemp("metadata")
    with cli_world(settings, endpoints) as (engine, _):
        assert main(["data", "generate", "--users", str(USERS), "--items", str(ITEMS),
                     "--days", "20", "--seed", "5", "--end-date", HISTORY_DATE]) == 0
        items = folder / "items.csv"
        items.write_text("item_id,title,genre\n" + "".join(
            f"{item},Title {item},{('drama', 'comedy', 'crime')[item % 3]}\n"
            for item in range(1, ITEMS + 1)))
        users = folder / "users.parquet"
        pq.write_table(pa.table({
            "user_id": pa.array(range(1, USERS + 1), pa.int32()),
            "plan": ["paid" if user % 4 == 0 else "free" for user in range(1, USERS + 1)],
        }), users)
        yield engine, folder, items, users


def test_metadata_files_load_through_the_cli(world, capsys) -> None:
    engine, folder, items, users = world
    assert run(capsys, "data", "load-items", str(items)) == (
        f"loaded {ITEMS} items from {items}: {ITEMS} new, 0 updated\n")
    assert run(capsys, "data", "load-users", str(users), "--replace") == (
        f"loaded {USERS} users from {users}: {USERS} new, 0 updated; batchscore.users "
        "replaced\n")
    bad = folder / "bad_users.csv"
    bad.write_text("user_id,plan\n1,free\n2147483648,paid\n")
    error = run(capsys, "data", "load-users", str(bad), code=1)
    assert error.startswith(f"error: users contract failed for {bad}, nothing loaded")
    assert "user_id is a positive integer below 2^31 (expected 1 to 2147483647) — 1 of 2 rows" \
           " fail; e.g. line 3: user_id=2147483648, attributes={'plan': 'paid'}" in error
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT attributes FROM batchscore.items WHERE item_id = 3")).scalar() == {
            "genre": "drama"}
        assert conn.execute(sa.text(
            "SELECT attributes->>'plan', count(*) FROM batchscore.users GROUP BY 1 ORDER BY 1"
        )).all() == [("free", 300), ("paid", 100)]


def test_the_fairness_report_shows_the_user_attribute_segments(world, capsys) -> None:
    assert run(capsys, "train", "--as-of", HISTORY_DATE, "--max-iter", "3").startswith(
        "model version 1 (")
    shown = json.loads(run(capsys, "models", "show", "1", "--json"))
    segments = {row["segment"]: row for row in
                shown["reports"]["fairness"]["quality"]["attribute:plan"]}
    assert set(segments) == {"free", "paid"}
    assert segments["free"]["users"] > segments["paid"]["users"] >= 5
    assert 0.0 <= segments["paid"]["model"]["ndcg_at_k"] <= 1.0
    text = run(capsys, "models", "show", "1")
    assert "    attribute:plan free " in text and "    attribute:plan paid " in text


def test_a_nightly_quarantines_an_unknown_item_of_a_parquet_day(world, capsys) -> None:
    engine, folder, _, _ = world
    with engine.connect() as conn:
        day_rows = conn.execute(sa.text(
            "SELECT user_id, item_id, rating, event_at FROM batchscore.interactions"
            " WHERE event_at >= CAST(:d AS date) ORDER BY event_id"), {"d": HISTORY_DATE}).all()
    assert len(day_rows) >= 100   # one bad row stays under the 1% that may be quarantined
    unknown_at = 7
    day = folder / "day.parquet"
    pq.write_table(pa.table({
        "user_id": pa.array([row.user_id for row in day_rows], pa.int64()),
        "item_id": pa.array([UNKNOWN_ITEM if n == unknown_at else row.item_id
                             for n, row in enumerate(day_rows)], pa.int64()),
        "rating": pa.array([row.rating for row in day_rows], pa.float32()),
        "timestamp": pa.array([datetime.fromtimestamp(row.event_at.timestamp() + DAY, UTC)
                               for row in day_rows], pa.timestamp("us", "UTC")),
    }), day)
    out = run(capsys, "nightly", "--run-date", RUN_DATE, "--k", "10", "--input", str(day))
    assert f"published version 1 for {RUN_DATE}" in out
    rejects = json.loads(run(capsys, "rejects", "list", "--json"))
    assert [(r["source"], r["row_number"], r["reasons"], r["row"]["item_id"])
            for r in rejects] == [("file:day.parquet", unknown_at,
                                   ["item_id is in batchscore.items"], UNKNOWN_ITEM)]
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*) FROM batchscore.interactions WHERE event_at >= CAST(:d AS date)"),
            {"d": RUN_DATE}).scalar() == len(day_rows) - 1
