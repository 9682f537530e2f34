"""A Redis Cluster losing a master: SIGKILL mid-write and between the switch's passes
and its pointer flip, with readers reading throughout; and readers across many flips.

Each test kills one master of the session's three-master cluster (its replica
takes over after the cluster's node timeout) and checks that the served version
is never lost, that no read mixes versions or fails, that the next step
converges, and that no key outside the served versions is left without an
expiry. The cluster is started afresh for the next test.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import date

import pyarrow as pa
import pytest
import redis

from jobs.client import RecommendationClient
from jobs.contracts.redis import Keyspace
from jobs.lifecycle.registry import NewModel, register
from jobs.platform import runs
from jobs.platform.names import Names
from jobs.platform.redis_client import connect
from jobs.platform.services.redis_cluster import LocalRedisCluster
from jobs.publish import redis as redis_module
from jobs.publish.postgres import PostgresPublisher
from jobs.publish.protocol import publish_lock, switch
from jobs.publish.reconcile import disagreement, reconcile
from jobs.publish.redis import RedisPublisher
from tests.conftest import healthy_cluster
from tests.faults import test_concurrency
from tests.faults.publisher import Target

KEYS = Keyspace()
DAY1, DAY2 = date(2026, 11, 18), date(2026, 11, 19)
USERS = 6_000
BLOCK = 1_000
POPULAR = pa.table({"rank": [1, 2], "item_id": [100, 200], "score": [9.0, 7.0]})


def lists(day_item: int) -> dict[int, list[tuple[int, float]]]:
    """Each user's list on a day: its first item says the day, its second the user."""
    return {user: [(day_item, 0.75), (1_000 + user, 0.5)] for user in range(1, USERS + 1)}


def blocks(recs: dict[int, list[tuple[int, float]]]) -> list[pa.RecordBatch]:
    users = list(recs)
    schema = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                        ("scores", pa.list_(pa.float32()))])
    return [pa.RecordBatch.from_pydict({
        "user_id": users[start:start + BLOCK],
        "items": [[item for item, _ in recs[user]] for user in users[start:start + BLOCK]],
        "scores": [[score for _, score in recs[user]] for user in users[start:start + BLOCK]],
    }, schema=schema) for start in range(0, len(users), BLOCK)]


@pytest.fixture
def cluster(redis_cluster: LocalRedisCluster) -> Iterator[LocalRedisCluster]:
    yield healthy_cluster(redis_cluster)


@pytest.fixture
def writer(cluster: LocalRedisCluster) -> Iterator[redis.Redis]:
    client = connect(cluster.url(Names(), "writer"))
    yield client
    client.close()


@pytest.fixture
def model_version(engine) -> int:
    return register(engine, NewModel(
        created_by="test", trained_as_of=DAY1, params={}, metrics={}, data_snapshot={},
        code_version="test", artifact_uri="file:///nowhere")).version


def stage(engine, writer, model_version: int, day: date, recs, progress=None) -> int:
    """Both stores written aside for ``day``; the publish id."""
    run_id = runs.start(engine, "nightly", day, model_version)
    postgres = PostgresPublisher(engine, keep_versions=2)
    version = postgres.allocate(run_id, model_version, day, k=2)
    postgres.prepare(version)
    for each in blocks(recs):
        postgres.write(each)
    postgres.write_fallback(POPULAR)
    postgres.finish_load()
    publisher = RedisPublisher(writer, KEYS)
    publisher.prepare(version)
    publisher.write_blocks(blocks(recs), progress)
    publisher.write_fallback(POPULAR)
    publisher.write_meta()
    return version.publish_id


def serve(engine, writer, publish_id: int) -> None:
    with publish_lock(engine, "test"):
        switch(engine, writer, KEYS, publish_id, keep_versions=2)


class Readers:
    """Threads reading random users through the read client until stopped; every read
    must be one whole version's list (DAY1's or DAY2's) and none may fail."""

    def __init__(self, url: str, expected: dict[int, dict[int, list[tuple[int, float]]]]
                 ) -> None:
        self.url, self.expected = url, expected
        self.stop = threading.Event()
        self.reads = 0
        self.seen: set[int] = set()
        self.problems: list[str] = []
        self.threads = [threading.Thread(target=self._read, args=(seed,), daemon=True)
                        for seed in range(2)]

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads), "a reader hung"

    def until_seen(self, version: int, seconds: float = 30.0) -> None:
        """Returns once a reader has read ``version`` (or after ``seconds``: a reader
        still stuck on the old version then fails the test's ``seen`` check)."""
        deadline = time.monotonic() + seconds
        while version not in self.seen and time.monotonic() < deadline:
            time.sleep(0.05)

    def _read(self, seed: int) -> None:
        client = RecommendationClient.from_url(self.url, pointer_ttl_seconds=0.2)
        user = seed * 997
        while not self.stop.is_set():
            user = user % USERS + 1
            try:
                recs = client.get_recommendations(user, k=2)
            except Exception as err:  # every failed read is a finding
                self.problems.append(f"user {user}: {type(err).__name__}: {err}")
                continue
            pairs = [(item.item_id, item.score) for item in recs.items]
            day_item = pairs[0][0] if pairs else None
            if recs.source != "predictions" or pairs != self.expected.get(
                    day_item, {}).get(user):
                self.problems.append(f"user {user}: read {recs.source} {pairs}")
            self.seen.add(day_item)
            self.reads += 1
            user += 7


