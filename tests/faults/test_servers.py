"""The servers fail under a run: load connections terminated mid-COPY, Redis killed
mid-write and between the PostgreSQL switch and the pointer flip, Redis full mid-write,
PostgreSQL restarted mid-run. Each store keeps serving one whole version, and the system
converges."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from datetime import date
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa

from jobs.contracts.redis import Keyspace
from jobs.orchestration import publish_steps
from jobs.orchestration.run_state import StoreUnavailableError
from jobs.platform import services
from jobs.platform.redis_client import connect
from jobs.publish import postgres as postgres_module
from jobs.publish import read_blocks
from jobs.publish import redis as redis_module
from jobs.publish.postgres import LOAD_APPLICATION_NAME, PostgresPublisher
from jobs.publish.reconcile import reconcile
from jobs.publish.redis import RedisRefusesWritesError
from tests.conftest import redis_full
from tests.faults import checks
from tests.faults.publisher import BLOCK_USERS, hooked, publish

KEYS = Keyspace()  # the default prefix's keys

DAY1, DAY2 = date(2026, 11, 1), date(2026, 11, 2)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch) -> None:
    """Several blocks per store, so a fault can land between them."""
    monkeypatch.setattr(publish_steps, "read_blocks",
                        functools.partial(read_blocks, block_users=BLOCK_USERS))


def on_call(monkeypatch, owner, name: str, nth: int, action, after: bool = False) -> None:
    """Run ``action()`` at the ``nth`` call of ``owner.name`` (restored after the test)."""
    monkeypatch.setattr(owner, name, hooked(owner, name, nth, after, action))


def kill_redis(settings) -> None:
    """SIGKILL the embedded redis-server by its pid."""
    pid_file: Path = services.embedded_redis(settings).pid_file
    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
    checks.TALLY["redis kills"] += 1


def restart_redis(settings) -> None:
    services.redis_url(settings, "writer")  # started again, with its ACL file
    checks.TALLY["redis restarts"] += 1


def test_terminated_load_connections_publish_nothing_and_the_retry_succeeds(
        target, engine, client, monkeypatch) -> None:
    publish(target, DAY1, tag=1)
    admin = psycopg2.connect(target.database_url)
    admin.autocommit = True
    terminated = []

    def terminate_loads() -> None:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = %s", (LOAD_APPLICATION_NAME,))
            terminated.extend(row[0] for row in cur.fetchall())

    on_call(monkeypatch, postgres_module, "copy_lists_binary", 3, terminate_loads)
    with pytest.raises(StoreUnavailableError, match="lost its connection to PostgreSQL"):
        publish(target, DAY2, tag=2)
    admin.close()
    assert terminated == [True, True]  # both load connections, mid-COPY
    checks.TALLY["backends terminated"] += len(terminated)
    assert checks.postgres_serves_whole(engine) == 1
    assert checks.redis_serves_whole(client) == 1
    monkeypatch.undo()
    publish(target, DAY2, tag=3)
    checks.assert_converged(engine, client, target.home)
    assert checks.postgres_serves_whole(engine) == 3


def test_redis_killed_mid_write_then_restarted(target, engine, client, monkeypatch,
                                               fault_settings) -> None:
    publish(target, DAY1, tag=1)
    on_call(monkeypatch, redis_module.RedisPublisher, "_keys_and_values", 3,
            lambda: kill_redis(fault_settings))
    with pytest.raises(StoreUnavailableError, match="lost its connection to Redis"):
        publish(target, DAY2, tag=2)
    restart_redis(fault_settings)
    # Postgres never switched; Redis came back with the old version whole.
    assert checks.postgres_serves_whole(engine) == 1
    assert checks.redis_serves_whole(client) == 1
    report = reconcile(engine, client, KEYS, target.home / "staging")
    assert report.redis_pointer == report.postgres_serves
    checks.assert_converged(engine, client, target.home)
    monkeypatch.undo()
    publish(target, DAY2, tag=3)
    checks.assert_converged(engine, client, target.home)


def test_redis_killed_between_the_postgres_switch_and_the_flip(target, engine, client,
                                                               monkeypatch,
                                                               fault_settings) -> None:
    publish(target, DAY1, tag=1)
    on_call(monkeypatch, PostgresPublisher, "switch", 1, lambda: kill_redis(fault_settings),
            after=True)
    with pytest.raises(StoreUnavailableError, match="lost its connection to Redis"):
        publish(target, DAY2, tag=2)
    restart_redis(fault_settings)
    # Postgres serves the new version, Redis still the old one: each whole.
    assert checks.postgres_serves_whole(engine) == 2
    assert checks.redis_serves_whole(client) == 1
    report = reconcile(engine, client, KEYS, target.home / "staging")
    assert report.redis_pointer == report.postgres_serves != report.redis_pointer_before
    checks.assert_converged(engine, client, target.home)
    assert checks.redis_serves_whole(client) == 2


@pytest.mark.parametrize("where", [
    # The SETs of the second block, sent pipelined on a connection of the publisher's own.
    (redis_module, "send_sets", 2),
    # The meta key, the last key written aside, sent through redis-py.
    (redis_module.RedisPublisher, "write_meta", 1),
], ids=["user keys", "meta key"])
def test_redis_full_mid_write_fails_the_run_with_what_to_do_and_the_retry_succeeds(
        where, target, engine, client, monkeypatch, fault_settings) -> None:
    publish(target, DAY1, tag=1)
    admin = connect(services.redis_url(fault_settings, "admin"))
    with contextlib.ExitStack() as full:
        full.callback(admin.close)

        def fill() -> None:
            full.enter_context(redis_full(admin))
            checks.TALLY["redis full"] += 1

        on_call(monkeypatch, *where, fill)
        with pytest.raises(RedisRefusesWritesError) as refused:
            publish(target, DAY2, tag=2)
    message = str(refused.value)
    assert message == (
        "Redis refuses writes: it is full: its memory is at its `maxmemory` and its policy "
        "evicts nothing (OOM: command not allowed when used memory > 'maxmemory'). The "
        "version being written aside is not served: readers still get the served one, and "
        "its keys expire within 48 hours if the run cannot remove them. Raise its "
        "`maxmemory` or free memory (a version of 50 items a user takes about 400 bytes a "
        "user, and Redis holds up to three while a run publishes), then run the date again.")
    with engine.connect() as conn:
        assert list(conn.execute(sa.text(
            "SELECT status, error FROM batchscore.runs ORDER BY started_at"))) == [
            ("succeeded", None), ("failed", f"RedisRefusesWritesError: {message}")]
    # Neither store switched; what the run wrote aside in Redis was removed.
    assert checks.postgres_serves_whole(engine) == 1
    assert checks.redis_serves_whole(client) == 1
    assert list(client.scan_iter(match=KEYS.version_pattern(2), count=1_000)) == []
    assert client.exists(KEYS.users_key(2)) == 0
    monkeypatch.undo()
    publish(target, DAY2, tag=3)
    checks.assert_converged(engine, client, target.home)
    assert checks.redis_serves_whole(client) == 3


def test_postgres_restarted_mid_run_fails_it_clearly_and_the_next_run_succeeds(
        target, engine, client, monkeypatch, fault_settings) -> None:
    publish(target, DAY1, tag=1)
    server = services.embedded_postgres(fault_settings)

    def restart() -> None:
        server.stop()
        server.ensure_running()
        checks.TALLY["postgres restarts"] += 1

    on_call(monkeypatch, postgres_module, "copy_lists_binary", 3, restart)
    with pytest.raises(StoreUnavailableError,
                       match=r"lost its connection to PostgreSQL .*run the date again"):
        publish(target, DAY2, tag=2)
    engine.dispose()
    assert checks.postgres_serves_whole(engine) == 1
    assert checks.redis_serves_whole(client) == 1
    monkeypatch.undo()
    publish(target, DAY2, tag=3)
    checks.assert_converged(engine, client, target.home)
    assert checks.postgres_serves_whole(engine) == 3
