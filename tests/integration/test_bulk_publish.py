"""The bulk write paths against the embedded servers: what is stored is exactly what was scored."""

import io
import logging
import re
from datetime import date

import numpy as np
import psycopg2
import pyarrow as pa
import pytest
import redis as redis_lib
import sqlalchemy as sa

from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace
from jobs.lifecycle.registry import NewModel, register
from jobs.platform import runs
from jobs.platform.progress import progress
from jobs.publish.postgres import PostgresPublisher, partition_name
from jobs.publish.redis import (
    RedisPublisher,
    pipelined_connection,
    read_ok_replies,
    set_with_expiry_commands,
)

KEYS = Keyspace()  # the default prefix's keys

DAY = date(2026, 11, 20)
SCHEMA = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                    ("scores", pa.list_(pa.float32()))])


def random_blocks(users: int, k: int, per_block: int) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(5)
    blocks = []
    for start in range(0, users, per_block):
        ids = np.arange(start + 1, min(users, start + per_block) + 1)
        blocks.append(pa.RecordBatch.from_pydict({
            "user_id": ids,
            "items": [rng.choice(10_000, k, replace=False).tolist() for _ in ids],
            "scores": [np.sort(rng.normal(size=k).astype(np.float32))[::-1].tolist()
                       for _ in ids],
        }, schema=SCHEMA))
    return blocks


@pytest.fixture
def version(engine):
    model = register(engine, NewModel(
        created_by="test", trained_as_of=DAY, params={}, metrics={}, data_snapshot={},
        code_version="test", artifact_uri="file:///nowhere")).version
    run_id = runs.start(engine, "nightly", DAY, model)
    return PostgresPublisher(engine).allocate(run_id, model, DAY, k=5)


def test_postgres_rows_are_the_scored_lists_with_exact_float32_scores(engine, version) -> None:
    blocks = random_blocks(users=2_500, k=5, per_block=1_000)
    publisher = PostgresPublisher(engine)
    publisher.prepare(version)
    assert [publisher.write(block) for block in blocks] == [5_000, 5_000, 2_500]
    publisher.switch(version.publish_id)
    with engine.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT user_id, array_agg(item_id ORDER BY rank), array_agg(score ORDER BY rank),"
            " min(rank), max(rank) FROM batchscore.predictions WHERE publish_id = :id"
            " GROUP BY user_id ORDER BY user_id"), {"id": version.publish_id}).all()
    expected = [row for block in blocks for row in zip(*block.to_pydict().values(), strict=True)]
    assert len(stored) == len(expected) == 2_500
    for (user, items, scores, low, high), (want_user, want_items, want_scores) in zip(
            stored, expected, strict=True):
        assert (user, items, low, high) == (want_user, want_items, 1, 5)
        assert np.array_equal(np.float32(scores), np.float32(want_scores))
    assert (publisher.users, publisher.rows) == (2_500, 12_500)


def test_redis_values_are_byte_for_byte_encode_items(redis_client, redis_admin, version
                                                     ) -> None:
    blocks = random_blocks(users=2_300, k=7, per_block=1_000)
    publisher = RedisPublisher(redis_client, KEYS)
    publisher.prepare(version)
    assert sum(publisher.write(block) for block in blocks) == 2_300
    for block in blocks:
        for user, items, scores in zip(*block.to_pydict().values(), strict=True):
            assert redis_client.get(KEYS.user_key(version.publish_id, user)) == (
                contract.encode_items(items, scores))
    # every user key, the set of versions reconcile reads, and the version's users record,
    # which names each user once
    assert redis_admin.dbsize() == 2_300 + 1 + 1
    record = redis_client.get(KEYS.users_key(version.publish_id))
    assert contract.decode_user_ids(record).tolist() == list(range(1, 2_301))
    assert 0 < redis_client.ttl(KEYS.users_key(version.publish_id)) <= 2 * 86_400
    # written aside: each key expires unless the version is served
    assert 0 < redis_client.ttl(KEYS.user_key(version.publish_id, 2_300)) <= 2 * 86_400


