"""The nightly DAG run by a real Airflow against the embedded PostgreSQL and Redis.

`airflow dags test` runs single dates; a backfill goes through a running
`airflow standalone` (scheduler, API server, DAG processor) on loopback.

Everything here runs as a second deployment, with schemas, roles and Redis keys
of its own names (``acme``), beside a default deployment that published a night
first in the same servers: the last test runs the rest of the flow under the
second deployment's names (quick start, rollback, reconcile) and finds the
default deployment exactly as it was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.contracts.redis import Keyspace
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, statement
from jobs.platform.names import Names
from jobs.platform.redis_client import connect
from jobs.platform.services.ports import free_port
from tests.e2e.conftest import cli_world, with_airflow_metadata

ACME = Names(schema="acme", bi_schema="acme_bi", redis_prefix="acme")
KEYS = Keyspace(ACME.redis_prefix)

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTUP_SECONDS = 180
BACKFILL_SECONDS = 600


@pytest.fixture(scope="module")
def airflow_env(spark, settings, endpoints, tmp_path_factory, airflow_metadata):
    """A default deployment with one published night, then the second deployment's data,
    a model trained as of the 18th and the environment of an Airflow home for it; yields
    (environment, the second deployment's engine, Redis, the default one's state)."""
    with cli_world(settings, endpoints) as (default_engine, _):
        assert main(["data", "generate", "--users", "300", "--items", "120", "--days", "30",
                     "--seed", "5", "--end-date", "2026-11-20"]) == 0
        assert main(["train", "--as-of", "2026-11-20"]) == 0
        assert main(["nightly", "--run-date", "2026-11-20"]) == 0
        admin = connect(services.redis_url(settings, "admin"))
        default_before = deployment_state(default_engine, admin, Names())
        assert default_before["redis"] and default_before["tables"]["prediction_versions"]

        engine = engine_for(endpoints.database_url, ACME)
        drop_schemas(engine)
        monkeypatch = pytest.MonkeyPatch()
        for setting, name in (("BATCHSCORE_SCHEMA", ACME.schema),
                              ("BATCHSCORE_BI_SCHEMA", ACME.bi_schema),
                              ("BATCHSCORE_REDIS_PREFIX", ACME.redis_prefix)):
            monkeypatch.setenv(setting, name)
        acme_settings = Settings.from_env()
        # Enough data for ALS to beat the popularity baseline: the first model must pass
        # its gates to serve.
        assert main(["data", "generate", "--users", "600", "--items", "200", "--days", "30",
                     "--seed", "9", "--end-date", "2026-11-20"]) == 0
        assert main(["train", "--as-of", "2026-11-18"]) == 0
        home = with_airflow_metadata(airflow_metadata, tmp_path_factory.mktemp("airflow"))
        # The tasks connect as the writer role; its password must never reach a log.
        database_url = services.database_url(acme_settings, services.WRITER)
        assert sa.engine.make_url(database_url).username == "acme_writer"
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "BATCHSCORE_HOME": str(settings.home),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_BATCHSCORE_POSTGRES": database_url,
            # Its own Redis user too, held to the keys of its prefix.
            "AIRFLOW_CONN_BATCHSCORE_REDIS": services.redis_url(acme_settings, "writer"),
            "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[1]"}',
        }
        client = connect(services.redis_url(acme_settings, "writer"))
        try:
            yield env, engine, client, (default_engine, admin, default_before)
        finally:
            monkeypatch.undo()
            drop_schemas(engine)
            engine.dispose()


def drop_schemas(engine: sa.engine.Engine) -> None:
    """Drop the schemas of ``engine``'s deployment (composed with its names)."""
    with engine.begin() as conn:
        conn.execute(statement(conn, "DROP SCHEMA IF EXISTS {bi} CASCADE"))
        conn.execute(statement(conn, "DROP SCHEMA IF EXISTS {schema} CASCADE"))


def deployment_state(engine: sa.engine.Engine, admin, names: Names) -> dict:
    """Every row of a deployment's tables (a digest per table) and every Redis key of its
    prefix with its value, and its Redis users' rules."""
    with engine.connect() as conn:
        tables = conn.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1"),
            {"s": names.schema}).scalars().all()
        digests = {table: conn.execute(sa.text(
            f'SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\'))'
            f' FROM "{names.schema}"."{table}" t')).one()._tuple() for table in tables}
    keys = sorted(admin.scan_iter(match=f"{names.redis_prefix}:*", count=1000))
    users = sorted(line for line in admin.acl_list()
                   if line.startswith((f"user {names.redis_writer_user} ",
                                       f"user {names.redis_reader_user} ")))
    home = Path(os.environ["BATCHSCORE_HOME"])
    files = [names.own_folder(home / "reports") / "index.html",
             home / "metrics" / "batchscore.prom"]
    return {"tables": digests, "redis": {key: admin.dump(key) for key in keys},
            "redis_users": users,
            "files": {path.name: path.read_bytes() for path in files if path.exists()}}


