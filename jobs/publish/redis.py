"""Publishing predictions to Redis under the contract in :mod:`jobs.contracts.redis`.

A version's keys are written aside under its own prefix, each with an expiry
from the moment it exists (``SET key value EX seconds``, pipelined a chunk of
users at a time), so a run that dies leaves nothing that lives forever.
Readers only find a version once the pointer names it. Serving a version
(:func:`serve`) removes its keys' expiry, then moves the pointer by
compare-and-set from the version it replaces, then gives the replaced
version's keys the retention period. The order of both passes (user keys
first, the meta key last) lets :mod:`jobs.publish.reconcile` tell from the
meta key alone whether a pass finished; see ``schemas/publishing.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.client import Pipeline
from redis.connection import Connection

from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace
from jobs.platform.redis_client import permission_error
from jobs.publish import PublishVersion, read_ahead

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 7 * 86_400
# Keys of a version written aside live this long unless it is served first: long
# enough for the slowest run to reach its switch, short enough that a dead
# run's keys go by themselves.
STAGED_TTL_SECONDS = 2 * 86_400
# A replaced version of the same date lingers this long for readers mid-request.
SUPERSEDED_GRACE_SECONDS = 60
PIPELINE_BATCH = 1_000
SCAN_COUNT = 1_000

# The reply to every SET ... EX that succeeds.
OK_REPLY = b"+OK\r\n"
# Move the pointer (KEYS[1]) to ARGV[2] only if it holds ARGV[1] ('' = unset);
# returns 1 when it moved, else the value it holds.
COMPARE_AND_SET_SCRIPT = b"""
local current = redis.call('GET', KEYS[1])
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
if current == false then return '' end
return current
"""


class MissingVersionError(LookupError):
    """A version's keys are no longer (or not all) in Redis."""


class PointerMovedError(RuntimeError):
    """The pointer did not hold the version a switch expected to replace."""


@dataclass(frozen=True)
class ServeOutcome:
    publish_id: int
    previous: int | None
    keys: int
    moved: bool


