"""Publishing to and reading from a Redis Cluster: three masters with a replica each.

The publish, switch, rollback, reconcile and read tests of one server run here
again, unchanged, with the cluster's writer and administrator in place of the
embedded server's; the tests below them are the cluster's own: keys spread
over every master, redirections during a resharding, users on every node.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
import redis

from jobs.client import RecommendationClient
from jobs.contracts.redis import Keyspace, decode_items, encode_items
from jobs.platform.names import Names
from jobs.platform.redis_client import RedisPermissionError, connect
from jobs.platform.redis_nodes import NodeRoutes, key_slots
from jobs.platform.services.redis_cluster import LocalRedisCluster
from jobs.publish.redis import NodeWriters
from tests.integration import test_publish, test_reconcile, test_rollback
from tests.integration.test_publish import DAY1, DAY2, block, publish_day, stage_day

KEYS = Keyspace()


@pytest.fixture
def redis_client(cluster_writer: redis.Redis) -> redis.Redis:
    """The tests taken from one server's modules write to the cluster."""
    return cluster_writer


class ClusterAdmin:
    """The cluster's administrator, with what one server's tests ask of theirs: KEYS
    and FLUSHDB over every master."""

    def __init__(self, client: redis.cluster.RedisCluster) -> None:
        self.client = client

    def keys(self, pattern: str) -> list[bytes]:
        return [key for node in self.client.get_primaries()
                for key in self.client.get_redis_connection(node).keys(pattern)]

    def flushdb(self) -> None:
        for node in self.client.get_primaries():
            self.client.get_redis_connection(node).flushdb()

    def __getattr__(self, name: str):
        return getattr(self.client, name)


@pytest.fixture
def redis_admin(redis_cluster: LocalRedisCluster, cluster_writer: redis.Redis
                ) -> Iterator[ClusterAdmin]:
    """The cluster's administrator (the cluster is emptied by ``cluster_writer``)."""
    client = connect(redis_cluster.admin_url())
    yield ClusterAdmin(client)
    client.close()


# One server's tests, on the cluster.
test_a_published_version_is_served_in_both_stores = (
    test_publish.test_a_published_version_is_served_in_both_stores)
test_rerunning_a_date_replaces_it = test_publish.test_rerunning_a_date_replaces_it
test_a_replaced_version_never_served_leaves_redis_at_once = (
    test_publish.test_a_replaced_version_never_served_leaves_redis_at_once)
test_the_previous_version_is_kept_and_old_ones_are_dropped = (
    test_publish.test_the_previous_version_is_kept_and_old_ones_are_dropped)
test_a_failure_mid_publish_leaves_the_served_version_untouched = (
    test_publish.test_a_failure_mid_publish_leaves_the_served_version_untouched)
test_a_read_on_a_retired_version_is_done_again_on_the_served_one = (
    test_publish.test_a_read_on_a_retired_version_is_done_again_on_the_served_one)
test_a_retirement_half_done_is_never_read_as_a_fallback = (
    test_publish.test_a_retirement_half_done_is_never_read_as_a_fallback)
test_rollback_restores_both_stores_exactly_and_marks_the_model = (
    test_rollback.test_rollback_restores_both_stores_exactly_and_marks_the_model)
test_a_rollback_further_back_writes_the_version_to_redis_again_from_postgres = (
    test_rollback.test_a_rollback_further_back_writes_the_version_to_redis_again_from_postgres)
test_reconcile_fails_a_dead_run_and_removes_what_it_staged = (
    test_reconcile.test_reconcile_fails_a_dead_run_and_removes_what_it_staged)
test_reconcile_removes_a_version_redis_should_no_longer_hold = (
    test_reconcile.test_reconcile_removes_a_version_redis_should_no_longer_hold)
test_reconcile_writes_a_lost_served_version_again_from_postgres = (
    test_reconcile.test_reconcile_writes_a_lost_served_version_again_from_postgres)


def recs_for(users: range) -> dict[int, list[tuple[int, float]]]:
    return {user: [(user % 97 + 1, 0.5), (user % 89 + 200, 0.25)] for user in users}


def master_keys(cluster: LocalRedisCluster) -> dict[int, set[bytes]]:
    """Every key each master holds, by its port."""
    found = {}
    for node in cluster.masters_now():
        admin = cluster.node_admin(node)
        try:
            found[node.port] = set(admin.keys("*"))
        finally:
            admin.close()
    return found


