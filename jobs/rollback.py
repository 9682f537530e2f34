"""Rolling back: serve the previous published version again, in Postgres and Redis.

No recomputation: the previous version's partition and keys are still there
(the publishers keep them for the retention period). Postgres switches first,
in one transaction that also updates the registry and records who and why;
Redis then persists the restored keys and flips its pointer. Should the Redis
step fail, ``batchscore rollback --redis-only`` points Redis at whatever
Postgres serves.
"""

from __future__ import annotations

import logging

import redis
from sqlalchemy.engine import Engine

from jobs import redis_contract as contract
from jobs.publish.postgres import PostgresPublisher, Rollback, served_publish_id
from jobs.publish.redis import RedisPublisher, require_version_keys

logger = logging.getLogger(__name__)


def roll_back(engine: Engine, client: redis.Redis, changed_by: str, reason: str,
              to: int | None = None) -> Rollback:
    """Switch both stores back to the previously served version (or ``to``)."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason; it is recorded")
    done = PostgresPublisher(engine).rollback(
        changed_by, reason, to=to,
        # Refuse before anything changes if Redis no longer has the target's keys.
        before_switch=lambda publish_id: require_version_keys(client, publish_id))
    RedisPublisher(client).restore(done.restored, done.rolled_back)
    logger.info("rolled back version %d; version %d is served again", done.rolled_back,
                done.restored)
    return done


def sync_redis(engine: Engine, client: redis.Redis) -> int | None:
    """Point Redis at the version Postgres serves; returns it (None if nothing serves)."""
    served = served_publish_id(engine)
    pointer = client.get(contract.pointer_key())
    current = int(pointer) if pointer is not None else None
    if served is not None and served != current:
        RedisPublisher(client).restore(served, current)
    return served
