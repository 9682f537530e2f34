"""A Redis that answers but refuses writes (full, unable to save, a read-only replica)
fails the run before its input is loaded and scored, with what to do, instead of after
minutes of scoring when the version is written aside; the served version stays. The
CLI says so without a traceback. (Redis full while the version is written aside:
tests/faults/test_servers.py.)

Each refusal is the server's own: ``maxmemory`` on the session's Redis, and a Redis
started for the test whose save fails or that is a replica."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from jobs.cli import main
from jobs.contracts.redis import Keyspace
from jobs.orchestration import nightly
from jobs.orchestration.airflow_tasks import validate_inputs
from jobs.orchestration.run_state import NightlyConfig
from jobs.platform.names import Names
from jobs.platform.redis_client import connect
from jobs.platform.services.redis import EmbeddedRedis
from jobs.platform.services.redis_cluster import kill_unless_gone
from jobs.publish.redis import (
    RedisRefusesWritesError,
    check_takes_writes,
    pointer,
    refused_writes,
)
from tests.conftest import redis_full
from tests.report_world import LISTS, publish

DAY = date(2026, 11, 20)
SAVE_WAIT_SECONDS = 20.0
STOP_WAIT_SECONDS = 10.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis for one test, with the default prefix's users, stopped at its end (killed
    by its pid if it does not stop)."""
    server = EmbeddedRedis(tmp_path / "own-redis", tmp_path / "own-home")
    server.ensure_running(Names(), "writer")
    pid = int(server.pid_file.read_text())
    try:
        yield server
    finally:
        with contextlib.suppress(redis.RedisError):
            server.stop()
        kill_unless_gone(pid, time.monotonic() + STOP_WAIT_SECONDS)


def run_day(database_url: str, redis_url: str, home: Path) -> None:
    nightly.run(NightlyConfig(run_date=DAY, database_url=database_url, redis_url=redis_url,
                              home=home, k=5))


def recorded_runs(engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT status, error FROM batchscore.runs WHERE kind = 'nightly'"
            " AND logical_date = :day ORDER BY started_at"), {"day": DAY})]


