"""The asset wiring run by a real Airflow scheduler (`airflow standalone` on loopback):
a nightly that crossed a retrain level starts `batchscore_train`, one that did not
starts nothing, and a promotion starts `batchscore_rescore`, which asks the nightly
to score the served date again with the new model.

The training and nightly runs are only asserted to be created, with what
triggered them: the Spark connection points nowhere, so the train task fails at
once instead of training, and the nightly DAG stays paused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from jobs.lifecycle import registry
from jobs.lifecycle.registry import NewModel, register
from jobs.platform import runs, services
from jobs.platform.db import engine_for, upgrade
from jobs.platform.redis_client import connect
from jobs.platform.services.ports import free_port
from tests.conftest import reset_database
from tests.e2e.conftest import with_airflow_metadata
from tests.integration.test_alerts import Mailbox, body_of, smtp_connection
from tests.integration.test_publish import publish_day

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTUP_SECONDS = 240
WAIT_SECONDS = 240
DAY = date(2026, 11, 20)
# The nightly stays paused: the run a re-score asks for is only created.
UNPAUSED = ("batchscore_rescore", "batchscore_train", "probe_failure", "probe_monitor",
            "probe_promotion")
GATES = {"passed": True, "reason": "all gates passed", "serving_version": None, "checks": []}


def airflow(env: dict[str, str], *args: str, timeout: int = 120
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def model(engine, trained_as_of: date) -> int:
    return register(engine, NewModel(
        created_by="test", trained_as_of=trained_as_of, params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere",
        gates=GATES)).version


@pytest.fixture(scope="module")
def scheduler(settings, endpoints, tmp_path_factory, airflow_metadata) -> Iterator[dict]:
    """Model 1 serves 2026-11-20; `airflow standalone` runs with the real DAGs and the probes."""
    engine = engine_for(endpoints.database_url)
    reset_database(engine)
    upgrade(engine)
    connect(services.redis_url(settings, "admin")).flushdb()
    client = connect(endpoints.redis_url)  # the writer, as publishing connects
    first = model(engine, date(2026, 11, 10))
    publish_day(engine, client, first, DAY, {1: [(10, 0.9), (11, 0.8)], 2: [(12, 0.7)]})
    nightly_run = runs.start(engine, "nightly", DAY, first)

    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port,
                      authenticator=mailbox.authenticate, auth_require_tls=False)
    smtp.start()

    home = with_airflow_metadata(airflow_metadata, tmp_path_factory.mktemp("airflow-assets"))
    dags = home / "dags"
    dags.mkdir()
    for dag_file in (REPO / "dags").glob("*.py"):
        shutil.copy(dag_file, dags)
    shutil.copy(REPO / "tests/e2e/airflow_probes/probe_signals.py", dags)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # The DAG files and their tasks import this checkout's jobs package.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "BATCHSCORE_HOME": str(home / "batchscore"),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # Two cores: a few task processes at a time are plenty.
        "AIRFLOW__CORE__PARALLELISM": "4",
        # The REST API without a login, on loopback, for this throwaway Airflow.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW_CONN_BATCHSCORE_POSTGRES": endpoints.database_url,
        "AIRFLOW_CONN_BATCHSCORE_REDIS": endpoints.redis_url,
        # Alerts by email, through an Airflow SMTP connection to the server above.
        "BATCHSCORE_ALERT_CHANNEL": "smtp",
        "BATCHSCORE_ALERT_EMAILS": "oncall@example.org",
        "BATCHSCORE_ALERT_SMTP_CONN_ID": "batchscore_alerts_smtp",
        "AIRFLOW_CONN_BATCHSCORE_ALERTS_SMTP": smtp_connection(smtp_port),
        # Refused by the Spark provider at once: the train task fails instead of training.
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[1]",
                                                  "extra": {"spark-home": "/nowhere"}}),
    }
    log = home / "standalone.log"
    with log.open("w") as handle:
        server = subprocess.Popen([str(BIN / "airflow"), "standalone"], env=env, stdout=handle,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        # `dags unpause` succeeds before the DAG processor has parsed a DAG: wait for it.
        while len(parsed(env)) < len(UNPAUSED) + 1:
            assert time.monotonic() < deadline, (parsed(env), log.read_text()[-5000:])
            time.sleep(3)
        for dag_id in UNPAUSED:
            unpaused = airflow(env, "dags", "unpause", dag_id)
            assert unpaused.returncode == 0, unpaused.stderr[-3000:]
        assert metadata(env, "SELECT dag_id FROM dag WHERE NOT is_paused ORDER BY 1") == [
            (dag_id,) for dag_id in sorted(UNPAUSED)]
        # Unpaused, the train DAG makes its last Sunday's scheduled run at once; at
        # max_active_runs it would hold back the asset-triggered run: mark it failed.
        [(weekly, run_type, _, _)] = created(env, "batchscore_train", log)
        assert run_type == "scheduled"
        api(port, "PATCH", f"/api/v2/dags/batchscore_train/dagRuns/{weekly}",
            {"state": "failed"})
        assert [run[2] for run in dag_runs(env, "batchscore_train")] == ["failed"]
        yield {"env": env, "engine": engine, "log": log, "nightly_run": nightly_run,
               "first": first, "mailbox": mailbox}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        smtp.stop()
        engine.dispose()


def api(port: int, method: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def metadata(env: dict[str, str], query: str, *args) -> list[tuple]:
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db", timeout=30) as conn:
        return conn.execute(query, args).fetchall()


def parsed(env: dict[str, str]) -> list[str]:
    try:
        return [row[0] for row in metadata(
            env, "SELECT dag_id FROM dag WHERE dag_id IN (?, ?, ?, ?, ?, ?)",
            "batchscore_nightly", *UNPAUSED)]
    except sqlite3.OperationalError:  # locked while the scheduler writes
        return []


def dag_runs(env: dict[str, str], dag_id: str) -> list[tuple]:
    return metadata(env, "SELECT run_id, run_type, state, conf FROM dag_run WHERE dag_id = ?"
                         " ORDER BY id", dag_id)


def triggering_events(env: dict[str, str], dag_id: str) -> list[tuple]:
    """(run_type, asset uri, event extra) of each asset event that triggered a run of dag_id."""
    return [(run_type, uri, json.loads(extra) if extra else {}) for run_type, uri, extra in
            metadata(env,
                     "SELECT r.run_type, a.uri, e.extra FROM dag_run r"
                     " JOIN dagrun_asset_event t ON t.dag_run_id = r.id"
                     " JOIN asset_event e ON e.id = t.event_id JOIN asset a ON a.id = e.asset_id"
                     " WHERE r.dag_id = ? ORDER BY r.id", dag_id)]


def asset_events(env: dict[str, str], uri: str) -> int:
    return metadata(env, "SELECT count(e.id) FROM asset_event e JOIN asset a ON a.id = e.asset_id"
                         " WHERE a.uri = ?", uri)[0][0]


def finished(env: dict[str, str], dag_id: str, log: Path, runs_expected: int) -> list[tuple]:
    """Wait, bounded, until dag_id has ``runs_expected`` runs, all finished."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = dag_runs(env, dag_id)
        if len(found) == runs_expected and all(r[2] in ("success", "failed") for r in found):
            return found
        assert time.monotonic() < deadline, (found, log.read_text()[-5000:])
        time.sleep(3)


