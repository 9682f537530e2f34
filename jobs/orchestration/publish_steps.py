"""The nightly's publish steps for each store, and the switch of both.

``publish_postgres`` loads the version aside in PostgreSQL (:mod:`jobs.publish.postgres`)
and ``publish_redis`` writes its keys aside in Redis (:mod:`jobs.publish.redis`); a
canary run also records which users its candidate scored. ``switch`` serves the
version in both stores under the publish lock (:mod:`jobs.publish.protocol`); a shadow
run's ``keep_aside`` attaches it in PostgreSQL without serving it. Each step can run
again after a crash: once the version was switched in, it writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict

import pyarrow.parquet as pq
import redis
from sqlalchemy.engine import Engine

from jobs.orchestration.run_state import RunState
from jobs.platform.progress import progress
from jobs.platform.redis_client import connect
from jobs.publish import POSTGRES_COLUMNS, REDIS_COLUMNS, protocol, read_blocks
from jobs.publish.postgres import (
    SWITCHED,
    Canary,
    PostgresPublisher,
    VersionStateError,
    version_status,
)
from jobs.publish.redis import RedisPublisher, refusals_explained
from jobs.scoring.score import CANARY_USERS_FILE, POPULAR_FILE, RECOMMENDATIONS_DIR

logger = logging.getLogger(__name__)


def publish_postgres(engine: Engine, state: RunState) -> RunState:
    """Load the version aside in PostgreSQL: a staged table, indexed, not yet attached.

    Run again, it discards what an earlier attempt left staged and loads
    afresh; once the version was switched in, it does nothing.
    """
    postgres = PostgresPublisher(engine)
    if state.publish_id is not None:
        status = version_status(engine, state.publish_id)
        if status in SWITCHED:
            logger.info("postgres: version %d was already switched in", state.publish_id)
            return state
        # An earlier attempt's version, staged or already discarded: load afresh.
        postgres.discard(state.publish_id)
    canary = (Canary(state.canary_model_version, state.canary_fraction)
              if state.canary_model_version is not None and state.canary_fraction else None)
    version = postgres.allocate(state.run_id, state.model_version, state.logical_date, state.k,
                                canary=canary)
    state.publish_id = version.publish_id
    state.save()
    try:
        postgres.prepare(version)
        write_scored(postgres, "postgres", POSTGRES_COLUMNS, state)
        postgres.write_fallback(pq.read_table(state.folder / POPULAR_FILE))
        postgres.finish_load()
    except BaseException:
        postgres.abort()
        raise
    state.stats.update({"publish_id": version.publish_id, "rows": postgres.rows})
    return state.save()


def write_scored(publisher: PostgresPublisher | RedisPublisher, store: str,
                 columns: Sequence[str], state: RunState) -> None:
    """Every block of the run's scoring output (``columns`` of it) to one store's staged
    version, its progress shown as users written."""
    with progress(store, int(state.stats.get("scored_users", 0)), "users",
                  verb="written") as written:
        publisher.write_blocks(read_blocks(state.folder / RECOMMENDATIONS_DIR, columns=columns),
                               progress=written)


def record_canary_users(engine: Engine, state: RunState) -> RunState:
    """A canary run's step: which users of the staged version the canary model scored."""
    if state.publish_id is None or state.canary_model_version is None:
        raise RuntimeError(f"run {state.run_id} has no staged canary version")
    postgres = PostgresPublisher(engine)
    postgres.version = state.publish_version()
    canary_users = pq.read_table(state.folder / CANARY_USERS_FILE).column("user_id")
    state.stats["canary"]["users"] = postgres.record_canary_users(
        canary_users.to_numpy(), state.canary_model_version)
    return state.save()


def publish_redis(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """Write the version's keys aside in Redis, each expiring unless the version is served.

    Safe to run again: keys are overwritten, never deleted, and once the
    version was switched in nothing is written, so a retry never touches
    what readers are served.
    """
    if state.publish_id is None:
        raise RuntimeError(f"run {state.run_id} has no version written to Postgres yet")
    status = version_status(engine, state.publish_id)
    if status in SWITCHED:
        logger.info("redis: version %d was already switched in; nothing to write",
                    state.publish_id)
        return state
    if status != "staged":
        raise VersionStateError(f"version {state.publish_id} is {status}: run "
                                "publish_postgres again before writing it to Redis")
    publisher = RedisPublisher(connect(redis_url), state.keys)
    hours = publisher.staged_ttl_seconds // 3600
    # Redis may fill up, or stop taking writes, while the version is written aside.
    with refusals_explained(f"The version being written aside is not served: readers still "
                            f"get the served one, and its keys expire within {hours} hours "
                            f"if the run cannot remove them."):
        publisher.prepare(state.publish_version())
        write_scored(publisher, "redis", REDIS_COLUMNS, state)
        publisher.write_fallback(pq.read_table(state.folder / POPULAR_FILE))
        publisher.write_meta()
    return state


def switch(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """Switch the version in, PostgreSQL then Redis, under the publish lock; then clean up.

    Safe to run again.
    """
    return switched(engine, state, connect(redis_url), shadow=False)


def keep_aside(engine: Engine, state: RunState) -> RunState:
    """A shadow run's switch: the version is attached in PostgreSQL, never served."""
    return switched(engine, state, None, shadow=True)


def switched(engine: Engine, state: RunState, client: redis.Redis | None,
             shadow: bool) -> RunState:
    """Switch the run's version under the publish lock (``client`` None for a shadow run's
    PostgreSQL-only attach) and keep what the switch did in the run's state."""
    if state.publish_id is None:
        raise RuntimeError(f"run {state.run_id} has no version written to Postgres yet")
    with protocol.publish_lock(engine, f"run {state.run_id}", state.lock_wait_seconds):
        outcome = protocol.switch(engine, client, state.keys, state.publish_id, shadow=shadow,
                                  force_serve=state.serve_older_date,
                                  keep_versions=state.keep_versions)
    state.switch = asdict(outcome)
    state.stats.update({"publish_id": state.publish_id, "served": outcome.served})
    return state.save()
