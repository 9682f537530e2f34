"""The in-process nightly's alerts: a failed run raises one, and after monitoring the
crossed levels raise one and the metrics are written for Prometheus."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration import nightly
from jobs.orchestration.after_monitor import after_monitor
from jobs.orchestration.run_state import NightlyConfig
from jobs.platform import runs


def config(endpoints, home: Path) -> NightlyConfig:
    return NightlyConfig(run_date=date(2026, 11, 20), database_url=endpoints.database_url,
                                 redis_url=endpoints.redis_url, home=home, k=5)


def test_a_failed_in_process_run_raises_a_failed_alert_without_its_password(
        engine, endpoints, redis_client, tmp_path: Path) -> None:
    artifact = tmp_path / "model"
    artifact.mkdir()
    register(engine, NewModel(created_by="test", trained_as_of=date(2026, 11, 1), params={},
                              metrics={}, data_snapshot={}, code_version="test",
                              artifact_uri=artifact.as_uri()))

    def prepare(engine, state):
        raise RuntimeError("scoring lost postgresql://batchscore:pw-31337@db/batchscore")

    with pytest.raises(RuntimeError, match="scoring lost"):
        nightly.execute(config(endpoints, tmp_path / "home"), prepare)

    with engine.connect() as conn:
        run = conn.execute(sa.text("SELECT run_id, status FROM batchscore.runs")).one()
        alert = conn.execute(sa.text(
            "SELECT run_id, level, channel, delivered, message FROM bi.alerts")).one()
    assert run.status == "failed"
    assert (alert.run_id, alert.level, alert.channel, alert.delivered) == (
        run.run_id, "failed", "log", True)
    assert ("RuntimeError: scoring lost postgresql://batchscore:***@db/batchscore"
            in alert.message)
    assert "pw-31337" not in alert.message


def test_after_monitor_alerts_the_crossed_levels_and_writes_the_metrics(
        engine, endpoints, model_version, tmp_path: Path) -> None:
    run_id = runs.start(engine, "nightly", date(2026, 11, 20), model_version)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO batchscore.run_metrics (run_id, metric, segment, value)"
                             " VALUES (:r, 'realized.ndcg_share', 'model:1', 0.55)"), {"r": run_id})
    monitored = {"run_id": run_id, "retrain": True, "crossings": [
        {"metric": "realized.ndcg_share", "segment": "model:1", "value": 0.55,
         "level": "retrain", "threshold": 0.7, "direction": "below"}]}

    done = after_monitor(engine, config(endpoints, tmp_path), monitored)

    assert done["alert"]["level"] == "retrain" and done["alert"]["delivered"] is True
    assert done["retrain"] is True
    textfile = tmp_path / "metrics" / "batchscore.prom"
    assert done["metrics_written_to"] == str(textfile)
    [family] = [f for f in text_string_to_metric_families(textfile.read_text())
                if f.name == "batchscore_realized_ndcg_share"]
    assert [(s.labels, s.value) for s in family.samples] == [({"segment": "model:1"}, 0.55)]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT level, metric, segment FROM bi.alerts")).all()
    assert [tuple(r) for r in rows] == [("retrain", "realized.ndcg_share", "model:1")]

    quiet = after_monitor(engine, config(endpoints, tmp_path),
                                  {"run_id": run_id, "retrain": False, "crossings": []})
    assert quiet["alert"] is None and quiet["retrain"] is False
