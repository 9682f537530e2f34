"""A database the previous release wrote (one row per user and rank) is rewritten by
migration 011 into one row per user, and serves, switches and rolls back as before."""

import shutil
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from jobs.platform import runs
from jobs.platform.db import migrations, upgrade
from jobs.publish.postgres import PostgresPublisher
from tests.conftest import reset_database

DAY1, DAY2, DAY3 = date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18)
# (user, rank, item, score) rows as the previous release stored them, ranks out of order
# on purpose: the lists must come out by rank, not by the order rows were written.
OLD_ROWS = {
    DAY1: [(1, 2, 10, 0.25), (1, 1, 11, 0.5), (2, 1, 12, 1.5)],
    DAY2: [(1, 1, 22, 0.75), (1, 3, 21, 0.0625), (1, 2, 20, 0.125), (3, 1, 23, 2.0)],
    DAY3: [(2, 1, 30, 1.0)],
}
RECOMMENDATIONS = ("SELECT user_id, rank, item_id, score, logical_date FROM bi.recommendations"
                   " ORDER BY user_id, rank")
HISTORY = ("SELECT publish_id, user_id, rank, item_id, score, is_serving, status"
           " FROM bi.recommendations_history ORDER BY publish_id, user_id, rank")


def migrate_to_previous_release(engine: sa.engine.Engine, folder: Path) -> None:
    previous = [m for m in migrations() if m.version < "011"]
    for migration in previous:
        shutil.copyfile(migration.path, folder / migration.path.name)
    reset_database(engine)
    assert upgrade(engine, folder)[-1] == "010_monitoring"


def write_as_the_previous_release(engine: sa.engine.Engine) -> dict[date, int]:
    """Day 1 published, day 2 published and served, day 3 loaded and staged (its table
    not attached yet), each through the previous release's partition functions."""
    # As the previous release registered it: no family column yet.
    with engine.begin() as conn:
        model = conn.execute(sa.text(
            "INSERT INTO batchscore.model_versions (version, status, created_by,"
            " trained_as_of, params, metrics, data_snapshot, code_version, artifact_uri)"
            " VALUES (1, 'serving', 'test', :d, '{}', '{}', '{}', 'previous',"
            " 'file:///previous') RETURNING version"), {"d": DAY1}).scalar_one()
    ids = {}
    with engine.begin() as conn:
        for day, rows in OLD_ROWS.items():
            run_id = runs.start(engine, "nightly", day, model)
            publish_id = conn.execute(sa.text(
                "INSERT INTO batchscore.prediction_versions (run_id, model_version,"
                " logical_date, k, status, users, rows) VALUES (:r, :m, :d, 3, :s, :u, :n)"
                " RETURNING publish_id"),
                {"r": run_id, "m": model, "d": day, "s": "staged" if day == DAY3 else "published",
                 "u": len({row[0] for row in rows}), "n": len(rows)}).scalar_one()
            ids[day] = publish_id
            conn.execute(sa.text("SELECT batchscore.create_version_table(:p)"), {"p": publish_id})
            conn.execute(sa.text(
                f"INSERT INTO batchscore.predictions_p{publish_id}"
                " (publish_id, user_id, rank, item_id, score) VALUES (:p, :u, :r, :i, :s)"),
                [{"p": publish_id, "u": u, "r": r, "i": i, "s": s} for u, r, i, s in rows])
            conn.execute(sa.text("SELECT batchscore.index_version_table(:p)"), {"p": publish_id})
            if day != DAY3:
                conn.execute(sa.text("SELECT batchscore.attach_version_table(:p)"),
                             {"p": publish_id})
        conn.execute(sa.text("INSERT INTO batchscore.serving (publish_id) VALUES (:p)"),
                     {"p": ids[DAY2]})
        conn.execute(sa.text(
            "INSERT INTO batchscore.serving_history (publish_id, previous_publish_id, action,"
            " switched_by, reason) VALUES (:a, NULL, 'publish', 'test', 'day 1'),"
            " (:b, :a, 'publish', 'test', 'day 2')"), {"a": ids[DAY1], "b": ids[DAY2]})
    return ids


def test_the_previous_layout_is_rewritten_as_lists_and_serves_as_before(engine,
                                                                      tmp_path: Path) -> None:
    migrate_to_previous_release(engine, tmp_path)
    ids = write_as_the_previous_release(engine)
    with engine.connect() as conn:
        before = (conn.execute(sa.text(RECOMMENDATIONS)).all(),
                  conn.execute(sa.text(HISTORY)).all())
    assert before[0] == [(1, 1, 22, 0.75, DAY2), (1, 2, 20, 0.125, DAY2),
                         (1, 3, 21, 0.0625, DAY2), (3, 1, 23, 2.0, DAY2)]

    assert upgrade(engine)[0] == "011_prediction_lists"

    with engine.connect() as conn:
        # BI reads the same rows through the same views.
        assert (conn.execute(sa.text(RECOMMENDATIONS)).all(),
                conn.execute(sa.text(HISTORY)).all()) == before
        lists = conn.execute(sa.text(
            "SELECT publish_id, user_id, item_ids, scores FROM batchscore.prediction_lists"
            " ORDER BY publish_id, user_id")).all()
        assert lists == [(ids[DAY1], 1, [11, 10], [0.5, 0.25]), (ids[DAY1], 2, [12], [1.5]),
                         (ids[DAY2], 1, [22, 20, 21], [0.75, 0.125, 0.0625]),
                         (ids[DAY2], 3, [23], [2.0])]
        assert conn.execute(sa.text(
            "SELECT user_id, item_ids, logical_date FROM bi.recommendation_lists"
            " ORDER BY user_id")).all() == [(1, [22, 20, 21], DAY2), (3, [23], DAY2)]
        tables = conn.execute(sa.text(
            "SELECT c.relname, c.relispartition FROM pg_class c"
            " WHERE c.relnamespace = 'batchscore'::regnamespace AND c.relkind = 'r'"
            " AND c.relname ~ '^prediction' AND c.relname ~ '_p[0-9]+$' ORDER BY 1")).all()
        # Every old table is gone; the staged one was rewritten and is still not attached.
        assert tables == [(f"prediction_lists_p{ids[DAY1]}", True),
                          (f"prediction_lists_p{ids[DAY2]}", True),
                          (f"prediction_lists_p{ids[DAY3]}", False)]

    with engine.begin() as conn:
        # BI's one-user query reaches the served table's user index through both views.
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(conn.execute(sa.text(
            "EXPLAIN SELECT rank, item_id FROM bi.recommendations WHERE user_id = 3"
            " ORDER BY rank")).scalars())
        assert f"Index Scan using prediction_lists_p{ids[DAY2]}_user_id_idx" in plan, plan

    # The staged version of day 3 is switched in by this release, then rolled back.
    publisher = PostgresPublisher(engine)
    assert publisher.switch(ids[DAY3]).served
    with engine.connect() as conn:
        assert conn.execute(sa.text(RECOMMENDATIONS)).all() == [(2, 1, 30, 1.0, DAY3)]
    rollback = publisher.rollback("on-call", "the upgrade test")
    assert (rollback.rolled_back, rollback.restored) == (ids[DAY3], ids[DAY2])
    with engine.connect() as conn:
        assert conn.execute(sa.text(RECOMMENDATIONS)).all() == before[0]
