"""The compose stack's PostgreSQL path without Docker: its init script on a fresh server,
then the migrations as the (non-superuser) owner, then each login at its job."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors

from jobs.cli import main
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import migrations
from jobs.platform.services.postgres import SUPERUSER, EmbeddedPostgres

REPO = Path(__file__).resolve().parents[2]
PASSWORDS = {"POSTGRES_PASSWORD": "root-pw", "BATCHSCORE_OWNER_PASSWORD": "owner-pw",
             "BATCHSCORE_WRITER_PASSWORD": "writer-pw", "BATCHSCORE_BI_PASSWORD": "bi-pw",
             "AIRFLOW_DB_PASSWORD": "airflow-pw"}


@pytest.fixture
def compose_postgres():
    """A fresh server (password auth) after docker/postgres-init.sh ran on it."""
    root = Path(tempfile.mkdtemp(prefix="batchscore-compose-"))
    server = EmbeddedPostgres(root / "postgres", PASSWORDS["POSTGRES_PASSWORD"])
    try:
        server.ensure_running()
        port = server._port()
        # The init script makes its own database batchscore, as the postgres image has none.
        admin = psycopg2.connect(server.url().replace("/batchscore", "/postgres"))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE batchscore")
        admin.close()
        env = {**os.environ, **PASSWORDS, "POSTGRES_USER": SUPERUSER, "PGHOST": "127.0.0.1",
               "PGPORT": str(port), "PGPASSWORD": PASSWORDS["POSTGRES_PASSWORD"],
               "PATH": f"{server.bin_dir}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(["bash", str(REPO / "docker" / "postgres-init.sh")], env=env,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        yield port
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def url(role: str, password: str, port: int) -> str:
    return f"postgresql://{role}:{password}@127.0.0.1:{port}/batchscore"


def test_the_owner_migrates_and_each_login_does_its_job(compose_postgres, tmp_path,
                                                        monkeypatch, capsys) -> None:
    port = compose_postgres
    owner = url("batchscore_owner", "owner-pw", port)
    writer = url("batchscore_writer", "writer-pw", port)
    bi = url("batchscore_bi", "bi-pw", port)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path))
    monkeypatch.setenv("BATCHSCORE_DATABASE_URL", owner)
    monkeypatch.setenv("BATCHSCORE_WRITER_DATABASE_URL", writer)
    monkeypatch.setenv("BATCHSCORE_BI_DATABASE_URL", bi)

    assert main(["db", "upgrade"]) == 0
    assert f"applied {len(migrations())} migration(s)" in capsys.readouterr().out
    assert main(["db", "url", "--role", "bi"]) == 0
    assert capsys.readouterr().out.strip() == bi

    settings = Settings.from_env()
    engine = services.database(settings)  # the writer, checked to be migrated
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT current_user").scalar() == "batchscore_writer"
        conn.exec_driver_sql("INSERT INTO batchscore.interactions (user_id, item_id, rating,"
                             " event_at) VALUES (1, 2, 1.0, now())")
        conn.exec_driver_sql("SELECT batchscore.create_version_table(5)")
        conn.exec_driver_sql("SELECT batchscore.drop_version_table(5)")
    engine.dispose()
    with (psycopg2.connect(writer) as conn, conn.cursor() as cur,
          pytest.raises(errors.InsufficientPrivilege)):
        cur.execute("CREATE TABLE public.mine (n int)")
    conn.close()
    with psycopg2.connect(bi) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bi.runs")
        assert cur.fetchone() == (0,)
        with pytest.raises(errors.InsufficientPrivilege):
            cur.execute("SELECT count(*) FROM batchscore.interactions")
    conn.close()
    with psycopg2.connect(url("airflow", "airflow-pw", port).replace("/batchscore",
                                                                      "/airflow")) as conn:
        assert conn.get_dsn_parameters()["dbname"] == "airflow"
    conn.close()
    assert not (tmp_path / "services").exists()
