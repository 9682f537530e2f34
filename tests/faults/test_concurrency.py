"""Runs and readers at once: read-client threads across pointer flips while old versions
expire, two nightly processes for different dates, a publisher waiting for the lock, and
the publish steps retried after their switch."""

from __future__ import annotations

import random
import threading
import time
from datetime import date, timedelta

import redis
import sqlalchemy as sa

from jobs.client import RecommendationClient
from jobs.contracts.redis import Keyspace
from jobs.orchestration import plans
from jobs.orchestration.publish_steps import publish_postgres, publish_redis, switch
from jobs.orchestration.run_state import RunState
from jobs.platform.redis_client import connect
from tests.faults import checks
from tests.faults.publisher import HELD, USERS, expected_items, publish, version_tag

KEYS = Keyspace()  # the default prefix's keys

FIRST_DAY = date(2026, 8, 1)
# Enough switches for the readers holding a pointer to find their version retired
# several times (each switch retires the version two back).
FLIPS = 15
# Each reader must have read at least this often while the work ran, or it checked nothing.
MIN_READS = 10


def counting_pointer_reads(client: redis.Redis) -> redis.Redis:
    """``client``, counting in ``client.pointer_reads`` the GETs of the pointer sent
    through it (a read client sends a user's key on its own connection)."""
    client.pointer_reads = 0
    get = client.get

    def counted(key, *args, **kwargs):
        client.pointer_reads += key == KEYS.pointer_key()
        return get(key, *args, **kwargs)

    client.get = counted
    return client


class RedisReader(threading.Thread):
    """Reads random users with the read client until told to stop (or a bound)."""

    def __init__(self, url: str, stop: threading.Event, max_seconds: float = 300,
                 pointer_ttl_seconds: float = 1.0) -> None:
        super().__init__(name="redis reader", daemon=True)
        self.redis = counting_pointer_reads(connect(url))
        self.client = RecommendationClient(self.redis, KEYS,
                                           pointer_ttl_seconds=pointer_ttl_seconds)
        self.stop, self.max_seconds = stop, max_seconds
        self.reads = 0
        self.seen: dict[str, int] = {}  # run_id -> tag of the lists it served
        self.failures: list[str] = []

    def run(self) -> None:
        rng = random.Random(self.name)
        deadline = time.monotonic() + self.max_seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            user = rng.randint(1, USERS)
            try:
                self.read_once(user)
            except Exception as err:  # a failed read is a finding, not a dead thread
                self.failures.append(f"user {user}: {type(err).__name__}: {err}")

    def read_once(self, user: int) -> None:
        recs = self.client.get_recommendations(user, k=5)
        items = [item.item_id for item in recs.items]
        if recs.source != "predictions":
            self.failures.append(f"user {user}: a fallback from run {recs.run_id}")
        elif items != expected_items(version_tag(items[0]), user):
            self.failures.append(f"user {user}: a mixed list {items}")
        elif self.seen.setdefault(recs.run_id, version_tag(items[0])) != version_tag(items[0]):
            self.failures.append(f"run {recs.run_id} served two versions' lists")
        self.reads += 1


def read_while(url: str, work, pointer_ttls: tuple[float, ...] = (1.0,) * 4
               ) -> list[RedisReader]:
    stop = threading.Event()
    threads = [RedisReader(url, stop, pointer_ttl_seconds=ttl) for ttl in pointer_ttls]
    for thread in threads:
        thread.start()
    try:
        work()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a reader did not stop"
    checks.TALLY["redis readers"] += len(threads)
    checks.TALLY["redis reads"] += sum(thread.reads for thread in threads)
    assert all(thread.reads >= MIN_READS for thread in threads), [t.reads for t in threads]
    return threads


def test_read_clients_across_flips_while_old_versions_are_retired(target, engine,
                                                                  client) -> None:
    """Readers keep the pointer for a second while each switch retires the version two
    back, at once, meta key first: the harshest removal a reader holding an older
    pointer can meet. Two of them keep it for good, so they read the pointer again
    only when the version they hold was retired. None sees a missing user, a mix,
    or an error."""
    publish(target, FIRST_DAY, tag=1)
    tags = {}

    def flips() -> None:
        for number in range(1, FLIPS + 1):
            state = publish(target, FIRST_DAY + timedelta(days=number), tag=1 + number)
            tags[state.run_id] = 1 + number

    readers = read_while(target.redis_url, flips, pointer_ttls=(1.0, 1.0, 3600.0, 3600.0))
    checks.TALLY["switches"] += FLIPS
    assert [reader.failures for reader in readers] == [[]] * len(readers)
    # The readers that never let the pointer go by age found their version retired
    # several times, and each time read the served one instead.
    holding = readers[2:]
    assert all(reader.redis.pointer_reads >= 5 for reader in holding), [
        reader.redis.pointer_reads for reader in holding]
    assert all(len(set(reader.seen)) >= 5 for reader in holding), [
        len(reader.seen) for reader in holding]
    seen = {run_id: tag for reader in readers for run_id, tag in reader.seen.items()}
    assert len(seen) >= 5  # they read across many versions
    assert all(tags[run_id] == tag for run_id, tag in seen.items() if run_id in tags)
    # The old versions are gone: the served one's and the one's before it remain.
    checks.assert_converged(engine, client, target.home)
    # Every key in the server (SCAN lists them all, whoever may read them): per kept
    # version its users, fallback, meta and users record; the pointer and versions set.
    assert len(set(client.scan_iter(count=1_000))) == 2 * (USERS + 3) + 2


