"""The monitor step on the embedded PostgreSQL: two normal days then a shifted one,
published through the real publisher, measured by hand."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.contracts.redis import Keyspace
from jobs.lifecycle.registry import NewModel, register
from jobs.monitoring.monitor import MonitorConfig, MonitorError, monitor
from jobs.orchestration import after_monitor
from jobs.platform import runs
from jobs.publish.postgres import Canary, PostgresPublisher
from jobs.publish.protocol import publish_lock, switch
from jobs.publish.redis import RedisPublisher
from jobs.training.metrics import average_precision_at_k, ndcg_at_k, recall_at_k

DAY0, DAY1, DAY2, DAY3 = (date(2026, 11, 17), date(2026, 11, 18), date(2026, 11, 19),
                          date(2026, 11, 20))
BACKGROUND_USERS = range(101, 201)
# The first two versions serve the same lists; the shifted day's version others.
LISTS = {1: [(3, 0.9), (5, 0.8), (7, 0.7)], 2: [(2, 0.9), (4, 0.8), (6, 0.7)],
         3: [(1, 0.9), (2, 0.8), (3, 0.7)]}
SHIFTED_LISTS = {user: [(item + 10, score * 5) for item, score in items]
                 for user, items in LISTS.items()}
POPULAR = pa.table({"rank": [1, 2, 3], "item_id": [9, 2, 5], "score": [3.0, 2.0, 1.0]})


def at(day: date, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC) + timedelta(seconds=second)


def events(engine, rows: list[tuple[int, int, datetime]]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO batchscore.interactions (user_id, item_id, rating,"
                             " event_at) VALUES (:u, :i, 1.0, :t)"),
                     [{"u": user, "i": item, "t": when} for user, item, when in rows])


def normal_day(day: date) -> list[tuple[int, int, datetime]]:
    """Every background user once, on one of items 1..10: ten events per item."""
    return [(user, user % 10 + 1, at(day, user)) for user in BACKGROUND_USERS]


def shifted_day(day: date) -> list[tuple[int, int, datetime]]:
    """The same users five times each, all on items 11..20 that nobody saw before."""
    return [(user, 11 + (user + n) % 10, at(day, user * 10 + n))
            for user in BACKGROUND_USERS for n in range(5)]


def block(recs: dict[int, list[tuple[int, float]]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"user_id": list(recs), "items": [[i for i, _ in r] for r in recs.values()],
         "scores": [[s for _, s in r] for r in recs.values()]},
        schema=pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                          ("scores", pa.list_(pa.float32()))]))


def publish_day(engine, redis_client, model: int, day: date,
                recs: dict[int, list[tuple[int, float]]], canary: Canary | None = None,
                canary_users: tuple[int, ...] = (), stats: dict | None = None
                ) -> tuple[str, int]:
    """A nightly's publish steps through the real publishers, then the run recorded."""
    run_id = runs.start(engine, "nightly", day, model)
    postgres = PostgresPublisher(engine)
    version = postgres.allocate(run_id, model, day, k=3, canary=canary)
    postgres.prepare(version)
    postgres.write(block(recs))
    postgres.write_fallback(POPULAR)
    postgres.finish_load()
    if canary is not None:
        import numpy as np

        postgres.record_canary_users(np.array(canary_users), canary.model_version)
    publisher = RedisPublisher(redis_client, Keyspace())
    publisher.prepare(version)
    publisher.write(block(recs))
    publisher.write_fallback(POPULAR)
    publisher.write_meta()
    with publish_lock(engine, "test"):
        switch(engine, redis_client, Keyspace(), version.publish_id)
    runs.succeed(engine, run_id, stats or {})
    return run_id, version.publish_id


def new_model(engine, as_of: date) -> int:
    return register(engine, NewModel(
        created_by="test", trained_as_of=as_of, params={}, metrics={}, data_snapshot={},
        code_version="test", artifact_uri="file:///nowhere")).version


@pytest.fixture
def history(engine):
    """Three normal days the model was trained on, and a model serving since."""
    for day in (DAY0 - timedelta(days=2), DAY0 - timedelta(days=1), DAY0):
        events(engine, normal_day(day))
    return new_model(engine, DAY0)


