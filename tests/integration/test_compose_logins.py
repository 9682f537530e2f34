"""The compose stack's PostgreSQL path without Docker: its init script on a fresh server,
then the migrations as the (non-superuser) owner, then each login at its job. And its
cluster profile's Redis path: six nodes started by docker/redis/start.sh, formed into a
cluster by docker/redis/create-cluster.sh, then the writer publishing and the reader
reading through it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest
import redis
from psycopg2 import errors

from jobs.cli import main
from jobs.client import RecommendationClient
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import migrations
from jobs.platform.redis_client import RedisPermissionError, connect
from jobs.platform.services.debian import MissingServerError, require_redis_server
from jobs.platform.services.postgres import SUPERUSER, EmbeddedPostgres
from jobs.platform.services.redis_cluster import cluster_port, kill_unless_gone
from tests.integration.test_publish import DAY1, KEYS, publish_day

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


REDIS_PASSWORDS = {"REDIS_ADMIN_PASSWORD": "admin-pw-1", "REDIS_WRITER_PASSWORD": "writer-pw-2",
                   "REDIS_READER_PASSWORD": "reader-pw-3"}
# What the container adds to the script's command: docker-entrypoint.sh runs it; here,
# on a port of its own on loopback, in the background, with its process id written, and
# the command the script gave kept (the server rewrites its own process title).
NODE_ENTRYPOINT = """#!/bin/sh
printf '%s\\n' "$*" > "$REDIS_DATA_DIR/command"
exec "$@" --port "$NODE_PORT" --bind 127.0.0.1 --daemonize yes \\
    --pidfile "$REDIS_DATA_DIR/redis.pid" --logfile "$REDIS_DATA_DIR/server.log"