def test_two_nightly_processes_for_different_dates_end_with_the_newer_served(
        target, engine, client, tmp_path) -> None:
    publish(target, FIRST_DAY, tag=1)
    for number, older_first in enumerate((True, False, True), start=1):
        newer_day = FIRST_DAY + timedelta(days=10 * number)
        older_day = newer_day - timedelta(days=5)
        runs = [(older_day, 100 + number), (newer_day, 200 + number)]
        if not older_first:
            runs.reverse()
        # Each process holds once its run has begun (reconciled, its lease taken), until
        # both have: so they run at the same time, whatever their start-up takes.
        release = tmp_path / f"release-{number}"
        processes = [checks.start_publisher(target, day, tag, None, tmp_path / f"m{tag}",
                                            "--hold", str(release))
                     for day, tag in runs]
        for process, (_, tag) in zip(processes, runs, strict=True):
            checks.wait_for_marker(process, tmp_path / f"m{tag}", HELD)
        assert [process.poll() for process in processes] == [None, None]  # both in their run
        release.touch()
        for process in processes:
            code, output = checks.finish(process)
            assert code == 0, output[-3000:]
        checks.TALLY["concurrent runs"] += len(processes)
        checks.assert_converged(engine, client, target.home)
        assert checks.postgres_serves_whole(engine) == 200 + number
        assert checks.redis_serves_whole(client) == 200 + number
        with engine.connect() as conn:
            older = conn.execute(sa.text(
                "SELECT status, is_serving FROM bi.prediction_versions"
                " WHERE logical_date = :d"), {"d": older_day}).one()
        assert tuple(older) == ("published", False)  # kept as history, not served


def test_a_publisher_waits_for_the_lock_then_fails_clearly(target, engine, client,
                                                           tmp_path) -> None:
    publish(target, FIRST_DAY, tag=1)
    marker = tmp_path / "paused-at"
    holder = checks.start_publisher(target, FIRST_DAY + timedelta(days=1), 2,
                                    "switch: publish lock taken", marker)
    checks.wait_for_marker(holder, marker, "switch: publish lock taken")
    start = time.monotonic()
    waiter = checks.start_publisher(target, FIRST_DAY + timedelta(days=2), 3, None,
                                    tmp_path / "unused", "--lock-wait", "2")
    code, output = checks.finish(waiter)
    waited = time.monotonic() - start
    assert code != 0
    assert "the publish lock is held by server process" in output, output[-2000:]
    assert "batchscore publish: run nightly-" in output and "gave up after waiting 2s" in output
    assert waited >= 2
    checks.kill_group(holder)
    publish(target, FIRST_DAY + timedelta(days=2), tag=3)
    checks.assert_converged(engine, client, target.home)
    assert checks.postgres_serves_whole(engine) == 3


def test_publish_steps_retried_after_the_switch_keep_the_served_version_readable(
        target, engine, client, monkeypatch) -> None:
    publish(target, FIRST_DAY, tag=1)
    (smoke_check,) = plans.PLANS["serve"]["check"]
    retried = []

    def retry_then_check(engine, redis_url, state):
        # As Airflow's retries would: a new process reads the run's state again.
        again = RunState.load(state.work_dir)
        served_before = checks.redis_serves_whole(client)
        publish_postgres(engine, again)
        publish_redis(engine, redis_url, again)
        switch(engine, redis_url, again)
        retried.append(again.publish_id)
        assert checks.redis_serves_whole(client) == served_before
        return smoke_check(engine, redis_url, state)

    monkeypatch.setitem(plans.PLANS["serve"], "check", (retry_then_check,))
    readers = read_while(target.redis_url,
                         lambda: publish(target, FIRST_DAY + timedelta(days=1), tag=2))
    assert [reader.failures for reader in readers] == [[]] * len(readers)
    assert len(retried) == 1
    served = checks.assert_converged(engine, client, target.home)
    assert served == retried[0]
    assert client.ttl(KEYS.user_key(served, 1)) == -1
    assert checks.redis_serves_whole(client) == 2
