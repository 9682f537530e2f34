"""The monitoring loop end to end: two nightlies on consecutive days, then a third on
shifted data through Airflow. The first version's realized quality is measured on the
second day's events, the shifted day's drift crosses its retrain level, the alert is
recorded, the nightly DAG's signal_retrain emits batchscore://signals/retrain (a real
scheduler starting batchscore_train on it is tests/e2e/test_scheduler_assets.py), and
every run has its report."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.orchestration.local_airflow import environment
from tests.e2e.conftest import cli_world, with_airflow_metadata

pytestmark = pytest.mark.spark

BIN = Path(sys.executable).parent
# Yesterday, so the shifted file's events are within the contract's age limit.
DAY3 = datetime.now(UTC).date() - timedelta(days=1)
DAY2, DAY1 = DAY3 - timedelta(days=1), DAY3 - timedelta(days=2)


def shifted_day(engine, like: date, day: date, path: Path) -> int:
    """``like``'s events moved to ``day``, each item swapped for its mirror in the
    popularity ranking (the most popular becomes the least): the same users and volume,
    another taste."""
    with engine.connect() as conn:
        ranking = conn.execute(sa.text(
            "SELECT item_id FROM batchscore.interactions GROUP BY item_id"
            " ORDER BY count(*) DESC, item_id")).scalars().all()
        events = conn.execute(sa.text(
            "SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
            " FROM batchscore.interactions WHERE event_at >= :d AND event_at < :d + 1"),
            {"d": like}).all()
    mirror = dict(zip(ranking, reversed(ranking), strict=True))
    shift = (day - like).days * 86_400
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["user_id", "item_id", "rating", "timestamp"])
        for user, item, rating, at in events:
            out.writerow([user, mirror[item], rating, at + shift])
    return len(events)


def test_two_nights_then_a_shifted_one_measure_alert_signal_and_report(
        spark, settings, endpoints, tmp_path, airflow_metadata) -> None:
    with cli_world(settings, endpoints) as (engine, _):
        assert main(["data", "generate", "--users", "600", "--items", "200", "--days", "30",
                     "--seed", "9", "--end-date", DAY2.isoformat()]) == 0
        assert main(["train", "--as-of", DAY1.isoformat()]) == 0
        assert main(["nightly", "--run-date", DAY1.isoformat()]) == 0
        assert main(["nightly", "--run-date", DAY2.isoformat()]) == 0
        shifted = tmp_path / "shifted.csv"
        assert shifted_day(engine, DAY2, DAY3, shifted) > 0

        env = environment(settings)
        env["AIRFLOW_CONN_SPARK_DEFAULT"] = '{"conn_type": "spark", "host": "local[1]"}'
        with_airflow_metadata(airflow_metadata, Path(env["AIRFLOW_HOME"]))
        done = subprocess.run([str(BIN / "airflow"), "dags", "test", "batchscore_nightly",
                               DAY3.isoformat(), "--conf",
                               json.dumps({"input_path": str(shifted)})],
                              env=env, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

        with engine.connect() as conn:
            nights = conn.execute(sa.text(
                "SELECT run_id, logical_date, status, stats FROM batchscore.runs"
                " WHERE kind = 'nightly' ORDER BY logical_date")).all()
            metrics = {(row.run_id, row.metric, row.segment): row.value for row in conn.execute(
                sa.text("SELECT run_id, metric, segment, value FROM bi.run_metrics"))}
            alerts = conn.execute(sa.text(
                "SELECT run_id, level, metric, segment FROM bi.alerts")).all()
        assert [(n.logical_date, n.status) for n in nights] == [
            (DAY1, "succeeded"), (DAY2, "succeeded"), (DAY3, "succeeded")]
        run1, run2, run3 = (n.run_id for n in nights)
        first_publish = nights[0].stats["publish_id"]

        # Day 2 measures what day 1 served, against the popularity list on the same events.
        served = f"model:1/publish:{first_publish}"
        realized = {metric: metrics[(run2, f"realized.{metric}", served)]
                    for metric in ("hit_rate", "recall", "ndcg", "map", "users")}
        assert realized["users"] > 0 and 0 < realized["ndcg"] <= 1
        assert 0 < realized["hit_rate"] <= 1 and 0 < realized["recall"] <= 1
        assert (run2, "realized.ndcg", f"popularity/publish:{first_publish}") in metrics

        # The shifted day drifts past the retrain level; the normal day does not warn.
        assert metrics[(run2, "input.item_popularity_psi", "vs_training")] < 0.1
        assert metrics[(run3, "input.item_popularity_psi", "vs_training")] > 0.25
        assert {a.level for a in alerts if a.run_id == run2} == set()
        run3_alerts = {(a.level, a.metric, a.segment) for a in alerts if a.run_id == run3}
        assert ("retrain", "input.item_popularity_psi", "vs_training") in run3_alerts

        # The DAG's signal_retrain updated the asset, naming the run.
        with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as conn:
            extras = [json.loads(extra) for (extra,) in conn.execute(
                "SELECT e.extra FROM asset a JOIN asset_event e ON e.asset_id = a.id"
                " WHERE a.uri = 'batchscore://signals/retrain'")]
        assert [extra["run_id"] for extra in extras] == [run3]

        # Every run has its report, and the index lists them.
        for night in nights:
            report = Path(night.stats["report"])
            assert report.exists() and "<svg" in report.read_text()
        index = (settings.home / "reports" / "index.html").read_text()
        assert all(run_id in index for run_id in (run1, run2, run3))
