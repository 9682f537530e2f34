"""Generated data and the quick start through Airflow on a fresh home, and no password
leaks: after them and a failing Airflow run, with every password set to one that needs URL
encoding, no file the runs wrote (batchscore's and Airflow's logs, Spark's output in them,
Data Docs, reports, metrics, the servers' own logs and data), no row batchscore keeps and no
--json output holds any of them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.orchestration.local_airflow import environment
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for
from jobs.platform.secrets import secrets_dir

pytestmark = pytest.mark.spark

BIN = Path(sys.executable).parent
# Each needs encoding in a URL (@ : / % # ? & = +) and none is URL-safe as it is.
PASSWORDS = {
    "postgres": "su@per:pw/%41#1?",
    "postgres_batchscore_owner": "ow@ner:pw/%42#2&x=1",
    "postgres_batchscore_writer": "wr@iter:pw/%43#3+y",
    "postgres_batchscore_bi": "b@i:pw/%44#4?z=2",
    "redis": "ad@min:pw/%45#5&",
    "redis_batchscore_writer": "rw@riter:pw/%46#6=",
    "redis_batchscore_reader": "rr@eader:pw/%47#7+",
}


def leaked_forms() -> dict[bytes, str]:
    """Every way a password could be written: as it is, and URL-encoded both ways."""
    forms = {}
    for name, password in PASSWORDS.items():
        for form in {password, quote(password, safe=""), quote_plus(password)}:
            forms[form.encode()] = name
    return forms


def leaks_in(data: bytes) -> set[str]:
    return {name for form, name in leaked_forms().items() if form in data}


@pytest.fixture(scope="module")
def world(spark) -> Iterator[Settings]:
    """A fresh home, nothing in it but the passwords above, which its servers start with."""
    home = Path(tempfile.mkdtemp(prefix="batchscore-secrets-"))
    folder = secrets_dir(home)
    folder.mkdir(mode=0o700)
    for name, password in PASSWORDS.items():
        (folder / name).write_text(password)
        (folder / name).chmod(0o600)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("BATCHSCORE_HOME", str(home))
    for variable in ("BATCHSCORE_DATABASE_URL", "BATCHSCORE_REDIS_URL",
                     "BATCHSCORE_REDIS_READER_URL"):
        monkeypatch.delenv(variable, raising=False)
    settings = Settings.from_env({"BATCHSCORE_HOME": str(home)})
    try:
        yield settings
    finally:
        monkeypatch.undo()
        services.stop_embedded(settings)
        shutil.rmtree(home, ignore_errors=True)


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True,
                          text=True, timeout=900, check=False)


def files_under(root: Path, skip: Path) -> Iterator[Path]:
    for dirpath, _, filenames in os.walk(root):
        if Path(dirpath).is_relative_to(skip):
            continue
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def test_the_quick_start_through_airflow_and_a_failing_run_leave_no_password(
        world, capsys) -> None:
    settings = world
    outputs: list[str] = []
    # Data first, through the CLI and the servers with these passwords: a smaller set than
    # the quick start's sample (whose generation tests/e2e/test_cli.py runs), so the model
    # and the nightly below take a fraction of the time; what they write is the same.
    capsys.readouterr()
    assert main(["data", "generate", "--users", "300", "--items", "120", "--days", "30",
                 "--seed", "5"]) == 0
    captured = capsys.readouterr()
    outputs.append(captured.out + captured.err)
    # The quick start on it: a model, and its first nightly run through Airflow
    # (`airflow dags test`, its output in the run's log under the home).
    assert main(["quickstart"]) == 0
    captured = capsys.readouterr()
    outputs.append(captured.out + captured.err)
    assert "1/3 interactions already loaded: reusing them" in captured.out
    assert "2/3 training a model (Spark ALS)" in captured.out
    assert "through Airflow (the batchscore_nightly DAG)" in captured.out
    assert "served:    version 1 for " in captured.out
    # The passwords really are the ones in use: each URL carries its role's, encoded.
    writer_url = services.database_url(settings, services.WRITER)
    assert quote(PASSWORDS["postgres_batchscore_writer"], safe="") in writer_url

    engine = engine_for(services.admin_url(settings))
    with engine.connect() as conn:
        good_day = conn.execute(sa.text("SELECT logical_date FROM batchscore.runs"
                                        " WHERE kind = 'nightly'")).scalar_one()
    engine.dispose()
    bad_day = good_day - timedelta(days=1)
    env = environment(settings)
    env["AIRFLOW_CONN_SPARK_DEFAULT"] = '{"conn_type": "spark", "host": "local[1]"}'
    # The day before, every rating of which is out of range: the input contract fails the
    # task (`tasks test` runs it once, without the DAG's retries, and exits 0 either way).
    # The model was trained as of the quick start's day: the earlier day pins it.
    bad = settings.home / "bad-day.csv"
    at = int(datetime.combine(bad_day, time(12), UTC).timestamp())
    bad.write_text("user_id,item_id,rating,timestamp\n"
                   + "".join(f"{n},{n % 120 + 1},9,{at}\n" for n in range(1, 401)))
    failing = airflow(env, "tasks", "test", "batchscore_nightly", "validate_inputs",
                      bad_day.isoformat(), "-t",
                      json.dumps({"input_path": str(bad), "model_version": 1}))
    outputs.append(failing.stdout + failing.stderr)
    assert "Task failed with exception" in outputs[-1]

    # As the superuser: every row, yoyo's bookkeeping included.
    engine = engine_for(services.admin_url(settings))
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT logical_date::text, status, error FROM"
                                    " batchscore.runs WHERE kind = 'nightly'"
                                    " ORDER BY logical_date")).all()
        assert [(r[0], r[1]) for r in runs] == [(bad_day.isoformat(), "failed"),
                                                 (good_day.isoformat(), "succeeded")]
        assert f"input contract failed for {bad_day}" in runs[0].error
        # Every row batchscore keeps, in both schemas, as text.
        relations = conn.execute(sa.text(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname IN ('batchscore', 'bi')"
            " AND c.relkind IN ('r', 'v', 'p')")).all()
        rows = []
        for schema, relation in relations:
            rows += conn.execute(sa.text(
                f'SELECT t::text FROM "{schema}"."{relation}" t')).scalars().all()
        assert any("bad-day.csv" in row for row in rows)  # the failure is recorded
    engine.dispose()

    for command in (["status", "--json"], ["runs", "list", "--json"],
                    ["models", "list", "--json"], ["versions", "list", "--json"],
                    ["reconcile", "--json"], ["rejects", "list", "--json"],
                    ["recs", "1", "--json"]):
        assert main(command) == 0, command
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)

    # `dags test` prints the task logs, spark-submit's output of the score task among them.
    assert "Spark-Submit cmd" in (settings.home / "airflow" / f"nightly-{good_day}.log"
                                  ).read_text()
    reports = list((settings.home / "reports").glob("*.html"))
    assert len(reports) >= 2 and list((settings.home / "gx").rglob("*.html"))

    # The scan finds a password where there is one: in its own secret file.
    assert leaks_in((secrets_dir(settings.home) / "redis").read_bytes()) == {"redis"}
    found = {}
    for path in files_under(settings.home, skip=secrets_dir(settings.home)):
        leaked = leaks_in(path.read_bytes())
        if leaked:
            found[str(path)] = leaked
    for index, text in enumerate(outputs + rows):
        leaked = leaks_in(text.encode())
        if leaked:
            found[f"output {index}"] = leaked
    assert found == {}

    # The quick start's servers stop on request, both of them.
    capsys.readouterr()
    assert main(["services", "stop"]) == 0
    assert capsys.readouterr().out == "postgres: stopped\nredis: stopped\n"
