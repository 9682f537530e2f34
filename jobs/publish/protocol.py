"""The publish protocol: one publisher at a time switches both stores, PostgreSQL first.

Both stores hold a version aside, whole, before either switches to it
(``schemas/publishing.md``). Under the publish lock, a PostgreSQL advisory
lock every switch, cleanup, rollback and reconcile holds, PostgreSQL switches
in one transaction and so becomes the record of what is served; then Redis
follows it (:func:`follow_postgres`): the served version's keys lose their
expiry and the pointer moves by compare-and-set. Each step can be run again
after a crash at any point and ends in the same state.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import redis
from sqlalchemy.engine import Engine

from jobs.contracts.redis import Keyspace
from jobs.platform.config import DEFAULT_KEEP_VERSIONS
from jobs.platform.db import names_of, session_lock, statement
from jobs.platform.names import Names
from jobs.publish import PublishVersion, SwitchOutcome
from jobs.publish.postgres import PostgresPublisher, served_publish_id
from jobs.publish.redis import (
    MissingVersionError,
    RedisPublisher,
    ServeOutcome,
    pointer,
    retire_version,
    serve,
)

logger = logging.getLogger(__name__)

# The class of the advisory lock (class, object) every publisher of a deployment takes.
PUBLISH_LOCK_CLASS = 72_031
# How long a publisher waits for another one to finish before it gives up.
DEFAULT_LOCK_WAIT_SECONDS = 300.0
# Users read back from PostgreSQL at a time when Redis lost a served version.
REWRITE_BLOCK_USERS = 2_500


def publish_lock_key(names: Names) -> tuple[int, int]:
    """The advisory lock of one deployment's publishers: deployments sharing a
    database never wait for each other."""
    if names.is_default:
        return PUBLISH_LOCK_CLASS, 1
    return PUBLISH_LOCK_CLASS, zlib.crc32(names.schema.encode()) & 0x7FFF_FFFF


@contextmanager
def publish_lock(engine: Engine, holder: str,
                 wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Be the only publisher of this database for the block.

    ``holder`` says who, in ``pg_stat_activity`` and in the error another
    publisher gets when it has waited ``wait_seconds`` in vain.
    """
    with session_lock(engine, publish_lock_key(names_of(engine)), "the publish lock",
                      wait_seconds,
                      f"batchscore publish: {holder}"):
        yield


def switch(engine: Engine, client: redis.Redis | None, keys: Keyspace, publish_id: int, *,
           force_serve: bool = False, shadow: bool = False,
           keep_versions: int = DEFAULT_KEEP_VERSIONS) -> SwitchOutcome:
    """Switch a version written aside in both stores in; the caller holds the publish lock.

    PostgreSQL first (a shadow is only attached), then Redis follows what
    PostgreSQL serves, then versions beyond the kept window are dropped. Redis
    keeps the served version and the one served before it; a version this
    switch replaced without it being served, or did not serve (an older
    date), is removed from Redis at once (PostgreSQL keeps it). Safe to run
    again: a version already switched in is not switched twice, and what
    readers are served is never removed.
    """
    postgres = PostgresPublisher(engine, keep_versions=keep_versions)
    if shadow:
        outcome = postgres.keep_aside(publish_id)
    else:
        outcome = postgres.switch(publish_id, force_serve=force_serve)
        if client is None:
            raise ValueError("switching a served version in needs the Redis client")
        previous = pointer(client, keys)
        follow_postgres(engine, client, keys)
        for replaced in outcome.superseded:
            # A replaced version that was served stays as a rollback target.
            if replaced != previous:
                retire_version(client, keys, replaced)
        if not outcome.served:
            # Written for an older date: PostgreSQL keeps it; Redis holds what is served.
            retire_version(client, keys, publish_id)
    postgres.cleanup()
    return outcome


def follow_postgres(engine: Engine, client: redis.Redis, keys: Keyspace) -> ServeOutcome | None:
    """Point Redis at the version PostgreSQL serves; the caller holds the publish lock.

    Its keys lose their expiry before the pointer moves. Should Redis have
    lost some of them (a restart without its data, an expiry), they are
    written again from PostgreSQL first. None when nothing is served yet.
    """
    served = served_publish_id(engine)
    if served is None:
        return None
    version, users = version_record(engine, served)
    expected = users + 2 if users is not None else None  # meta and popular keys too
    try:
        return serve(client, keys, served, expected)
    except MissingVersionError as err:
        logger.warning("redis: %s; writing version %d again from postgres", err, served)
    rewrite_from_postgres(engine, client, keys, version)
    return serve(client, keys, served, expected)


def version_record(engine: Engine, publish_id: int) -> tuple[PublishVersion, int | None]:
    """A version as PostgreSQL records it, and its user count."""
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            "SELECT run_id, model_version, logical_date, k, canary_model_version,"
            " canary_fraction, users FROM {schema}.prediction_versions"
            " WHERE publish_id = :id"), {"id": publish_id}).one()
    return PublishVersion(publish_id=publish_id, run_id=row.run_id,
                          model_version=row.model_version, logical_date=row.logical_date,
                          k=row.k, canary_model_version=row.canary_model_version,
                          canary_fraction=row.canary_fraction), row.users


def rewrite_from_postgres(engine: Engine, client: redis.Redis, keys: Keyspace,
                          version: PublishVersion) -> int:
    """Write a version's keys to Redis aside again from its PostgreSQL partition; the users."""
    publisher = RedisPublisher(client, keys)
    publisher.prepare(version)
    with engine.connect() as conn:
        popular = conn.execute(statement(conn,
            "SELECT item_id, score FROM {schema}.popular_items WHERE publish_id = :id"
            " ORDER BY rank"), {"id": version.publish_id}).all()
        rows = conn.execution_options(stream_results=True, yield_per=REWRITE_BLOCK_USERS
                                      ).execute(statement(conn,
            "SELECT user_id, item_ids, scores FROM {schema}.prediction_lists"
            " WHERE publish_id = :id ORDER BY user_id"), {"id": version.publish_id})
        publisher.write_blocks(blocks_of(rows.partitions()))
    publisher.write_fallback(pa.table({"item_id": pa.array([r[0] for r in popular], pa.int64()),
                                       "score": pa.array([r[1] for r in popular], pa.float32())}))
    publisher.write_meta()
    logger.info("redis: version %d written again from postgres (%d users)", version.publish_id,
                publisher.users)
    return publisher.users


def blocks_of(partitions: Iterator[list]) -> Iterator[pa.RecordBatch]:
    schema = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                        ("scores", pa.list_(pa.float32()))])
    for rows in partitions:
        yield pa.RecordBatch.from_pydict(
            {"user_id": [row[0] for row in rows], "items": [row[1] for row in rows],
             "scores": [row[2] for row in rows]}, schema=schema)