def unexpiring_keys_outside(cluster: LocalRedisCluster, served: set[int]) -> list[bytes]:
    """Keys on any master without an expiry that belong to no served version."""
    allowed = (KEYS.pointer_key(), KEYS.versions_key())
    found = []
    for node in cluster.masters_now():
        admin = cluster.node_admin(node)
        try:
            for key in admin.scan_iter(match="batchscore:*", count=1_000):
                if key in allowed or any(key.startswith(KEYS.version_prefix(publish_id))
                                         or key == KEYS.users_key(publish_id)
                                         for publish_id in served):
                    continue
                if admin.ttl(key) == -1:
                    found.append(key)
        finally:
            admin.close()
    return found


def test_a_master_killed_mid_write_loses_nothing_served_and_the_publish_finishes(
        engine, cluster, writer, model_version) -> None:
    day1, day2 = lists(1), lists(2)
    first = stage(engine, writer, model_version, DAY1, day1)
    serve(engine, writer, first)
    victim = cluster.masters_now()[1]
    killed = []

    def kill_after_two_blocks(users: int) -> None:
        if users == 2 * BLOCK and not killed:
            cluster.kill(victim, signal.SIGKILL)
            killed.append(victim.port)

    with Readers(cluster.url(Names(), "reader"), {1: day1, 2: day2}) as readers:
        second = stage(engine, writer, model_version, DAY2, day2, kill_after_two_blocks)
        serve(engine, writer, second)
        readers.until_seen(2)  # readers move to the new version (pointer kept 0.2 s)
    assert killed == [victim.port]
    assert victim not in cluster.masters_now() and len(cluster.masters_now()) == 3
    assert readers.problems == [] and readers.reads > 100 and readers.seen == {1, 2}
    # Every user of the new version is there, on the replica that took over too.
    client = RecommendationClient.from_url(cluster.url(Names(), "reader"))
    assert all([(item.item_id, item.score) for item in
                client.get_recommendations(user, k=2).items] == day2[user]
               for user in range(1, USERS + 1))
    assert disagreement(engine, writer, KEYS) is None
    assert unexpiring_keys_outside(cluster, {first, second}) == []


def test_a_master_killed_between_the_switch_and_the_flip_converges(
        engine, cluster, writer, model_version, tmp_path, monkeypatch) -> None:
    day1, day2 = lists(1), lists(2)
    first = stage(engine, writer, model_version, DAY1, day1)
    serve(engine, writer, first)
    second = stage(engine, writer, model_version, DAY2, day2)
    pointer_node = cluster.node_on(writer.get_node_from_key(KEYS.pointer_key()).port)
    flip = redis_module.compare_and_set_pointer

    def killed_first(*args, **kwargs):
        cluster.kill(pointer_node, signal.SIGKILL)  # its keys made permanent, not flipped
        return flip(*args, **kwargs)

    monkeypatch.setattr(redis_module, "compare_and_set_pointer", killed_first)
    with Readers(cluster.url(Names(), "reader"), {1: day1, 2: day2}) as readers:
        try:
            serve(engine, writer, second)
        except redis.ConnectionError as err:
            failure = str(err)
        else:
            failure = None
        monkeypatch.setattr(redis_module, "compare_and_set_pointer", flip)
        cluster.wait_until_healthy()
        report = reconcile(engine, writer, KEYS, tmp_path)
        readers.until_seen(2)
    assert readers.problems == [] and readers.reads > 100 and readers.seen == {1, 2}
    assert failure is None, failure
    assert report.redis_pointer == second
    assert disagreement(engine, writer, KEYS) is None
    client = RecommendationClient.from_url(cluster.url(Names(), "reader"))
    assert [(item.item_id, item.score)
            for item in client.get_recommendations(17, k=2).items] == day2[17]
    assert unexpiring_keys_outside(cluster, {first, second}) == []


def test_read_clients_across_flips_on_a_cluster(target, cluster, writer, engine) -> None:
    """One server's test of readers across fifteen flips, each retiring the version two
    back, with the nightly's publisher processes writing to the cluster."""
    on_cluster = Target(target.database_url, cluster.url(Names(), "writer"), target.home)
    test_concurrency.test_read_clients_across_flips_while_old_versions_are_retired(
        on_cluster, engine, writer)