def test_input_drift_reads_only_the_reference_window(engine, redis_client, history):
    """Events older than the window neither weigh in the training reference nor make an
    item old; the catalogue is the one the run scored against."""
    model = history
    # Forty days before the training date, a burst on items 31..40 (the three normal
    # days have 30 events per item on items 1..10).
    ancient = DAY0 - timedelta(days=40)
    events(engine, [(user, 31 + user % 10, at(ancient, user * 10 + n))
                    for user in BACKGROUND_USERS for n in range(20)])
    events(engine, [*normal_day(DAY1), (1, 31, at(DAY1, 1))])
    run, _ = publish_day(engine, redis_client, model, DAY1, LISTS,
                         stats={"predictions_catalog_items": 20})
    levels = MonitorConfig.load()
    assert levels.reference_window_days == 28
    found = monitor(engine, run, levels).metrics
    # Items 1..10 and 31 on the day; 31 has no event in the 28 days before it.
    assert found[("input.new_item_share", "")] == pytest.approx(1 / 11)
    # Against the last 28 days of training, the day looks like them.
    assert found[("input.item_popularity_psi", "vs_training")] < 0.1
    # Items 3, 5, 7, 2, 4, 6, 1 of the 20 scored.
    assert found[("predictions.catalog_coverage", "")] == pytest.approx(7 / 20)

    # A window reaching back to the burst: item 31 is old, and the reference is mostly
    # items 31..40, which the day hardly touches.
    wide = MonitorConfig(realized_window_days=levels.realized_window_days,
                         levels=levels.levels, reference_window_days=60)
    found = monitor(engine, run, wide).metrics
    assert found[("input.new_item_share", "")] == 0.0
    assert found[("input.item_popularity_psi", "vs_training")] > 0.25