def writer_password(env: dict[str, str]) -> str:
    password = sa.engine.make_url(env["AIRFLOW_CONN_BATCHSCORE_POSTGRES"]).password
    assert password
    return password


def airflow(env: dict[str, str], *args: str, timeout: int = 900
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def published(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(statement(conn,
            "SELECT logical_date::text, count(*) FROM {schema}.prediction_versions"
            " WHERE status = 'published' GROUP BY logical_date ORDER BY logical_date"))]


def served(engine) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            "SELECT v.publish_id, v.logical_date::text FROM {schema}.serving s"
            " JOIN {schema}.prediction_versions v USING (publish_id)")).first()
    return tuple(row) if row else None


def test_dags_test_publishes_and_a_second_run_replaces_the_date(airflow_env) -> None:
    env, engine, client, _ = airflow_env
    first = airflow(env, "dags", "test", "batchscore_nightly", "2026-11-20")
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-5000:]
    assert writer_password(env) not in output
    assert published(engine) == [("2026-11-20", 1)]
    publish_id, day = served(engine)
    assert day == "2026-11-20"
    assert client.get(KEYS.pointer_key()) == str(publish_id).encode()
    with engine.connect() as conn:
        run = conn.execute(statement(conn,
            "SELECT run_id, status, stats FROM {schema}.runs WHERE kind = 'nightly'")).one()
        monitored = conn.execute(statement(conn,
            "SELECT metric, value FROM {bi}.run_metrics WHERE run_id = :r AND segment = ''"),
            {"r": run.run_id}).all()
    assert run.status == "succeeded" and run.stats["publish_id"] == publish_id
    # export_metrics wrote the run's gauges for Prometheus' textfile collector, in the
    # second deployment's own file.
    textfile = Path(env["BATCHSCORE_HOME"]) / "metrics" / "batchscore-acme.prom"
    assert f'run_id="{run.run_id}"' in textfile.read_text()
    assert "batchscore_predictions_rows" in textfile.read_text()
    # The DAG's last task wrote the run's report and recorded where.
    report = Path(env["BATCHSCORE_HOME"]) / "reports" / "acme" / f"{run.run_id}.html"
    assert run.stats["report"] == str(report) and "<svg" in report.read_text()
    # The monitor task ran after record_run and stored the run's metrics.
    assert "monitoring" in run.stats and "monitoring_error" not in run.stats
    assert dict(monitored)["predictions.rows"] > 0

    again = airflow(env, "dags", "test", "batchscore_nightly", "2026-11-20")
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    assert published(engine) == [("2026-11-20", 1)]
    new_id, _ = served(engine)
    assert new_id != publish_id
    assert client.get(KEYS.pointer_key()) == str(new_id).encode()


