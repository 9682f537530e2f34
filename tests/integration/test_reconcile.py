"""Reconcile on the embedded servers: what it repairs, what it leaves alone, and that a
second run finds nothing to do. Also the CLI's `reconcile` and `status`."""

import json
import threading
from datetime import date

import sqlalchemy as sa

from jobs.cli import main
from jobs.contracts.redis import Keyspace
from jobs.platform import runs
from jobs.publish.postgres import PostgresPublisher, partition_name
from jobs.publish.reconcile import GONE_RUN_ERROR, reconcile
from jobs.publish.redis import RedisPublisher
from tests.integration.test_publish import POPULAR, block, publish_day

KEYS = Keyspace()  # the default prefix's keys

DAY1, DAY2, DAY3 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)


def run_status(engine, run_id: str) -> tuple[str, str | None]:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(
            "SELECT status, error FROM batchscore.runs WHERE run_id = :id"),
            {"id": run_id}).one())


def staged_run(engine, redis_client, model_version: int, lease_seconds: int = 0):
    """A run that wrote a version aside in both stores, then stopped before its switch."""
    run_id = runs.start(engine, "nightly", DAY2, model_version, lease_seconds=lease_seconds)
    postgres = PostgresPublisher(engine)
    version = postgres.allocate(run_id, model_version, DAY2, k=2)
    postgres.prepare(version)
    postgres.write(block({1: [(50, 0.5)], 2: [(51, 0.5)]}))
    postgres.write_fallback(POPULAR)
    postgres.finish_load()
    publisher = RedisPublisher(redis_client, KEYS)
    publisher.prepare(version)
    publisher.write(block({1: [(50, 0.5)], 2: [(51, 0.5)]}))
    return run_id, version.publish_id


def test_reconcile_fails_a_dead_run_and_removes_what_it_staged(engine, redis_client,
                                                               model_version, tmp_path):
    served, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    run_id, staged = staged_run(engine, redis_client, model_version)
    (tmp_path / run_id).mkdir()
    (tmp_path / "nightly-2026-01-01-deadbeef").mkdir()  # a folder no run knows

    report = reconcile(engine, redis_client, KEYS, tmp_path)

    assert report.runs_failed == [run_id]
    assert run_status(engine, run_id) == ("failed", GONE_RUN_ERROR)
    assert report.versions_discarded == [staged]
    assert redis_client.exists(KEYS.user_key(staged, 1)) == 0
    assert sorted(report.folders_removed) == sorted([run_id, "nightly-2026-01-01-deadbeef"])
    assert list(tmp_path.iterdir()) == []
    assert (report.postgres_serves, report.redis_pointer) == (served.publish_id,) * 2
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass(:t)"),
                            {"t": f"batchscore.{partition_name(staged)}"}).scalar() is None
    again = reconcile(engine, redis_client, KEYS, tmp_path)
    assert not again.changed and again.lines() == []


def test_reconcile_leaves_live_runs_alone(engine, redis_client, model_version, tmp_path):
    publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    held_id, held_version = staged_run(engine, redis_client, model_version)
    leased_id, leased_version = staged_run(engine, redis_client, model_version,
                                           lease_seconds=3600)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runs.lease(engine, held_id):
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(30)
    try:
        report = reconcile(engine, redis_client, KEYS, tmp_path)
    finally:
        release.set()
        holder.join(30)
    assert report.runs_failed == [] and report.versions_discarded == []
    assert run_status(engine, held_id)[0] == run_status(engine, leased_id)[0] == "running"
    assert redis_client.exists(KEYS.user_key(held_version, 1)) == 1
    assert redis_client.exists(KEYS.user_key(leased_version, 1)) == 1
    # Once its holder let go, the run without a lease is gone.
    assert reconcile(engine, redis_client, KEYS, tmp_path).runs_failed == [held_id]


def test_reconcile_removes_a_version_redis_should_no_longer_hold(engine, redis_client,
                                                                 model_version, tmp_path,
                                                                 monkeypatch):
    from jobs.publish import redis as redis_publish

    first, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    second, _ = publish_day(engine, redis_client, model_version, DAY2, {1: [(20, 0.5)]})
    # As after a crash between the pointer flip and the retirement of the oldest version.
    with monkeypatch.context() as patched:
        patched.setattr(redis_publish, "retire_served_others", lambda *args: [])
        third, _ = publish_day(engine, redis_client, model_version, DAY3, {1: [(30, 0.5)]})
    assert redis_client.ttl(KEYS.user_key(first.publish_id, 1)) == -1
    report = reconcile(engine, redis_client, KEYS, tmp_path)
    assert report.redis_versions_retired == [first.publish_id]
    assert redis_client.exists(KEYS.user_key(first.publish_id, 1),
                               KEYS.meta_key(first.publish_id),
                               KEYS.users_key(first.publish_id)) == 0
    # The served version and the one served before it stay, whole and permanent.
    assert redis_client.ttl(KEYS.user_key(second.publish_id, 1)) == -1
    assert redis_client.ttl(KEYS.user_key(third.publish_id, 1)) == -1


def test_reconcile_writes_a_lost_served_version_again_from_postgres(
        engine, redis_client, redis_admin, model_version, tmp_path):
    version, _ = publish_day(engine, redis_client, model_version, DAY1,
                             {1: [(10, 0.5), (11, 0.25)], 2: [(12, 1.5), (10, 1.0)]})
    values = {user: redis_client.get(KEYS.user_key(version.publish_id, user))
              for user in (1, 2)}
    redis_admin.flushdb()  # a Redis that came back without its data
    report = reconcile(engine, redis_client, KEYS, tmp_path)
    assert report.redis_pointer == version.publish_id
    assert {user: redis_client.get(KEYS.user_key(version.publish_id, user))
            for user in (1, 2)} == values == {
        1: bytes.fromhex("0102" "0a000b00" "0000003f" "0000803e"),  # 10, 11; 0.5, 0.25
        2: bytes.fromhex("0102" "0c000a00" "0000c03f" "0000803f")}  # 12, 10; 1.5, 1.0
    assert redis_client.ttl(KEYS.user_key(version.publish_id, 1)) == -1


def test_the_cli_reconciles_and_status_shows_disagreement(engine, redis_client, model_version,
                                                          settings, monkeypatch, capsys):
    monkeypatch.setenv("BATCHSCORE_HOME", str(settings.home))
    first, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    second, _ = publish_day(engine, redis_client, model_version, DAY2, {1: [(20, 0.5)]})
    redis_client.set(KEYS.pointer_key(), str(first.publish_id))  # Redis fell behind
    assert main(["status"]) == 0
    assert (f"the stores disagree: postgres serves version {second.publish_id}, the redis "
            f"pointer names {first.publish_id}; run ") in capsys.readouterr().out
    assert main(["reconcile", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["redis_pointer_before"], report["redis_pointer"], report["changed"]) == (
        first.publish_id, second.publish_id, True)
    assert main(["reconcile"]) == 0
    assert capsys.readouterr().out == (
        f"both stores agree on version {second.publish_id}; nothing to do\n")
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stores_disagree"] is None