def test_a_failed_reply_raises_with_the_servers_message(redis_admin) -> None:
    redis_client = redis_admin  # a list and INCR: beyond what the writer may do
    redis_client.rpush("a-list", "x")
    [(chunk, count)] = set_with_expiry_commands(pa.array(["k1", "k2"]), pa.array(["v", "w"]),
                                                60, 10)
    wrong = b"*2\r\n$4\r\nINCR\r\n$6\r\na-list\r\n"
    with (pytest.raises(redis_lib.ResponseError, match=r"^WRONGTYPE Operation against a key"),
          pipelined_connection(redis_client) as connection):
        connection.send_packed_command([chunk, wrong])
        read_ok_replies(connection, count + 1)
    # the commands before it ran, each key with its expiry
    assert redis_client.get("k2") == b"w"
    assert 0 < redis_client.ttl("k1") <= 60
    assert redis_client.ping() is True


def test_redis_sends_the_values_the_scoring_job_encoded(redis_client, version) -> None:
    """A block with redis_value is sent as it is, not encoded again."""
    values = [contract.encode_items([5], [0.5]), contract.encode_items([6, 7], [0.25, 0.125]),
              contract.encode_items([], [])]
    scored = pa.RecordBatch.from_pydict({"user_id": [1, 2, 3], "redis_value": values})
    publisher = RedisPublisher(redis_client, KEYS)
    publisher.prepare(version)
    progress = []
    assert publisher.write_blocks([scored.slice(0, 2), scored.slice(2)],
                                  progress=progress.append) == 3
    assert progress == [2, 3]
    assert [redis_client.get(KEYS.user_key(version.publish_id, user))
            for user in (1, 2, 3)] == values
    publisher.write_meta()
    meta = contract.decode_meta(redis_client.get(KEYS.meta_key(version.publish_id)))
    assert meta["value_format"] == "binary-1"


def test_json_values_scored_by_an_earlier_release_are_sent_and_named_so(redis_client,
                                                                        version) -> None:
    """A scoring output an earlier release wrote (JSON text) is still published; the
    version's meta says its values are JSON."""
    scored = pa.RecordBatch.from_pydict({"user_id": [1], "redis_value": ["[[5,0.5]]"]})
    publisher = RedisPublisher(redis_client, KEYS)
    publisher.prepare(version)
    publisher.write(scored)
    publisher.write_meta()
    assert redis_client.get(KEYS.user_key(version.publish_id, 1)) == b"[[5,0.5]]"
    meta = contract.decode_meta(redis_client.get(KEYS.meta_key(version.publish_id)))
    assert meta["value_format"] == "json"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_the_redis_bar_moves_with_each_block(redis_client, version) -> None:
    publisher = RedisPublisher(redis_client, KEYS)
    publisher.prepare(version)
    terminal = Terminal()
    with progress("redis", 2_500, "users", verb="written", stream=terminal,
                  refresh_seconds=0) as written:
        publisher.write_blocks(random_blocks(users=2_500, k=5, per_block=1_000),
                               progress=written)
    # drawn at the start, after each of the three blocks, and as it closes
    assert [int(count) for count in re.findall(r"(\d+)/2500 ", terminal.getvalue())] == [
        0, 1_000, 2_000, 2_500, 2_500]


def test_without_a_terminal_postgres_logs_a_few_lines(engine, version, caplog) -> None:
    publisher = PostgresPublisher(engine)
    publisher.prepare(version)
    with caplog.at_level(logging.INFO, logger="jobs.platform.progress"), \
            progress("postgres", 2_500, "users", verb="written",
                     stream=io.StringIO()) as written:
        publisher.write_blocks(random_blocks(users=2_500, k=5, per_block=1_000),
                               progress=written)
    lines = [record.getMessage() for record in caplog.records
             if record.name == "jobs.platform.progress"]
    # one per block here (each passes a tenth); blocks may finish out of order
    assert len(lines) == 3
    assert lines[-1] == "postgres: 2500 / 2500 users written"