def alert_levels(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT level FROM batchscore.alerts ORDER BY alert_id")).scalars())


def test_a_full_redis_fails_the_run_before_its_input_is_loaded(
        engine, endpoints, redis_admin, redis_client, model, tmp_path) -> None:
    _, served = publish(engine, redis_client, model, date(2026, 11, 19), LISTS[0])
    with redis_full(redis_admin), pytest.raises(RedisRefusesWritesError) as refused:
        run_day(endpoints.database_url, endpoints.redis_url, tmp_path / "home")
    message = str(refused.value)
    assert message.startswith(
        "Redis refuses writes: it is full: its memory is at its `maxmemory` and its policy "
        "evicts nothing (OOM: command not allowed when used memory > 'maxmemory'). Nothing "
        "was loaded, scored or published, and the served version stays. Raise its "
        "`maxmemory` or free memory (")
    assert message.endswith("), then run the date again.")
    # Recorded and alerted as a failed run; the date has no events, so a run that went
    # on to its input would have been skipped as empty instead.
    assert recorded_runs(engine) == [("failed", f"RedisRefusesWritesError: {message}")]
    assert alert_levels(engine) == ["failed"]
    assert pointer(redis_client, Keyspace()) == served
    assert list((tmp_path / "home" / "staging").iterdir()) == []


def test_the_cli_says_what_to_do_without_a_traceback(endpoints, redis_admin, engine, model,
                                                     tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BATCHSCORE_DATABASE_URL", endpoints.database_url)
    monkeypatch.setenv("BATCHSCORE_REDIS_URL", endpoints.redis_url)
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    with redis_full(redis_admin):
        code = main(["nightly", "--run-date", DAY.isoformat()])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: Redis refuses writes: it is full: ")
    assert err.endswith("then run the date again.\n")
    assert "Traceback" not in err


def test_a_redis_that_cannot_save_fails_the_run_before_its_input_is_loaded(
        engine, endpoints, own_redis, model, tmp_path) -> None:
    admin = connect(own_redis.admin_url())
    saves_in = admin.config_get("dir")["dir"]
    gone = tmp_path / "gone"
    gone.mkdir()
    admin.config_set("save", "3600 1")
    admin.config_set("dir", str(gone))
    shutil.rmtree(gone)
    try:
        admin.bgsave()
        deadline = time.monotonic() + SAVE_WAIT_SECONDS
        while (admin.info("persistence")["rdb_bgsave_in_progress"]
               or admin.info("persistence")["rdb_last_bgsave_status"] != "err"):
            assert time.monotonic() < deadline, "the save into a removed folder did not fail"
            time.sleep(0.05)
        with pytest.raises(RedisRefusesWritesError, match=(
                r"^Redis refuses writes: it cannot save its data to disk and is set to refuse "
                r"writes until it can \(MISCONF: .*\)\. Nothing was loaded, scored or "
                r"published.* Free disk space where it saves \(its `dir`\)")):
            run_day(endpoints.database_url, own_redis.url(Names(), "writer"),
                    tmp_path / "home")
        # Refused later in a run, a pipelined write (as the write-aside's users record) is
        # explained too: redis-py names the failing command before the server's reply.
        writer = connect(own_redis.url(Names(), "writer"))
        pipe = writer.pipeline(transaction=False)
        pipe.append(Keyspace().users_key(1), b"1")
        with pytest.raises(redis.ResponseError, match=r"^Command # 1 \(APPEND ") as mid_run:
            pipe.execute()
        writer.close()
        explained = str(refused_writes(mid_run.value, "It stopped there."))
        assert explained.startswith(
            "Redis refuses writes: it cannot save its data to disk and is set to refuse "
            "writes until it can (MISCONF: Redis is configured to save RDB snapshots")
        assert explained.endswith(
            "). It stopped there. Free disk space where it saves (its `dir`), or fix what its "
            "log names, then run the date again.")
        # Redis before 7 refuses even PING then; it still counts as running (so that a
        # command resolving the embedded servers reaches the check).
        with pytest.raises(redis.ResponseError, match=r"^MISCONF"):
            admin.ping()
        assert own_redis.is_running()
        assert own_redis.ensure_running(Names(), "writer") == own_redis.url(Names(), "writer")
    finally:
        # Saving nothing, Redis takes writes (and PING) again, and stops as usual.
        admin.config_set("save", "")
        admin.config_set("dir", saves_in)
        admin.close()
    [(status, error)] = recorded_runs(engine)
    assert status == "failed" and "MISCONF" in error


def test_the_dag_task_fails_on_a_read_only_replica(engine, own_redis, endpoints, model,
                                                   tmp_path, monkeypatch) -> None:
    admin = connect(own_redis.admin_url())
    # A replica of a master that is not there: still read-only to every client.
    admin.replicaof("127.0.0.1", 1)
    writer = connect(own_redis.url(Names(), "writer"))
    with pytest.raises(redis.ReadOnlyError):
        writer.set(b"batchscore:recs:anything", b"1")
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_POSTGRES", endpoints.database_url)
    monkeypatch.setenv("AIRFLOW_CONN_BATCHSCORE_REDIS", own_redis.url(Names(), "writer"))
    monkeypatch.setenv("BATCHSCORE_HOME", str(tmp_path / "home"))
    with pytest.raises(RedisRefusesWritesError, match=(
            r"^Redis refuses writes: the writer's URL names a read-only replica "
            r"\(READONLY: You can't write against a read only replica\)\. Nothing was "
            r"loaded.* Point the writer's URL at the master, then run the date again\.$")):
        validate_inputs(params={"run_date": DAY.isoformat(), "k": 5}, logical_date=None)
    [(status, error)] = recorded_runs(engine)
    assert status == "failed" and error.startswith(
        "RedisRefusesWritesError: Redis refuses writes: the writer's URL")
    admin.replicaof("NO", "ONE")
    writer.close()
    admin.close()


def test_the_check_is_the_writers_to_make_and_leaves_no_key(redis_client, redis_admin) -> None:
    check_takes_writes(redis_client, Keyspace())
    assert redis_admin.keys("*") == []