def created(env: dict[str, str], dag_id: str, log: Path) -> list[tuple]:
    """Wait, bounded, until the scheduler made a run of dag_id."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (found := dag_runs(env, dag_id)):
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        time.sleep(3)
    return found


def test_a_crossed_retrain_level_starts_training_and_none_starts_nothing(scheduler) -> None:
    env, log = scheduler["env"], scheduler["log"]
    quiet = airflow(env, "dags", "trigger", "probe_monitor", "--conf",
                    json.dumps({"run_id": scheduler["nightly_run"], "retrain": False}))
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    [(_, _, state, _)] = finished(env, "probe_monitor", log, 1)
    assert state == "success"
    # signal_retrain was skipped: no asset event, so no training run.
    assert metadata(env, "SELECT state FROM task_instance WHERE dag_id = 'probe_monitor'"
                         " AND task_id = 'signal_retrain'") == [("skipped",)]
    assert asset_events(env, "batchscore://signals/retrain") == 0
    assert [run[1] for run in dag_runs(env, "batchscore_train")] == ["scheduled"]

    drifted = airflow(env, "dags", "trigger", "probe_monitor", "--conf",
                      json.dumps({"run_id": scheduler["nightly_run"], "retrain": True}))
    assert drifted.returncode == 0, drifted.stderr[-3000:]
    deadline = time.monotonic() + WAIT_SECONDS
    while len(train_runs := dag_runs(env, "batchscore_train")) < 2:
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        time.sleep(3)
    assert [run[1] for run in train_runs] == ["scheduled", "asset_triggered"]
    [(run_type, uri, extra)] = triggering_events(env, "batchscore_train")
    assert (run_type, uri) == ("asset_triggered", "batchscore://signals/retrain")
    assert extra == {"run_id": scheduler["nightly_run"], "logical_date": "2026-11-20",
                     "model_version": scheduler["first"],
                     "crossings": [{"metric": "input.item_popularity_psi",
                                    "segment": "vs_training", "value": 0.41,
                                    "level": "retrain", "threshold": 0.25,
                                    "direction": "above"}]}
    assert asset_events(env, "batchscore://signals/retrain") == 1
    # The alert task mailed the crossing (and was skipped for the run without one).
    finished(env, "probe_monitor", log, 2)
    assert metadata(env, "SELECT state FROM task_instance WHERE dag_id = 'probe_monitor'"
                         " AND task_id = 'alert' ORDER BY id") in (
        [("skipped",), ("success",)], [("success",), ("skipped",)])
    [(recipients, message)] = scheduler["mailbox"].messages
    assert recipients == ["oncall@example.org"]
    assert f"crossed by run {scheduler['nightly_run']} (2026-11-20" in message["Subject"]
    assert ("- [retrain] input.item_popularity_psi (vs_training) = 0.41 is above its retrain "
            "level 0.25") in body_of(message)


def test_a_promotion_rescores_the_served_date_with_the_new_model(scheduler) -> None:
    env, log, engine = scheduler["env"], scheduler["log"], scheduler["engine"]
    second = model(engine, date(2026, 11, 21))
    registry.promote(engine, second, "test", "promoted for the scheduler test")

    promoted = airflow(env, "dags", "trigger", "probe_promotion")
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    [(_, run_type, state, _)] = finished(env, "batchscore_rescore", log, 1)
    assert (run_type, state) == ("asset_triggered", "success")
    assert [(t, uri) for t, uri, _ in triggering_events(env, "batchscore_rescore")] == [
        ("asset_triggered", "batchscore://models/serving")]
    # The nightly (paused here) was asked to score the served date with model 2, pinned.
    [(_, nightly_type, _, conf)] = created(env, "batchscore_nightly", log)
    assert nightly_type == "operator_triggered"
    assert json.loads(conf) == {"run_date": "2026-11-20", "model_version": second}


def test_a_failed_task_mails_a_failed_alert_without_the_password(scheduler) -> None:
    env, log, engine, mailbox = (scheduler["env"], scheduler["log"], scheduler["engine"],
                                 scheduler["mailbox"])
    before = len(mailbox.messages)
    failed = airflow(env, "dags", "trigger", "probe_failure")
    assert failed.returncode == 0, failed.stderr[-3000:]
    [(dag_run, _, state, _)] = finished(env, "probe_failure", log, 1)
    assert state == "failed"
    deadline = time.monotonic() + WAIT_SECONDS
    while len(mailbox.messages) == before:
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        time.sleep(2)
    [(_, message)] = mailbox.messages[before:]
    assert message["Subject"] == "batchscore: a nightly before its run began failed"
    body = body_of(message)
    assert (f"task publish of DAG run {dag_run} failed: RuntimeError: lost "
            "postgresql://batchscore:***@db:5432/batchscore") in body
    assert "pw-in-a-url" not in message.as_string()
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT level, channel, delivered, message FROM bi.alerts WHERE level = 'failed'")
        ).one()
    assert (row.level, row.channel, row.delivered) == ("failed", "smtp", True)
    assert "pw-in-a-url" not in row.message