def test_realized_quality_and_drift_over_two_normal_days_and_a_shifted_one(
        engine, redis_client, history, settings, monkeypatch, capsys):
    model = history
    levels = MonitorConfig.load()
    events(engine, normal_day(DAY1))
    run1, p1 = publish_day(engine, redis_client, model, DAY1, LISTS)
    first = monitor(engine, run1, levels)
    # Nothing served before: no realized quality, no previous version to compare with.
    assert not any(metric.startswith("realized.") for metric, _ in first.metrics)
    assert ("predictions.list_churn", "vs_previous_version") not in first.metrics
    assert first.crossings == []

    # Day 2: user 1 touches items 7 (rank 3 of its list) and 9, user 2 item 2 (rank 1);
    # user 3 does not come back.
    events(engine, [*normal_day(DAY2), (1, 7, at(DAY2, 1)), (1, 9, at(DAY2, 2)),
                    (2, 2, at(DAY2, 3))])
    run2, p2 = publish_day(engine, redis_client, model, DAY2, LISTS)
    second = monitor(engine, run2, levels)
    found = second.metrics
    served = f"model:{model}/publish:{p1}"
    popularity = f"popularity/publish:{p1}"
    ideal_two = 1 + 1 / math.log2(3)
    assert found[("realized.users", served)] == 2
    assert found[("realized.hit_rate", served)] == 1.0
    assert found[("realized.recall", served)] == pytest.approx((1 / 2 + 1) / 2)
    assert found[("realized.ndcg", served)] == pytest.approx((1 / 2 / ideal_two + 1) / 2)
    assert found[("realized.map", served)] == pytest.approx((1 / 3 / 2 + 1) / 2)
    # The same values as the offline metrics of training.
    lists = {1: [3, 5, 7], 2: [2, 4, 6]}
    came_back = {1: {7, 9}, 2: {2}}
    for name, offline in (("recall", recall_at_k), ("ndcg", ndcg_at_k),
                          ("map", average_precision_at_k)):
        assert found[(f"realized.{name}", served)] == pytest.approx(
            sum(offline(lists[u], came_back[u], 3) for u in lists) / 2)
    # The popularity list (9, 2, 5) on the same users and events: 9 at rank 1, 2 at rank 2.
    assert found[("realized.users", popularity)] == 2
    assert found[("realized.recall", popularity)] == pytest.approx(0.75)
    assert found[("realized.ndcg", popularity)] == pytest.approx(
        (1 / ideal_two + 1 / math.log2(3)) / 2)
    assert found[("realized.map", popularity)] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert found[("realized.ndcg_share", f"model:{model}")] == pytest.approx(1.0)
    # Input: 100 background events and 3 of users 1 and 2, who are new.
    assert found[("input.rows", "")] == 103
    assert found[("input.active_users", "")] == 102
    assert found[("input.new_user_share", "")] == pytest.approx(2 / 102)
    assert found[("input.new_item_share", "")] == 0.0
    # Predictions: 7 of the 10 items recommended; item 2 or 3 in 2 of 3 lists; exposure
    # sorted (0, 0, 0, 1, 1, 1, 1, 1, 2, 2): Gini 37 / 90. The same lists as day 1.
    assert (found[("predictions.users", "")], found[("predictions.rows", "")]) == (3, 9)
    assert found[("predictions.catalog_coverage", "")] == pytest.approx(0.7)
    assert found[("predictions.top_item_share", "")] == pytest.approx(2 / 3)
    assert found[("predictions.exposure_gini", "")] == pytest.approx(37 / 90)
    assert found[("predictions.list_churn", "vs_previous_version")] == pytest.approx(0.0)
    assert found[("predictions.score_psi", "vs_previous_version")] == pytest.approx(0.0)
    for metric in ("input.item_popularity_psi", "input.user_activity_psi"):
        for segment in ("vs_training", "vs_previous_day"):
            assert 0 <= found[(metric, segment)] < 0.05
    assert second.crossings == []

    # Day 3 is shifted: new items, five events per user, lists and scores moved; users
    # 1 and 2 come back to none of their day-2 lists' items.
    events(engine, [*shifted_day(DAY3), (1, 15, at(DAY3, 1)), (2, 16, at(DAY3, 2))])
    run3, _ = publish_day(engine, redis_client, model, DAY3, SHIFTED_LISTS)
    third = monitor(engine, run3, levels)
    assert third.metrics[("input.new_item_share", "")] == 1.0
    assert third.metrics[("predictions.list_churn", "vs_previous_version")] == 1.0
    assert third.metrics[("realized.ndcg", f"model:{model}/publish:{p2}")] == 0.0
    # The newest version's first-day NDCG (0) over the first week's mean.
    assert third.metrics[("realized.ndcg_share", f"model:{model}")] == 0.0
    crossed = {(c.metric, c.segment): c.level for c in third.crossings}
    for metric in ("input.item_popularity_psi", "input.item_popularity_js",
                   "input.user_activity_psi", "input.user_activity_js"):
        for segment in ("vs_training", "vs_previous_day"):
            assert crossed[(metric, segment)] == "retrain", (metric, segment)
    assert crossed[("predictions.score_psi", "vs_previous_version")] == "warn"
    assert crossed[("realized.ndcg_share", f"model:{model}")] == "retrain"
    assert third.retrain and third.to_json()["retrain"] is True

    # Run again, the run's rows are replaced, not added to; an earlier run measured again
    # sees only the runs up to its date.
    again = monitor(engine, run3, levels)
    assert again.metrics == third.metrics
    assert monitor(engine, run2, levels).metrics == second.metrics
    with engine.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT count(*) FROM bi.run_metrics WHERE run_id = :r"), {"r": run3}).scalar()
        row = conn.execute(sa.text(
            "SELECT logical_date, model_version, value FROM bi.run_metrics"
            " WHERE run_id = :r AND metric = 'realized.ndcg' AND segment = :s"),
            {"r": run2, "s": served}).one()
    assert stored == len(third.metrics)
    assert tuple(row) == (DAY2, model, pytest.approx(found[("realized.ndcg", served)]))

    monkeypatch.setenv("BATCHSCORE_HOME", str(settings.home))
    assert main(["runs", "show", run3, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["run_id"] == run3 and shown["run"]["status"] == "succeeded"
    assert shown["retrain"] is True
    by_name = {(row["metric"], row["segment"]): row for row in shown["metrics"]}
    assert by_name[("input.item_popularity_psi", "vs_training")]["level"] == "retrain"
    assert by_name[("input.rows", "")] == {
        "metric": "input.rows", "segment": "", "value": 502.0, "level": None,
        "threshold": None, "direction": None}
    assert main(["runs", "show", run3]) == 0
    text = capsys.readouterr().out
    assert "input.item_popularity_psi" in text and "<- RETRAIN (above" in text
    assert main(["runs", "show", "nightly-nope"]) == 1
    assert "no run 'nightly-nope'" in capsys.readouterr().err


def test_a_canary_publish_is_measured_per_arm(engine, redis_client, history):
    model = history
    canary_model = new_model(engine, DAY0)
    events(engine, normal_day(DAY1))
    _, p1 = publish_day(engine, redis_client, model, DAY1, LISTS, Canary(canary_model, 0.5),
                        canary_users=(2,))
    # User 1 (control) finds item 9, not in its list; user 2 (canary) item 2 at rank 1.
    events(engine, [*normal_day(DAY2), (1, 9, at(DAY2, 1)), (2, 2, at(DAY2, 2))])
    run2, _ = publish_day(engine, redis_client, model, DAY2, LISTS)
    found = monitor(engine, run2, MonitorConfig.load()).metrics
    assert found[("realized.hit_rate", f"model:{model}/publish:{p1}")] == 0.5
    assert found[("realized.users", f"model:{model}/publish:{p1}/arm:control")] == 1
    assert found[("realized.hit_rate", f"model:{model}/publish:{p1}/arm:control")] == 0.0
    assert found[("realized.users", f"model:{canary_model}/publish:{p1}/arm:canary")] == 1
    assert found[("realized.ndcg", f"model:{canary_model}/publish:{p1}/arm:canary")] == 1.0


def test_only_a_succeeded_run_is_monitored_and_a_failure_unpublishes_nothing(
        engine, redis_client, history):
    failed = runs.start(engine, "nightly", DAY1, history)
    runs.fail(engine, failed, "boom")
    with pytest.raises(MonitorError, match=f"run {failed} is failed"):
        monitor(engine, failed)
    skipped = runs.start(engine, "nightly", DAY2, history)
    runs.skip(engine, skipped, "nothing new to score")
    with pytest.raises(MonitorError, match=f"run {skipped} is skipped"):
        monitor(engine, skipped)
    with pytest.raises(MonitorError, match="no run 'nightly-missing'"):
        monitor(engine, "nightly-missing")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.run_metrics")).scalar() == 0
    events(engine, normal_day(DAY1))
    run1, p1 = publish_day(engine, redis_client, history, DAY1, LISTS)
    with engine.begin() as conn:  # monitoring breaks: its table is gone
        conn.execute(sa.text("ALTER TABLE batchscore.run_metrics RENAME TO run_metrics_gone"))
    record = after_monitor.monitor(engine, run1)
    assert record["run_id"] == run1 and record["retrain"] is False
    assert "run_metrics" in record["error"]
    with engine.connect() as conn:
        status, stats = conn.execute(sa.text(
            "SELECT status, stats FROM batchscore.runs WHERE run_id = :r"), {"r": run1}).one()
        served = conn.execute(sa.text("SELECT publish_id FROM batchscore.serving")).scalar()
    assert (status, served) == ("succeeded", p1)
    assert "run_metrics" in stats["monitoring_error"]
    with pytest.raises(sa.exc.ProgrammingError):
        after_monitor.monitor(engine, run1, raise_errors=True)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE batchscore.run_metrics_gone RENAME TO run_metrics"))
    assert after_monitor.monitor(engine, run1)["crossings"] == []
    assert "monitoring_error" not in runs.get(engine, run1).stats


def test_realized_quality_is_measured_on_a_fixed_sample_of_users(engine, redis_client, history,
                                                                  monkeypatch):
    from jobs.monitoring import monitor as monitoring

    events(engine, normal_day(DAY1))
    _, p1 = publish_day(engine, redis_client, history, DAY1, LISTS)
    # Users 1 and 2 miss; user 3 finds item 1, its list's first.
    events(engine, [*normal_day(DAY2), (1, 9, at(DAY2, 1)), (2, 8, at(DAY2, 2)),
                    (3, 1, at(DAY2, 3))])
    run2, _ = publish_day(engine, redis_client, history, DAY2, LISTS)
    served = f"model:{history}/publish:{p1}"
    every = monitor(engine, run2, MonitorConfig.load()).metrics
    assert every[("realized.users", served)] == 3
    assert every[("realized.ndcg", served)] == pytest.approx(1 / 3)
    # Three listed users for a sample of one: the stride is 3, so only user 3 counts.
    monkeypatch.setattr(monitoring, "REALIZED_SAMPLE_USERS", 1)
    sampled = monitor(engine, run2, MonitorConfig.load()).metrics
    assert (sampled[("realized.users", served)], sampled[("realized.ndcg", served)]) == (1, 1.0)
