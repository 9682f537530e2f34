"""Rolling back: serve the previous published version again, in Postgres and Redis.

No recomputation: the previous version's partition and keys are still there
(Redis keeps the version served before the current one, PostgreSQL the
versions it is configured to keep). Under the publish lock, Postgres
switches first, in one transaction that also updates the registry and
records who and why; Redis then follows it (the restored keys lose their
expiry and the pointer moves by compare-and-set). A version further back,
no longer in Redis, is written to Redis again from its PostgreSQL partition
first, as reconcile does. Should the Redis step fail, ``batchscore
reconcile`` points Redis at whatever Postgres serves.
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy.engine import Connection, Engine

from jobs.contracts.redis import Keyspace
from jobs.lifecycle import registry
from jobs.publish.postgres import PostgresPublisher, Rollback
from jobs.publish.protocol import (
    DEFAULT_LOCK_WAIT_SECONDS,
    follow_postgres,
    publish_lock,
    rewrite_from_postgres,
    version_record,
)
from jobs.publish.redis import has_version_keys

logger = logging.getLogger(__name__)


def roll_back(engine: Engine, client: redis.Redis, keys: Keyspace, changed_by: str,
              reason: str,
              to: int | None = None,
              wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS) -> Rollback:
    """Switch both stores back to the previously served version (or ``to``)."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason; it is recorded")
    with publish_lock(engine, f"rollback by {changed_by}", wait_seconds):
        def mark_models(conn: Connection, done: Rollback) -> None:
            # The registry follows in the switch's transaction: the models only the
            # rolled-back version used are never promoted again automatically, and
            # the restored version's model serves again.
            for bad in done.rolled_back_models:
                registry.roll_back(conn, bad, done.restored_model, changed_by,
                                   f"publish {done.rolled_back} rolled back: {reason}")

        def in_redis(publish_id: int) -> None:
            # Before PostgreSQL switches: a version Redis no longer holds is written
            # aside again from its partition, so Redis can follow at once.
            if not has_version_keys(client, keys, publish_id):
                logger.info("redis: version %d is no longer in Redis; writing it again "
                            "from postgres", publish_id)
                rewrite_from_postgres(engine, client, keys, version_record(engine, publish_id)[0])

        done = PostgresPublisher(engine).rollback(
            changed_by, reason, to=to, before_switch=in_redis, in_transaction=mark_models)
        follow_postgres(engine, client, keys)
    logger.info("rolled back version %d; version %d is served again", done.rolled_back,
                done.restored)
    return done