"""


def cluster_nodes(admin: redis.Redis) -> list[list[str]]:
    text = admin.execute_command("CLUSTER", "NODES")
    return [line.split() for line in (text.decode() if isinstance(text, bytes) else text)
            .splitlines() if line]


def node_admin(port: int) -> redis.Redis:
    return connect(f"redis://default:{REDIS_PASSWORDS['REDIS_ADMIN_PASSWORD']}"
                   f"@127.0.0.1:{port}/0", socket_timeout=2)


def form_cluster(ports: list[int], root: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"],
           "REDISCLI_AUTH": REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"],
           "REDIS_CLUSTER_NODES": " ".join(f"localhost:{port}" for port in ports),
           "REDIS_CLUSTER_REPLICAS": "1", "REDIS_CLUSTER_WAIT_SECONDS": "30"}
    return subprocess.run(["sh", str(REPO / "docker" / "redis" / "create-cluster.sh")],
                          env=env, capture_output=True, text=True, check=False, timeout=90)


@pytest.fixture
def compose_redis_cluster():
    """Six nodes of Debian's Redis 7, each started by docker/redis/start.sh as a cluster
    node announcing the name ``localhost``, formed by docker/redis/create-cluster.sh;
    the nodes' ports. Stopped by the process ids they wrote."""
    try:
        redis_server = require_redis_server()
    except MissingServerError as error:
        pytest.fail(f"{error} (as .ci/run does)", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="batchscore-compose-cluster-"))
    root.chmod(0o700)
    entrypoint = root / "bin" / "docker-entrypoint.sh"
    entrypoint.parent.mkdir()
    entrypoint.write_text(NODE_ENTRYPOINT)
    entrypoint.chmod(0o755)
    folders = []
    try:
        ports = []
        for number in range(6):
            port = cluster_port()
            while port in ports:
                port = cluster_port()
            folder = root / f"redis-node-{number + 1}"
            folder.mkdir()
            folders.append(folder)
            path = os.pathsep.join([str(entrypoint.parent), str(redis_server.parent),
                                    os.environ["PATH"]])
            env = {**REDIS_PASSWORDS, "PATH": path, "REDIS_DATA_DIR": str(folder),
                   "REDIS_CLUSTER_ANNOUNCE_HOSTNAME": "localhost", "NODE_PORT": str(port)}
            subprocess.run(["sh", str(REPO / "docker" / "redis" / "start.sh")], env=env,
                           check=True, capture_output=True, text=True, timeout=30)
            ports.append(port)
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    if node_admin(port).ping():
                        break
                except redis.RedisError:
                    pass
                assert time.monotonic() < deadline, f"node on {port} does not answer"
                time.sleep(0.1)
        formed = form_cluster(ports, root)
        assert formed.returncode == 0, formed.stdout + formed.stderr
        yield ports, folders
    finally:
        pids = [int((folder / "redis.pid").read_text()) for folder in folders
                if (folder / "redis.pid").exists()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid in pids:
            kill_unless_gone(pid, deadline)
        shutil.rmtree(root, ignore_errors=True)


def wait_for_three_masters_with_a_replica_each(port: int) -> list[list[str]]:
    """CLUSTER NODES once every replica follows its master, has its data, and is named
    to clients (bounded: 30 s). Redis names a replica in CLUSTER SLOTS, whence the
    cluster client learns how many replicas the writer's WAIT is for, only once its
    replication offset has moved (a write, or the master's ping every 10 s)."""
    admin = node_admin(port)
    deadline = time.monotonic() + 30
    while True:
        nodes = cluster_nodes(admin)
        masters = {node[0] for node in nodes if "master" in node[2] and len(node) > 8}
        replicas = [node for node in nodes if "slave" in node[2]]
        in_sync = []
        for replica in replicas:
            replica_admin = node_admin(int(replica[1].split(":")[1].split("@")[0]))
            in_sync.append(replica_admin.info("replication").get("master_link_status") == "up")
            replica_admin.close()
        # Each range: first slot, last slot, its master, then its replicas.
        named = [len(served) - 3 for served in admin.execute_command("CLUSTER", "SLOTS")]
        if (len(masters) == 3 and sorted(node[3] for node in replicas) == sorted(masters)
                and all(in_sync) and named == [1, 1, 1]):
            admin.close()
            return nodes
        assert time.monotonic() < deadline, f"not three masters with a replica each: {nodes}"
        time.sleep(0.2)


def test_the_cluster_profiles_nodes_serve_the_writer_and_the_reader(
        compose_redis_cluster, engine, model_version) -> None:
    ports, folders = compose_redis_cluster
    nodes = wait_for_three_masters_with_a_replica_each(ports[0])
    # redis-cli makes the first three masters, each with the 16,384 slots split evenly.
    masters = sorted(int(node[1].split(":")[1].split("@")[0]) for node in nodes
                     if "master" in node[2])
    assert masters == sorted(ports[:3])
    assert sorted(node[8] for node in nodes if "master" in node[2]) == [
        "0-5460", "10923-16383", "5461-10922"]
    # Clients are sent to the announced name, not to an address.
    assert all(node[1].endswith(",localhost") for node in nodes)

    # The compose file's URLs, at a node of this cluster: the writer publishes a day
    # (WAIT for the replicas among its commands), the reader reads it and writes nothing.
    writer_url = (f"redis+cluster://batchscore_writer:{REDIS_PASSWORDS['REDIS_WRITER_PASSWORD']}"
                  f"@127.0.0.1:{ports[0]}/0")
    reader_url = (f"redis+cluster://batchscore_reader:{REDIS_PASSWORDS['REDIS_READER_PASSWORD']}"
                  f"@127.0.0.1:{ports[0]}/0")
    writer = connect(writer_url)
    recs = {user: [(user % 97 + 1, 0.5), (user % 89 + 200, 0.25)] for user in range(1, 301)}
    version, outcome = publish_day(engine, writer, model_version, DAY1, recs)
    assert outcome.served
    reader = RecommendationClient.from_url(reader_url)
    for user in (1, 150, 300):
        read = reader.get_recommendations(user, k=2)
        assert read.run_id == version.run_id
        assert [(item.item_id, item.score) for item in read.items] == recs[user]
    held = {}
    for port in masters:
        admin = node_admin(port)
        held[port] = len(admin.keys(KEYS.version_prefix(version.publish_id) + b"u:*"))
        admin.close()
    assert sum(held.values()) == 300 and all(held.values()), held
    plain_reader = connect(reader_url)
    with pytest.raises(RedisPermissionError):
        plain_reader.set(KEYS.pointer_key(), b"1")
    plain_reader.close()
    writer.close()

    # No password on any node's command line.
    for folder in folders:
        command = (folder / "command").read_text()
        assert command.split() == ["redis-server", str(folder / "redis.conf")]
        assert not any(password in command for password in REDIS_PASSWORDS.values())

    # The cluster service started again forms nothing and leaves the cluster as it was.
    again = form_cluster(ports, folders[0].parent)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "--cluster create" not in again.stdout and "introducing" in again.stdout
    wait_for_three_masters_with_a_replica_each(ports[1])
    assert RecommendationClient.from_url(reader_url).get_recommendations(1, k=2).run_id == \
        version.run_id
