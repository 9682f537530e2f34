"""A real Airflow on this machine, wired to batchscore's DAGs and servers.

Used by ``make airflow`` (``batchscore airflow start``) and by the quick start,
which runs the nightly DAG once with ``airflow dags test``. Airflow's home is
``BATCHSCORE_HOME/airflow``; its connections point at the configured servers,
or at the embedded ones (PostgreSQL as the writer role).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import statement

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"
DEFAULT_PORT = 8080


class AirflowError(RuntimeError):
    """An Airflow command failed; the message points at its log."""


def environment(settings: Settings, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The environment Airflow commands run in; connections set by the caller win."""
    endpoints = services.resolve(settings)
    env = dict(os.environ)
    home = settings.home / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "BATCHSCORE_HOME": str(settings.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
    })
    # The DAGs' tasks connect as the writer role, never as the owner.
    env.setdefault("AIRFLOW_CONN_BATCHSCORE_POSTGRES",
                   services.database_url(settings, services.WRITER))
    env.setdefault("AIRFLOW_CONN_BATCHSCORE_REDIS", endpoints.redis_url)
    env.setdefault("AIRFLOW_CONN_SPARK_DEFAULT",
                   json.dumps({"conn_type": "spark", "host": settings.spark_master}))
    return env


def airflow_command(env: dict[str, str], *args: str, log: Path) -> None:
    """Run ``airflow ARGS``, its output going to ``log``; raise with the log's tail on failure."""
    airflow = Path(sys.executable).parent / "airflow"
    with log.open("a") as handle:
        handle.write(f"$ airflow {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run([str(airflow), *args], env=env, stdout=handle,
                                stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise AirflowError(f"`airflow {' '.join(args)}` failed ({result.returncode}); "
                           f"full log: {log}\n{tail}")


MIGRATED_MARKER = "batchscore-migrated"


def migration_stamp(env: dict[str, str]) -> str:
    """What a migration of this home's metadata database is good for: the installed
    Airflow release and the database it migrated (named by a digest, not its URL,
    which may hold a password)."""
    from importlib.metadata import version

    home = Path(env["AIRFLOW_HOME"])
    database = (env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
                or f"sqlite:///{home / 'airflow.db'}")
    digest = hashlib.sha256(database.encode()).hexdigest()[:16]
    return f"apache-airflow {version('apache-airflow')}; database {digest}\n"


def needs_migration(env: dict[str, str]) -> bool:
    """False only when this Airflow release migrated this home's own SQLite database
    already. A database set by ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` always needs
    it: it may have been replaced without this home knowing."""
    if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return True
    home = Path(env["AIRFLOW_HOME"])
    marker = home / MIGRATED_MARKER
    return not ((home / "airflow.db").exists() and marker.exists()
                and marker.read_text() == migration_stamp(env))


def migrate(env: dict[str, str], log: Path) -> None:
    """``airflow db migrate`` when :func:`needs_migration` (it takes half a minute even
    when there is nothing to do)."""
    if not needs_migration(env):
        logger.info("airflow: metadata database already migrated by this release")
        return
    logger.info("airflow: preparing its metadata database (log: %s)", log)
    airflow_command(env, "db", "migrate", log=log)
    mark_migrated(env)


def mark_migrated(env: dict[str, str]) -> None:
    """Record that the home's metadata database is migrated for this Airflow release."""
    (Path(env["AIRFLOW_HOME"]) / MIGRATED_MARKER).write_text(migration_stamp(env))


@dataclass(frozen=True)
class DagRun:
    """A nightly run Airflow made: its batchscore run, the version it published, its log."""

    run_id: str
    publish_id: int
    log: Path


def run_nightly(settings: Settings, run_date: date) -> DagRun:
    """Run the nightly DAG once for ``run_date`` through Airflow (``airflow dags test``).

    Raises :class:`AirflowError` pointing at the log unless the run published.
    """


    engine = services.database(settings)
    env = environment(settings)
    log = settings.home / "airflow" / f"nightly-{run_date.isoformat()}.log"
    log.write_text("")
    migrate(env, log)
    logger.info("airflow: running batchscore_nightly for %s (airflow dags test)", run_date)
    airflow_command(env, "dags", "test", "batchscore_nightly", run_date.isoformat(), log=log)
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            "SELECT run_id, status, stats->>'publish_id' FROM {schema}.runs"
            " WHERE kind = 'nightly' AND logical_date = :d ORDER BY started_at DESC LIMIT 1"),
            {"d": run_date}).first()
    engine.dispose()
    if row is None or row.status != "succeeded" or row[2] is None:
        raise AirflowError(f"the nightly DAG did not publish {run_date}; see {log}")
    return DagRun(run_id=row.run_id, publish_id=int(row[2]), log=log)


def start(settings: Settings, port: int = DEFAULT_PORT) -> int:
    """``airflow standalone`` in the foreground, after printing how to reach it."""
    env = environment(settings, port)
    log = settings.home / "airflow" / "migrate.log"
    log.write_text("")
    migrate(env, log)
    passwords = settings.home / "airflow" / "simple_auth_manager_passwords.json.generated"
    print(f"Airflow UI:  http://127.0.0.1:{port}")
    print(f"Login:       admin, password printed below by Airflow and kept in {passwords}")
    print(f"DAGs:        {DAGS_FOLDER}; connections batchscore_postgres, batchscore_redis, "
          "spark_default point at the servers batchscore uses")
    print("Stop with Ctrl-C.", flush=True)
    airflow = Path(sys.executable).parent / "airflow"
    return subprocess.call([str(airflow), "standalone"], env=env)