def test_a_backfill_publishes_one_version_per_date_without_taking_over(airflow_env) -> None:
    env, engine, _, _ = airflow_env
    served_before = served(engine)
    assert served_before is not None and served_before[1] == "2026-11-20"
    port = free_port()
    # Only the backfill's runs: the scheduler makes no scheduled run of its own.
    env = {**env, "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
           "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__API__HOST": "127.0.0.1"}
    log = Path(env["AIRFLOW_HOME"]) / "standalone.log"
    with log.open("w") as handle:
        server = subprocess.Popen([str(BIN / "airflow"), "standalone"], env=env,
                                  stdout=handle, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while airflow(env, "dags", "unpause", "batchscore_nightly", timeout=60).returncode != 0:
            assert time.monotonic() < deadline, log.read_text()[-5000:]
            time.sleep(5)
        # The model was trained as of the 18th: an earlier date pins it explicitly. Two
        # dates, one after the other: each publishes its own version and neither takes
        # over serving from the 20th.
        # The command and the standalone scheduler share Airflow's SQLite metadata file:
        # a write of the scheduler's can hold it past SQLite's wait, which rolls the
        # command back whole. It is tried again then, a few times.
        for _ in range(3):
            created = airflow(env, "backfill", "create", "--dag-id", "batchscore_nightly",
                              "--from-date", "2026-11-17", "--to-date", "2026-11-18",
                              "--dag-run-conf", '{"model_version": 1}',
                              "--max-active-runs", "1")
            if created.returncode == 0 or "database is locked" not in created.stderr:
                break
            time.sleep(5)
        assert created.returncode == 0, (created.stdout + created.stderr)[-5000:]
        deadline = time.monotonic() + BACKFILL_SECONDS
        while backfill_runs(engine) != [("2026-11-17", "succeeded", 1),
                                        ("2026-11-18", "succeeded", 1)]:
            assert time.monotonic() < deadline, (backfill_runs(engine),
                                                 log.read_text()[-5000:])
            time.sleep(2)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    # One version per date; older dates were published but never took over serving.
    assert published(engine) == [("2026-11-17", 1), ("2026-11-18", 1), ("2026-11-20", 1)]
    assert served(engine) == served_before
    assert writer_password(env) not in log.read_text()


def backfill_runs(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(statement(conn,
            "SELECT logical_date::text, status, model_version FROM {schema}.runs"
            " WHERE logical_date < '2026-11-20' ORDER BY logical_date"))]


def test_the_training_dag_registers_and_decides_on_promotion(airflow_env) -> None:
    env, engine, _, _ = airflow_env
    # A smaller ALS than the DAG's defaults: the run's params reach the training job, and
    # the fits it makes take a fraction of the time.
    result = airflow(env, "dags", "test", "batchscore_train", "2026-11-20", "--conf",
                     '{"rank": 8, "max_iter": 5}')
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert writer_password(env) not in output
    with engine.connect() as conn:
        versions = conn.execute(statement(conn,
            "SELECT version, status, trained_as_of::text FROM {schema}.model_versions"
            " ORDER BY version")).all()
        params = conn.execute(statement(conn,
            "SELECT params FROM {schema}.model_versions WHERE version = 2")).scalar()
        history = conn.execute(statement(conn,
            "SELECT version, status, reason FROM {bi}.model_status_history WHERE version = 2"
            " ORDER BY changed_at")).all()
    assert [tuple(v)[2] for v in versions] == ["2026-11-18", "2026-11-20"]
    assert (params["rank"], params["max_iter"]) == (8, 5)
    assert history[0].status in ("candidate", "rejected")
    events = asset_events(env, "batchscore://models/serving")
    if versions[1].status == "serving":
        # Promoted: the gates' numbers are the reason on record, and the asset was updated.
        assert "all gates passed" in history[-1].reason
        assert events == 1
    else:
        assert "not promoted" in output
        assert events == 0


def asset_events(env: dict[str, str], uri: str) -> int:
    """Events of an asset in the Airflow metadata database (SQLite under AIRFLOW_HOME)."""
    import sqlite3

    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as conn:
        return int(conn.execute(
            "SELECT count(e.id) FROM asset a LEFT JOIN asset_event e ON e.asset_id = a.id"
            " WHERE a.uri = ?", (uri,)).fetchone()[0])


def test_a_failing_gate_fails_the_task_with_the_contract_in_its_log(airflow_env, tmp_path
                                                                    ) -> None:
    env, engine, _, _ = airflow_env
    with engine.connect() as conn:
        before = conn.execute(statement(conn,
            "SELECT publish_id, status FROM {schema}.prediction_versions ORDER BY 1")).all()
    # A day's volume (the first night's baseline is the training snapshot's median day,
    # about 280 rows and 200 users), every rating out of range.
    bad = tmp_path / "day.csv"
    bad.write_text("user_id,item_id,rating,timestamp\n"
                   + "".join(f"{n},{n % 200 + 1},9,1795132800\n" for n in range(1, 501)))
    params = f'{{"input_path": "{bad}", "model_version": 1}}'
    result = airflow(env, "tasks", "test", "batchscore_nightly", "validate_inputs",
                     "2026-11-15", "-t", params)
    log = result.stdout + result.stderr
    # `airflow tasks test` exits 0 either way; the task's log says it failed and why.
    assert "Task failed with exception" in log and "ContractError" in log
    assert "input contract failed for 2026-11-15 (file:day.csv)" in log
    assert "expect_column_values_to_be_between(rating): rating within the configured range" in log
    with engine.connect() as conn:
        after = conn.execute(statement(conn,
            "SELECT publish_id, status FROM {schema}.prediction_versions ORDER BY 1")).all()
        failed = conn.execute(statement(conn,
            "SELECT count(*) FROM {schema}.runs WHERE logical_date = '2026-11-15'"
            " AND status = 'failed'")).scalar()
    assert after == before and failed == 1
    with engine.connect() as conn:
        recorded = conn.execute(statement(conn,
            "SELECT stats->>'report' FROM {schema}.runs WHERE logical_date = '2026-11-15'"
            " AND status = 'failed'")).scalar()
    # The failed run has its report too, naming the contract that stopped it.
    assert "input contract failed for 2026-11-15" in Path(recorded).read_text()


def test_the_rest_of_the_flow_under_its_names_leaves_the_default_deployment_untouched(
        airflow_env, capsys) -> None:
    _, engine, client, (default_engine, admin, default_before) = airflow_env
    capsys.readouterr()
    assert main(["quickstart", "--without-airflow"]) == 0
    out = capsys.readouterr().out
    assert "3/3 2026-11-20 already published" in out
    assert "SELECT * FROM acme_bi.recommendations WHERE user_id" in out

    served_before = served(engine)
    assert main(["rollback", "--reason", "second deployment's rollback"]) == 0
    rolled_to = served(engine)
    assert rolled_to != served_before
    assert client.get(KEYS.pointer_key()) == str(rolled_to[0]).encode()
    assert main(["reconcile"]) == 0
    assert "both stores agree" in capsys.readouterr().out

    with engine.connect() as conn:
        schemas = conn.execute(sa.text(
            "SELECT nspname FROM pg_namespace WHERE nspname IN ('acme', 'acme_bi')"
            " ORDER BY 1")).scalars().all()
    assert schemas == ["acme", "acme_bi"]
    assert deployment_state(default_engine, admin, Names()) == default_before