class RedisPublisher:
    """Writes one version aside; :func:`serve` makes it the one readers get."""

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 staged_ttl_seconds: int = STAGED_TTL_SECONDS) -> None:
        if staged_ttl_seconds < 1:
            raise ValueError(f"staged_ttl_seconds must be at least 1, got {staged_ttl_seconds}")
        self.client = client
        self.keys = keys
        self.staged_ttl_seconds = staged_ttl_seconds
        self.version: PublishVersion | None = None
        self.users = 0
        # JSON only when the user values came so from a scoring output written by
        # an earlier release; the meta names it for readers in other languages.
        self.value_format = contract.VALUE_FORMAT

    def prepare(self, version: PublishVersion) -> None:
        """Start writing ``version`` aside. Keys an earlier attempt of the same
        version left are overwritten, never deleted: they may be served."""
        self.version = version
        self.users = 0
        self.value_format = contract.VALUE_FORMAT
        self.client.sadd(self.keys.versions_key(), version.publish_id)

    def write(self, block: pa.RecordBatch) -> int:
        """Write one block's user keys; see :meth:`write_blocks`."""
        return self.write_blocks([block])

    def write_blocks(self, blocks: Iterable[pa.RecordBatch],
                     progress: Callable[[int], None] | None = None) -> int:
        """Write the user keys of every block, each with the staged expiry; the users written.

        A block has ``user_id`` and either ``redis_value`` (the value as the
        scoring job encoded it) or ``items`` and ``scores`` (encoded here). The
        next block is read and framed on another thread while the current one
        is sent on one connection, as ``SET key value EX seconds`` commands
        :data:`PIPELINE_BATCH` at a time; replies are counted a chunk behind.
        ``progress`` is called with the users written so far after each block.
        """
        version = self._require_version()
        before = self.users
        with pipelined_connection(self.client) as connection:
            unread = 0
            for users, chunks in read_ahead(
                    (block.num_rows, self._commands(version, block)) for block in blocks):
                for chunk, commands in chunks:
                    connection.send_packed_command([chunk])
                    read_ok_replies(connection, unread)
                    unread = commands
                self.users += users
                if progress is not None:
                    progress(self.users)
            read_ok_replies(connection, unread)
        return self.users - before

    def _commands(self, version: PublishVersion, block: pa.RecordBatch
                  ) -> list[tuple[memoryview, int]]:
        keys = self.keys.user_keys(version.publish_id, block.column("user_id"))
        if contract.VALUE_COLUMN in block.schema.names:
            values = block.column(contract.VALUE_COLUMN)
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                self.value_format = contract.JSON_VALUE_FORMAT
        else:
            values = contract.encode_items_block(block.column("items"), block.column("scores"))
        return set_with_expiry_commands(keys, values, self.staged_ttl_seconds, PIPELINE_BATCH)

    def write_fallback(self, popular: pa.Table) -> None:
        version = self._require_version()
        self.client.set(
            self.keys.popular_key(version.publish_id),
            contract.encode_items(popular.column("item_id").to_pylist(),
                                  popular.column("score").to_pylist()),
            ex=self.staged_ttl_seconds,
        )

    def write_meta(self) -> None:
        """Write the version's meta key, last: it tells reconcile the version is whole."""
        version = self._require_version()
        meta = {
            "run_id": version.run_id,
            "model_version": version.model_version,
            "logical_date": version.logical_date.isoformat(),
            "k": version.k,
            "users": self.users,
            "value_format": self.value_format,
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if version.canary_model_version is not None:
            meta["canary"] = {"model_version": version.canary_model_version,
                              "fraction": version.canary_fraction}
        self.client.set(self.keys.meta_key(version.publish_id), contract.encode_meta(meta),
                        ex=self.staged_ttl_seconds)
        logger.info("redis: version %d written aside (%d users), expiring in %ds unless served",
                    version.publish_id, self.users, self.staged_ttl_seconds)

    def _require_version(self) -> PublishVersion:
        if self.version is None:
            raise RuntimeError("prepare() a version before writing it")
        return self.version


def pointer(client: redis.Redis, keys: Keyspace) -> int | None:
    """The publish id the pointer names, or None."""
    value = client.get(keys.pointer_key())
    return int(value) if value is not None else None


def serve(client: redis.Redis, keys: Keyspace, publish_id: int, expected_keys: int | None,
          retention_seconds: int = DEFAULT_RETENTION_SECONDS) -> ServeOutcome:
    """Make ``publish_id`` the version readers get; the caller holds the publish lock.

    Its keys lose their expiry first (user keys, then the meta key); when
    ``expected_keys`` is given and fewer keys are found, nothing moves and
    :class:`MissingVersionError` is raised. Then the pointer moves by
    compare-and-set from the version it held, and that version's keys expire
    after ``retention_seconds``. Running it again changes nothing more.
    """
    previous = pointer(client, keys)
    if previous == publish_id and meta_is_persistent(client, keys, publish_id):
        return ServeOutcome(publish_id, previous, expected_keys or 0, moved=False)
    if client.exists(keys.meta_key(publish_id)) == 0:
        raise MissingVersionError(f"version {publish_id} has no meta key in Redis: it was "
                                  "never written whole, or its keys expired")
    found = persist_version(client, keys, publish_id)
    if expected_keys is not None and found < expected_keys:
        # Put the expiry back: a version that is not served must not live forever.
        expire_version(client, keys, publish_id, SUPERSEDED_GRACE_SECONDS)
        raise MissingVersionError(f"version {publish_id} has {found} of its {expected_keys} keys "
                                  "in Redis; write it again (batchscore reconcile does)")
    moved = compare_and_set_pointer(client, keys, previous, publish_id)
    if previous is not None and previous != publish_id:
        expire_version(client, keys, previous, retention_seconds)
    logger.info("redis: pointer %s version %d (%d keys kept); version %s expires in %ds",
                "moved to" if moved else "already at", publish_id, found, previous,
                retention_seconds)
    return ServeOutcome(publish_id, previous, found, moved)


def compare_and_set_pointer(client: redis.Redis, keys: Keyspace, expected: int | None,
                            new: int) -> bool:
    """Move the pointer to ``new`` only if it holds ``expected``; whether it moved.

    Raises :class:`PointerMovedError` if it holds something else.
    """
    result = client.eval(COMPARE_AND_SET_SCRIPT, 1, keys.pointer_key(),
                         "" if expected is None else str(expected), str(new))
    if result == 1:
        return expected != new
    held = result.decode() if isinstance(result, bytes) else str(result)
    if held == str(new):
        return False
    raise PointerMovedError(f"the Redis pointer holds version {held or None}, not {expected} "
                            f"as expected; another publisher moved it")


def meta_is_persistent(client: redis.Redis, keys: Keyspace, publish_id: int) -> bool:
    """Whether the version's meta key exists without an expiry (its persist pass finished)."""
    return client.ttl(keys.meta_key(publish_id)) == -1


def require_version_keys(client: redis.Redis, keys: Keyspace, publish_id: int) -> None:
    """Raise :class:`MissingVersionError` unless the version's meta and fallback keys exist."""
    if client.exists(keys.meta_key(publish_id), keys.popular_key(publish_id)) < 2:
        raise MissingVersionError(
            f"version {publish_id}'s keys are gone from Redis (expired after the retention "
            f"period); publish its date again instead of rolling back")


def persist_version(client: redis.Redis, keys: Keyspace, publish_id: int) -> int:
    """Remove the expiry of every key of a version, the meta key last; the key count."""
    return for_each_key(client, keys, publish_id, lambda pipe, key: pipe.persist(key))


def expire_version(client: redis.Redis, keys: Keyspace, publish_id: int, seconds: int) -> int:
    """Expire every key of a version in ``seconds``, the meta key last; 0 deletes them now,
    the meta key first, and forgets the version. The key count.

    Deleting the meta key first is what lets a reader holding an older pointer
    tell a retired version from a user without predictions (``jobs.client``).
    """
    if seconds > 0:
        return for_each_key(client, keys, publish_id,
                            lambda pipe, key: pipe.expire(key, seconds))
    count = for_each_key(client, keys, publish_id, lambda pipe, key: pipe.unlink(key),
                         meta_first=True)
    client.srem(keys.versions_key(), publish_id)
    return count


def for_each_key(client: redis.Redis, keys: Keyspace, publish_id: int,
                 command: Callable[[Pipeline, bytes], object], meta_first: bool = False) -> int:
    """Queue ``command`` for every key of a version in pipelined batches, the meta key
    after all others (or, with ``meta_first``, before them); the key count."""
    meta = keys.meta_key(publish_id)
    count = 0
    pipe = client.pipeline(transaction=False)
    has_meta = client.exists(meta) == 1
    if meta_first and has_meta:
        command(pipe, meta)
        pipe.execute()
    for key in client.scan_iter(match=keys.version_pattern(publish_id), count=SCAN_COUNT):
        if key == meta:
            has_meta = True
            continue
        command(pipe, key)
        count += 1
        if count % PIPELINE_BATCH == 0:
            pipe.execute()
    pipe.execute()
    if has_meta:
        if not meta_first:
            command(pipe, meta)
            pipe.execute()
        count += 1
    return count


def known_versions(client: redis.Redis, keys: Keyspace) -> set[int]:
    """Every publish id with keys written, from the versions set; seeded by one scan of
    the meta keys when the set does not exist yet (data written by an older release)."""
    members = client.smembers(keys.versions_key())
    if members:
        return {int(member) for member in members}
    found = set()
    for key in client.scan_iter(match=keys.meta_pattern(), count=SCAN_COUNT):
        found.add(keys.publish_id_of(key))
    if found:
        client.sadd(keys.versions_key(), *found)
    return found


def set_with_expiry_commands(keys: pa.Array, values: pa.Array, seconds: int, batch: int
                             ) -> list[tuple[memoryview, int]]:
    """``SET key value EX seconds`` for each key in the Redis protocol (RESP), framed
    ``batch`` commands to a chunk; each chunk is one buffer to send, with its count."""
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    if len(keys) == 0:
        return []
    ttl = str(int(seconds))
    keys, values = pc.cast(keys, pa.binary()), pc.cast(values, pa.binary())

    def text(literal: str) -> pa.Scalar:
        return pa.scalar(literal.encode(), pa.binary())

    def length(column: pa.Array) -> pa.Array:
        return pc.cast(pc.cast(pc.binary_length(column), pa.string()), pa.binary())

    framed = pc.binary_join_element_wise(
        text("*5\r\n$3\r\nSET\r\n$"), length(keys), text("\r\n"), keys,
        text("\r\n$"), length(values), text("\r\n"), values,
        text(f"\r\n$2\r\nEX\r\n${len(ttl)}\r\n{ttl}\r\n"), text(""))
    buffer = memoryview(framed.buffers()[2])
    offsets = np.frombuffer(framed.buffers()[1], dtype=np.int32, count=len(keys) + 1,
                            offset=4 * framed.offset)
    return [(buffer[offsets[start]:offsets[min(start + batch, len(keys))]],
             min(start + batch, len(keys)) - start)
            for start in range(0, len(keys), batch)]


@contextmanager
def pipelined_connection(client: redis.Redis) -> Iterator[Connection]:
    """A new connection, made as the client's pool makes them (address, credentials,
    database), to send RESP-encoded commands on and read their replies as the
    caller chooses; it is closed afterwards, so no reply left unread can reach
    another command."""
    connection = client.connection_pool.make_connection()
    try:
        connection.connect()
        yield connection
    finally:
        connection.disconnect()


def read_ok_replies(connection: Connection, count: int) -> None:
    """Read the replies of ``count`` commands that each answer ``+OK``; any other reply
    raises :class:`redis.ResponseError` with the server's message.

    The replies are read from the connection's socket as bytes and compared whole,
    as ``redis-cli --pipe`` does: parsing each one would cost more than the server
    takes to run the SET. Nothing else has been sent on the connection since its
    handshake, so its parser holds no replies of its own.
    """
    if count == 0:
        return
    sock = connection._sock
    if sock is None:
        raise redis.ConnectionError("the connection closed before its replies were read")
    expected = OK_REPLY * count
    replies = _receive(sock, len(expected))
    if replies == expected:
        return
    start = next(i for i in range(0, len(expected), len(OK_REPLY))
                 if replies[i:i + len(OK_REPLY)] != OK_REPLY)
    while b"\r\n" not in replies[start:]:
        replies += _receive(sock, 1)
    message = bytes(replies[start:replies.index(b"\r\n", start)]).decode(errors="replace")
    message = message.removeprefix("-")
    if message.startswith("NOPERM"):
        raise permission_error(connection, "set", message)
    raise redis.ResponseError(message)


def _receive(sock: Any, size: int) -> bytearray:
    received = bytearray(size)
    view, filled = memoryview(received), 0
    while filled < size:
        try:
            got = sock.recv_into(view[filled:])
        except TimeoutError as err:
            raise redis.TimeoutError(f"timed out reading replies from Redis: {err}") from err
        except OSError as err:  # as redis-py's own reads report a lost connection
            raise redis.ConnectionError(f"lost the connection to Redis: {err}") from err
        if got == 0:
            raise redis.ConnectionError("Redis closed the connection while replies were due")
        filled += got
    return received
