"""Publishing predictions to Redis under the contract in :mod:`jobs.redis_contract`.

A version's keys are written with pipelined batches under its own prefix;
readers only find them once the pointer key names that version, and the
pointer is flipped with one SET. Keys of versions that stop being served
expire after the retention period, so a rollback within it needs no rewrite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.client import Pipeline
from redis.connection import Connection

from jobs import redis_contract as contract
from jobs.publish import PublishVersion, SwitchOutcome, read_ahead

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 7 * 86_400
# A replaced version of the same date lingers this long for readers mid-request.
SUPERSEDED_GRACE_SECONDS = 60
PIPELINE_BATCH = 1_000
SCAN_COUNT = 1_000


class RedisPublisher:
    def __init__(self, client: redis.Redis,
                 retention_seconds: int = DEFAULT_RETENTION_SECONDS) -> None:
        self.client = client
        self.retention_seconds = retention_seconds
        self.version: PublishVersion | None = None
        self.users = 0

    def prepare(self, version: PublishVersion) -> None:
        self.version = version
        # Leftovers of an earlier attempt with the same id would mix into this one.
        expire_version(self.client, version.publish_id, 0)

    def write(self, block: pa.RecordBatch) -> int:
        """Write one block's user keys; see :meth:`write_blocks`."""
        return self.write_blocks([block])

    def write_blocks(self, blocks: Iterable[pa.RecordBatch],
                     progress: Callable[[int], None] | None = None) -> int:
        """Write the user keys of every block; the users written.

        A block has ``user_id`` and either ``redis_value`` (the value as the
        scoring job encoded it) or ``items`` and ``scores`` (encoded here). The
        next block is read and framed as MSET commands on another thread while
        the current one is sent on one connection, so the server is never left
        waiting for us; replies are read a block behind. ``progress`` is called
        with the users written so far after each block.
        """
        version = self._require_version()
        before = self.users
        with pipelined_connection(self.client) as connection:
            unread = 0
            for users, commands in read_ahead(
                    (block.num_rows, self._commands(version, block)) for block in blocks):
                for command in commands:
                    connection.send_packed_command(command)
                read_replies(connection, unread)
                unread = len(commands)
                self.users += users
                if progress is not None:
                    progress(self.users)
            read_replies(connection, unread)
        return self.users - before

    @staticmethod
    def _commands(version: PublishVersion, block: pa.RecordBatch
                  ) -> list[list[memoryview | bytes]]:
        keys = contract.user_keys(version.publish_id, block.column("user_id"))
        if contract.VALUE_COLUMN in block.schema.names:
            values = block.column(contract.VALUE_COLUMN)
        else:
            values = contract.encode_items_block(block.column("items"), block.column("scores"))
        return mset_commands(keys, values, PIPELINE_BATCH)

    def write_fallback(self, popular: pa.Table) -> None:
        version = self._require_version()
        self.client.set(
            contract.popular_key(version.publish_id),
            contract.encode_items(popular.column("item_id").to_pylist(),
                                  popular.column("score").to_pylist()),
        )

    def switch(self, outcome: SwitchOutcome) -> None:
        """Write the version's meta, then flip the pointer if Postgres served it."""
        version = self._require_version()
        meta = {
            "run_id": version.run_id,
            "model_version": version.model_version,
            "logical_date": version.logical_date.isoformat(),
            "k": version.k,
            "users": self.users,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if version.canary_model_version is not None:
            meta["canary"] = {"model_version": version.canary_model_version,
                              "fraction": version.canary_fraction}
        self.client.set(contract.meta_key(version.publish_id), contract.encode_meta(meta))
        for publish_id in outcome.superseded:
            # The served one stays for the retention period: a rollback may need it.
            if publish_id != outcome.previous_served:
                expire_version(self.client, publish_id, SUPERSEDED_GRACE_SECONDS)
        if not outcome.served:
            expire_version(self.client, version.publish_id, self.retention_seconds)
            logger.info("redis: version %d written, not served", version.publish_id)
            return
        self.client.set(contract.pointer_key(), str(version.publish_id))
        if (outcome.previous_served is not None
                and outcome.previous_served != version.publish_id):
            expire_version(self.client, outcome.previous_served, self.retention_seconds)
        logger.info("redis: pointer now at version %d (%d users)", version.publish_id, self.users)

    def restore(self, publish_id: int, rolled_back: int | None) -> None:
        """Serve ``publish_id`` again, e.g. after a rollback of ``rolled_back``.

        Its keys lose their expiry before the pointer flips back to them; the
        rolled-back version's keys expire after the retention period.
        """
        require_version_keys(self.client, publish_id)
        persisted = persist_version(self.client, publish_id)
        self.client.set(contract.pointer_key(), str(publish_id))
        if rolled_back is not None and rolled_back != publish_id:
            expire_version(self.client, rolled_back, self.retention_seconds)
        logger.info("redis: pointer at version %d (%d keys kept); version %s expires",
                    publish_id, persisted, rolled_back)

    def abort(self) -> None:
        if self.version is not None:
            expire_version(self.client, self.version.publish_id, 0)
            logger.info("redis: staged version %d discarded", self.version.publish_id)

    def _require_version(self) -> PublishVersion:
        if self.version is None:
            raise RuntimeError("prepare() a version before writing or switching it")
        return self.version


class MissingVersionError(LookupError):
    """A version's keys are no longer in Redis."""


def require_version_keys(client: redis.Redis, publish_id: int) -> None:
    """Raise :class:`MissingVersionError` unless the version's meta and fallback keys exist."""
    if client.exists(contract.meta_key(publish_id), contract.popular_key(publish_id)) < 2:
        raise MissingVersionError(
            f"version {publish_id}'s keys are gone from Redis (expired after the retention "
            f"period); publish its date again instead of rolling back")


def persist_version(client: redis.Redis, publish_id: int) -> int:
    """Remove the expiry of every key of a version."""
    return for_each_key(client, publish_id, lambda pipe, key: pipe.persist(key))


def expire_version(client: redis.Redis, publish_id: int, seconds: int) -> int:
    """Expire every key of a version in ``seconds`` (0 deletes them now)."""
    if seconds > 0:
        return for_each_key(client, publish_id, lambda pipe, key: pipe.expire(key, seconds))
    return for_each_key(client, publish_id, lambda pipe, key: pipe.unlink(key))


def for_each_key(client: redis.Redis, publish_id: int,
                 command: Callable[[Pipeline, bytes], object]) -> int:
    """Queue ``command`` for every key of a version, in pipelined batches; the key count."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=contract.version_pattern(publish_id), count=SCAN_COUNT):
        command(pipe, key)
        count += 1
        if count % PIPELINE_BATCH == 0:
            pipe.execute()
    pipe.execute()
    return count


def mset_commands(keys: pa.Array, values: pa.Array, batch: int
                  ) -> list[list[memoryview | bytes]]:
    """MSET commands in the Redis protocol (RESP) setting ``keys`` to ``values``,
    ``batch`` pairs per command; each command is a list of buffers to send."""
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    if len(keys) == 0:
        return []
    pairs = pc.binary_join_element_wise(
        "$", pc.cast(pc.binary_length(keys), pa.string()), "\r\n", keys, "\r\n$",
        pc.cast(pc.binary_length(values), pa.string()), "\r\n", values, "\r\n", "")
    offsets = np.frombuffer(pairs.buffers()[1], dtype=np.int32, count=len(pairs) + 1,
                            offset=4 * pairs.offset)
    data = memoryview(pairs.buffers()[2])
    commands: list[list[memoryview | bytes]] = []
    for start in range(0, len(pairs), batch):
        stop = min(start + batch, len(pairs))
        commands.append([b"*%d\r\n$4\r\nMSET\r\n" % (2 * (stop - start) + 1),
                         data[offsets[start]:offsets[stop]]])
    return commands


@contextmanager
def pipelined_connection(client: redis.Redis) -> Iterator[Connection]:
    """A connection of the client's pool to send RESP-encoded commands on and read
    their replies as the caller chooses.

    If anything fails, the connection is dropped rather than reused with
    replies still unread; either way it goes back to the pool.
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        yield connection
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


def read_replies(connection: Connection, count: int) -> None:
    """Read ``count`` replies; an error reply raises."""
    for _ in range(count):
        connection.read_response()