def test_a_version_is_spread_over_every_master_and_read_whole(
        engine, cluster_writer, redis_cluster, model_version) -> None:
    recs = recs_for(range(1, 3_001))
    version, outcome = publish_day(engine, cluster_writer, model_version, DAY1, recs,
                                   blocks=[block(dict(list(recs.items())[start:start + 1_000]))
                                           for start in range(0, 3_000, 1_000)])
    assert outcome.served
    held = master_keys(redis_cluster)
    users_on = {port: sum(key.startswith(KEYS.version_prefix(version.publish_id) + b"u:")
                          for key in keys) for port, keys in held.items()}
    # Each master has about a third of the users (16,384 slots split three ways).
    assert len(users_on) == 3 and all(800 < count < 1_200 for count in users_on.values())
    assert sum(users_on.values()) == 3_000
    # The pointer, meta, fallback and users record are one key each, on one master.
    for key in (KEYS.pointer_key(), KEYS.meta_key(version.publish_id),
                KEYS.popular_key(version.publish_id), KEYS.users_key(version.publish_id)):
        assert sum(key in keys for keys in held.values()) == 1
    reader = RecommendationClient.from_url(redis_cluster.url(Names(), "reader"))
    for user in (1, 2, 1_500, 2_999, 3_000):
        recs_read = reader.get_recommendations(user, k=2)
        assert recs_read.source == "predictions"
        assert [(item.item_id, item.score) for item in recs_read.items] == recs[user]
    fallback = reader.get_recommendations(99_999, k=2)
    assert (fallback.source, [item.item_id for item in fallback.items]) == ("fallback",
                                                                           [100, 200])
    # Served: every key of the version is permanent, on every master.
    for node in redis_cluster.masters_now():
        admin = redis_cluster.node_admin(node)
        try:
            for key in admin.keys(KEYS.version_prefix(version.publish_id) + b"*"):
                assert admin.ttl(key) == -1, key
        finally:
            admin.close()


def test_keys_of_a_slot_moved_to_another_master_are_followed(
        engine, cluster_writer, redis_cluster, model_version) -> None:
    """A resharding after the publisher learnt the slot map: the old owner answers
    MOVED for the slot's keys, and they are sent where it says."""
    recs = recs_for(range(1_001, 3_001))  # none of them has a key yet
    version = stage_day(engine, cluster_writer, model_version, DAY1, {1: [(10, 0.5)]})
    keys = [KEYS.user_key(version.publish_id, user) for user in recs]
    slot = int(key_slots(pa.array(keys, pa.binary()))[1])
    writers = NodeWriters(cluster_writer)  # learns the slot map now
    owner = cluster_writer.nodes_manager.slots_cache[slot][0]
    target = next(node for node in cluster_writer.get_primaries() if node.name != owner.name)
    target_id = redis_cluster.node_id_of(target.port)
    for node in redis_cluster.masters_now():  # the slot is empty: it moves at once
        admin = redis_cluster.node_admin(node)
        try:
            admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        finally:
            admin.close()
    values = [f"v{user}".encode() for user in recs]
    with writers:
        writers.set_with_expiry(pa.array(keys, pa.binary()), pa.array(values, pa.binary()), 60)
    moved_key = keys[1]
    held = master_keys(redis_cluster)
    assert moved_key in held[target.port] and moved_key not in held[owner.port]
    for key, value in zip(keys, values, strict=True):
        assert cluster_writer.get(key) == value


def test_a_reader_follows_a_slot_moved_after_it_learnt_the_slot_map(
        engine, cluster_writer, redis_cluster, model_version) -> None:
    """A read goes straight to the master the reader's slot map names; after a
    resharding that master answers MOVED, and the read is done where it says."""
    version, _ = publish_day(engine, cluster_writer, model_version, DAY1, {1: [(10, 0.5)]})
    reader = RecommendationClient.from_url(redis_cluster.url(Names(), "reader"))
    assert [item.item_id for item in reader.get_recommendations(1).items] == [10]
    key = KEYS.user_key(version.publish_id, 2)
    slot = int(key_slots(pa.array([key], pa.binary()))[0])
    owner = cluster_writer.nodes_manager.slots_cache[slot][0]
    target = next(node for node in cluster_writer.get_primaries() if node.name != owner.name)
    owner_admin = redis_cluster.node_admin(redis_cluster.node_on(owner.port))
    try:
        assert owner_admin.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    finally:
        owner_admin.close()
    for node in redis_cluster.masters_now():  # the slot is empty: it moves at once
        admin = redis_cluster.node_admin(node)
        try:
            admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE",
                                  redis_cluster.node_id_of(target.port))
        finally:
            admin.close()
    cluster_writer.set(key, encode_items([30, 40], [0.75, 0.5]))
    for _ in range(2):  # redirected, then straight to the slot's new master
        recs = reader.get_recommendations(2)
        assert recs.source == "predictions"
        assert [(item.item_id, item.score) for item in recs.items] == [(30, 0.75), (40, 0.5)]
    assert reader.client.nodes_manager.slots_cache[slot][0].name == target.name