def test_postgres_loads_all_blocks_in_one_call_and_reports_progress(engine, version) -> None:
    blocks = random_blocks(users=2_500, k=5, per_block=1_000)
    publisher = PostgresPublisher(engine)
    publisher.prepare(version)
    progress = []
    assert publisher.write_blocks(iter(blocks), progress=progress.append) == 12_500
    # blocks load two at a time: the last may finish before the one before it
    assert len(progress) == 3 and progress == sorted(progress) and progress[-1] == 2_500
    publisher.switch(version.publish_id)
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT count(*), count(DISTINCT user_id) FROM batchscore.predictions"
            " WHERE publish_id = :id"), {"id": version.publish_id}).one() == (12_500, 2_500)


def test_a_failing_block_stops_the_redis_load_and_leaves_the_pool_usable(redis_client,
                                                                         version) -> None:
    def blocks():
        yield pa.RecordBatch.from_pydict({"user_id": [1], "redis_value": ["[[5,0.5]]"]})
        raise OSError("the scoring output is unreadable")

    publisher = RedisPublisher(redis_client, KEYS)
    publisher.prepare(version)
    with pytest.raises(OSError, match="unreadable"):
        publisher.write_blocks(blocks())
    assert redis_client.ping() is True


def test_a_block_the_server_refuses_loads_nothing_and_frees_every_connection(engine,
                                                                             version) -> None:
    publisher = PostgresPublisher(engine, load_connections=2)
    publisher.prepare(version)
    table = partition_name(version.publish_id)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE batchscore.{table}"
                             " ADD CONSTRAINT below_2000 CHECK (user_id < 2000)"))
    blocks = random_blocks(users=2_500, k=5, per_block=500)  # the fifth block breaks it
    with pytest.raises(psycopg2.errors.CheckViolation, match="below_2000"):
        publisher.write_blocks(blocks)
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM batchscore.{table}")).scalar() == 0
    assert engine.pool.checkedout() == 0
    publisher.abort()


def test_key_passes_read_the_users_record_and_leave_the_clients_pool_alone(
        endpoints, redis_admin, version) -> None:
    """Every pass over a version's keys finds them from its users record, and a client
    that makes many passes never runs out of its pool's connections."""
    from jobs.platform.redis_client import connect
    from jobs.publish.redis import expire_version, persist_version, retire_version

    client = connect(endpoints.redis_url, max_connections=2)
    publisher = RedisPublisher(client, KEYS)
    publisher.prepare(version)
    for block in random_blocks(users=2_300, k=3, per_block=1_000):
        publisher.write(block)
    publisher.write_fallback(pa.table({"item_id": [1], "score": [1.0]}))
    publisher.write_meta()
    publish_id = version.publish_id
    # Keys the record does not name are none of the version's: a pass leaves them be.
    redis_admin.set(KEYS.user_key(publish_id, 9_999), b"\x01\x02", ex=600)
    for _ in range(20):
        # users, fallback and meta (the record is not counted)
        assert persist_version(client, KEYS, publish_id) == 2_300 + 2
        assert expire_version(client, KEYS, publish_id, 600) == 2_300 + 2
    assert persist_version(client, KEYS, publish_id, expected_keys=2_302) == 2_302
    # Permanent already: PERSIST answers 0, so the keys are counted by EXISTS.
    assert persist_version(client, KEYS, publish_id) == 0
    assert persist_version(client, KEYS, publish_id, expected_keys=2_302) == 2_302
    assert client.ttl(KEYS.user_key(publish_id, 1)) == -1
    assert client.ttl(KEYS.users_key(publish_id)) == -1
    assert retire_version(client, KEYS, publish_id) == 2_302
    assert redis_admin.keys("*") == [KEYS.user_key(publish_id, 9_999)]