def test_keys_of_a_slot_being_migrated_are_followed(engine, cluster_writer, redis_cluster,
                                                    model_version) -> None:
    """While a slot migrates, its old owner answers ASK for keys it does not hold."""
    version = stage_day(engine, cluster_writer, model_version, DAY1, {1: [(10, 0.5)]})
    # Users the version has no key for yet (it has user 1's).
    keys = [KEYS.user_key(version.publish_id, user) for user in range(1_001, 1_501)]
    slot = int(key_slots(pa.array(keys, pa.binary()))[0])
    writers = NodeWriters(cluster_writer)
    owner = cluster_writer.nodes_manager.slots_cache[slot][0]
    target = next(node for node in cluster_writer.get_primaries() if node.name != owner.name)
    owner_admin = redis_cluster.node_admin(redis_cluster.node_on(owner.port))
    target_admin = redis_cluster.node_admin(redis_cluster.node_on(target.port))
    try:
        target_admin.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING",
                                     redis_cluster.node_id_of(owner.port))
        owner_admin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING",
                                    redis_cluster.node_id_of(target.port))
        with writers:
            writers.set_with_expiry(pa.array(keys, pa.binary()),
                                    pa.array([b"x"] * len(keys), pa.binary()), 60)
        assert target_admin.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) >= 1
        assert owner_admin.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    finally:
        for admin in (owner_admin, target_admin):
            admin.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            admin.close()


def test_every_node_has_the_users_limited_as_on_one_server(redis_cluster) -> None:
    names = Names()
    for node in redis_cluster.nodes:
        reader = connect(redis_cluster.node_url(node, names, "reader"))
        writer = connect(redis_cluster.node_url(node, names, "writer"))
        try:
            assert reader.ping() and writer.ping()
            with pytest.raises(RedisPermissionError):
                reader.execute_command("SET", "batchscore:recs:current", "1")
            with pytest.raises(RedisPermissionError):
                writer.execute_command("GET", "another:recs:current")
            with pytest.raises(RedisPermissionError):
                reader.execute_command("CLUSTER", "NODES")
        finally:
            reader.close()
            writer.close()


def test_a_day_published_twice_on_a_cluster_reads_the_second(engine, cluster_writer,
                                                             redis_cluster, model_version):
    first, _ = publish_day(engine, cluster_writer, model_version, DAY1, {1: [(10, 0.5)]})
    second, _ = publish_day(engine, cluster_writer, model_version, DAY2, {1: [(20, 0.5)]})
    reader = connect(redis_cluster.url(Names(), "reader"))
    assert decode_items(reader.get(KEYS.user_key(second.publish_id, 1))) == [(20, 0.5)]
    assert RecommendationClient(reader, KEYS).get_recommendations(1).run_id == second.run_id
    # The version before stays whole and permanent, for a rollback by pointer.
    assert cluster_writer.ttl(KEYS.user_key(first.publish_id, 1)) == -1


def test_a_started_cluster_lists_every_replica_in_every_slot_map(redis_cluster) -> None:
    """start() returns once every node's slot map lists each master's replica, so that
    a publisher connecting at once ``WAIT``s for it from the first block."""
    redis_cluster.stop()
    redis_cluster.start()
    writer = connect(redis_cluster.url(Names(), "writer"))
    try:
        assert sorted(NodeRoutes(writer).replicas.values()) == [1, 1, 1]
    finally:
        writer.close()
    for node in redis_cluster.nodes:
        admin = redis_cluster.node_admin(node)
        try:
            assert all(len(served) == 4 for served in admin.execute_command("CLUSTER", "SLOTS"))
        finally:
            admin.close()
