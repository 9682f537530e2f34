"""Publishing predictions to Redis under the contract in :mod:`jobs.contracts.redis`.

A version's keys are written aside under its own prefix, each with an expiry
from the moment it exists (``SET key value EX seconds``, pipelined a chunk of
users at a time), so a run that dies leaves nothing that lives forever. Each
block's user ids are appended to the version's users record before its keys
are written, so the record names every key the version has, and every pass
over a version's keys reads it instead of scanning the keyspace.

Readers only find a version once the pointer names it. Serving a version
(:func:`serve`) removes its keys' expiry, then moves the pointer by
compare-and-set from the version it replaces, then retires every other
version that was served, except the one it replaced (a rollback to it stays
a pointer flip): Redis holds the served version, the one before it, and
versions being written aside. Passes that make keys permanent end with the
meta key; removal starts with it. So the meta key tells reconcile whether a
pass finished, and tells a reader whether what it read was whole; see
``schemas/publishing.md``.

Versions written by an earlier release have no users record: their keys are
found by one SCAN of the version's prefix when they are served again or
retired, the only SCAN left (the upgrade path).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.connection import Connection

from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace
from jobs.platform.redis_client import permission_error
from jobs.platform.redis_nodes import NodeGroup, NodeRoutes
from jobs.publish import PublishVersion, read_ahead

logger = logging.getLogger(__name__)

# Keys of a version written aside live this long unless it is served first: long
# enough for the slowest run to reach its switch, short enough that a dead
# run's keys go by themselves.
STAGED_TTL_SECONDS = 2 * 86_400
PIPELINE_BATCH = 1_000
SCAN_COUNT = 1_000
# Bytes of a users record read at a time (a million users).
RECORD_CHUNK_BYTES = 4 << 20
# User keys handled per pass of the key passes (persist, expire, unlink).
KEY_BLOCK = 100_000

# How long a master that went down may take to be replaced by its replica before a
# write to its slots fails (a cluster fails over after its cluster-node-timeout).
FAILOVER_TIMEOUT_SECONDS = 30.0
# How long the publisher waits for a master's replicas to confirm a block's writes.
REPLICA_WAIT_MS = 5_000

# The reply to every SET ... EX that succeeds.
OK_REPLY = b"+OK\r\n"
# The replies of PERSIST, EXPIRE, UNLINK and EXISTS on one key: it did (1) or not (0).
INTEGER_REPLY_BYTES = 4
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


# How long the write check's key lives (see check_takes_writes).
WRITE_CHECK_MILLISECONDS = 60_000
# Why Redis refuses every write, by its reply's code, and what to do about it.
WRITE_REFUSALS = {
    "MISCONF": ("it cannot save its data to disk and is set to refuse writes until it can",
                "Free disk space where it saves (its `dir`), or fix what its log names"),
    "OOM": ("it is full: its memory is at its `maxmemory` and its policy evicts nothing",
            "Raise its `maxmemory` or free memory (a version of 50 items a user takes about "
            "400 bytes a user, and Redis holds up to three while a run publishes)"),
    "READONLY": ("the writer's URL names a read-only replica",
                 "Point the writer's URL at the master"),
}


class RedisRefusesWritesError(RuntimeError):
    """Redis answers, but refuses every write; the message says why and what to do."""


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
        # The (empty) record says from now on that this version's keys are all in it.
        self.client.set(self.keys.users_key(version.publish_id), b"",
                        ex=self.staged_ttl_seconds, nx=True)

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
        A block's user ids are appended to the version's users record before
        any of its keys is sent. ``progress`` is called with the users written
        so far after each block.
        """
        version = self._require_version()
        before = self.users
        record = self.keys.users_key(version.publish_id)
        with NodeWriters(self.client) as writers:
            for users, user_ids, keys, values in read_ahead(
                    (block.num_rows, contract.encode_user_ids(block.column("user_id")),
                     *self._keys_and_values(version, block)) for block in blocks):
                pipe = self.client.pipeline(transaction=False)
                pipe.append(record, user_ids)
                pipe.expire(record, self.staged_ttl_seconds)
                pipe.execute()
                writers.set_with_expiry(keys, values, self.staged_ttl_seconds)
                self.users += users
                if progress is not None:
                    progress(self.users)
        return self.users - before

    def _keys_and_values(self, version: PublishVersion, block: pa.RecordBatch
                         ) -> tuple[pa.Array, pa.Array]:
        keys = self.keys.user_keys(version.publish_id, block.column("user_id"))
        if contract.VALUE_COLUMN in block.schema.names:
            values = block.column(contract.VALUE_COLUMN)
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                self.value_format = contract.JSON_VALUE_FORMAT
        else:
            values = contract.encode_items_block(block.column("items"), block.column("scores"))
        return pc.cast(keys, pa.binary()), pc.cast(values, pa.binary())

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


def check_takes_writes(client: redis.Redis, keys: Keyspace) -> None:
    """Raise :class:`RedisRefusesWritesError` when Redis refuses writes: a run checks
    this before it loads and scores its input, which takes minutes at scale, rather than
    learn it when it writes its version aside. One key is written and removed at once
    (:meth:`Keyspace.write_check_key`; it expires within a minute if the removal is
    lost)."""
    with refusals_explained("Nothing was loaded, scored or published, and the served "
                            "version stays."):
        client.set(keys.write_check_key(), b"1", px=WRITE_CHECK_MILLISECONDS)
        client.unlink(keys.write_check_key())


@contextmanager
def refusals_explained(stopped: str) -> Iterator[None]:
    """Within the block, a reply refusing every write raises :func:`refused_writes`'s
    error, the reply chained; every other error passes as it is."""
    try:
        yield
    except redis.ResponseError as err:
        clear = refused_writes(err, stopped)
        if clear is None:
            raise
        raise clear from err


def refused_writes(err: redis.ResponseError, stopped: str) -> RedisRefusesWritesError | None:
    """The clear error for a reply refusing every write (:data:`WRITE_REFUSALS`), or None
    for any other reply: why Redis refuses, its own reply, what the refusal stopped and
    left as it was (``stopped``), what to do, and to run the date again."""
    code = refusal_code(err)
    if code is None:
        return None
    why, fix = WRITE_REFUSALS[code]
    detail = server_reply(err).removeprefix(f"{code} ").strip().rstrip(".")
    return RedisRefusesWritesError(
        f"Redis refuses writes: {why} ({code}: {detail}). {stopped} {fix}, then run the "
        f"date again.")


def refusal_code(err: redis.ResponseError) -> str | None:
    """The code of a reply refusing every write (a key of WRITE_REFUSALS), or None.
    redis-py drops the code of the replies it has a class for."""
    if isinstance(err, redis.exceptions.OutOfMemoryError):
        return "OOM"
    if isinstance(err, redis.ReadOnlyError):
        return "READONLY"
    code = server_reply(err).split(" ", 1)[0]
    return code if code in WRITE_REFUSALS else None


def server_reply(err: redis.ResponseError) -> str:
    """The server's reply in ``err``: redis-py puts the failing command of a pipeline
    before it."""
    return str(err).rpartition(" of pipeline caused error: ")[2]


def pointer(client: redis.Redis, keys: Keyspace) -> int | None:
    """The publish id the pointer names, or None."""
    value = client.get(keys.pointer_key())
    return int(value) if value is not None else None


def serve(client: redis.Redis, keys: Keyspace, publish_id: int,
          expected_keys: int | None) -> ServeOutcome:
    """Make ``publish_id`` the version readers get; the caller holds the publish lock.

    Its keys lose their expiry first (user keys, then the meta key); when
    ``expected_keys`` is given and fewer keys are found, nothing moves and
    :class:`MissingVersionError` is raised. Then the pointer moves by
    compare-and-set from the version it held, which is kept, and every other
    version that was served is retired (:func:`retire_served_others`).
    Running it again changes nothing more.
    """
    previous = pointer(client, keys)
    if previous == publish_id and meta_is_persistent(client, keys, publish_id):
        return ServeOutcome(publish_id, previous, expected_keys or 0, moved=False)
    if client.exists(keys.meta_key(publish_id)) == 0:
        raise MissingVersionError(f"version {publish_id} has no meta key in Redis: it was "
                                  "never written whole, or its keys expired")
    found = persist_version(client, keys, publish_id, expected_keys)
    if expected_keys is not None and found < expected_keys:
        # Put the expiry back: a version that is not served must not live forever.
        expire_version(client, keys, publish_id, STAGED_TTL_SECONDS)
        raise MissingVersionError(f"version {publish_id} has {found} of its {expected_keys} keys "
                                  "in Redis; write it again (batchscore reconcile does)")
    moved = compare_and_set_pointer(client, keys, previous, publish_id)
    retired = (retire_served_others(client, keys, {publish_id, previous})
               if previous != publish_id else [])
    logger.info("redis: pointer %s version %d (%d keys kept); version %s kept for rollback; "
                "retired: %s", "moved to" if moved else "already at", publish_id, found,
                previous, retired or "none")
    return ServeOutcome(publish_id, previous, found, moved)


def retire_served_others(client: redis.Redis, keys: Keyspace, keep: set[int | None]
                         ) -> list[int]:
    """Remove every version but ``keep`` that was served (its meta key is permanent) or
    was written by an earlier release (its meta has no ``value_format``); the ids.

    Versions being written aside are left alone: they are served next, or expire.
    """
    retired = []
    for publish_id in sorted(known_versions(client, keys) - keep):
        meta = client.get(keys.meta_key(publish_id))
        if meta is None:
            continue
        if (meta_is_persistent(client, keys, publish_id)
                or "value_format" not in contract.decode_meta(meta)):
            retire_version(client, keys, publish_id)
            retired.append(publish_id)
    return retired


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


def has_version_keys(client: redis.Redis, keys: Keyspace, publish_id: int) -> bool:
    """Whether the version's meta and fallback keys are in Redis."""
    return client.exists(keys.meta_key(publish_id), keys.popular_key(publish_id)) == 2


def persist_version(client: redis.Redis, keys: Keyspace, publish_id: int,
                    expected_keys: int | None = None) -> int:
    """Remove the expiry of every key of a version, the meta key last; the keys found.

    PERSIST says only whether it removed an expiry, so when it removed fewer than
    ``expected_keys`` (some were permanent already, or are gone) the keys are
    counted again by EXISTS.
    """
    found = key_pass(client, keys, publish_id, ("PERSIST",))
    if expected_keys is not None and found < expected_keys:
        found = key_pass(client, keys, publish_id, ("EXISTS",))
    return found


def expire_version(client: redis.Redis, keys: Keyspace, publish_id: int, seconds: int) -> int:
    """Expire every key of a version in ``seconds``, the meta key last; the key count."""
    if seconds < 1:
        raise ValueError(f"seconds must be at least 1, got {seconds}; retire_version "
                         "removes a version at once")
    return key_pass(client, keys, publish_id, ("EXPIRE", str(int(seconds))))


def retire_version(client: redis.Redis, keys: Keyspace, publish_id: int) -> int:
    """Delete every key of a version now, and forget it; the keys deleted.

    The meta key goes first: a reader holding an older pointer then tells a
    retired version from a user without predictions (``jobs.client``). The
    users record goes last, so a pass cut short can be run again.
    """
    count = key_pass(client, keys, publish_id, ("UNLINK",), meta_first=True)
    client.srem(keys.versions_key(), publish_id)
    return count


def key_pass(client: redis.Redis, keys: Keyspace, publish_id: int, command: tuple[str, ...],
             meta_first: bool = False) -> int:
    """Run ``command`` (its name, then any arguments after the key) on every key of a
    version: its user keys, its fallback, then its meta key (with ``meta_first``, the
    meta key before all others), and its users record last of all; how many of the
    version's keys (not counting the record) it answered 1 for."""
    meta, record = keys.meta_key(publish_id), keys.users_key(publish_id)
    blocks = user_key_blocks(client, keys, publish_id)
    with NodeWriters(client) as writers:

        def one(key: bytes) -> int:
            return writers.run(command, pa.array([key], pa.binary()))

        done = one(meta) if meta_first else 0
        for user_keys in blocks:
            done += writers.run(command, user_keys)
        done += one(keys.popular_key(publish_id))
        if not meta_first:
            done += one(meta)
        one(record)
        writers.wait_for_replicas()
    return done


def user_key_blocks(client: redis.Redis, keys: Keyspace, publish_id: int
                    ) -> Iterator[pa.BinaryArray]:
    """A version's user keys, :data:`KEY_BLOCK` at a time, from its users record.

    A version an earlier release wrote has no record: while its meta key (without
    ``value_format``) is there, its keys are found by one SCAN of its prefix (the
    upgrade path; versions this release writes have a record from the moment
    they are prepared, which outlives their keys). Where they come from is
    decided at once, before the caller removes the meta key.
    """
    record = read_users_record(client, keys, publish_id)
    if record is not None:
        return record_key_blocks(keys, publish_id, contract.decode_user_ids(record))
    meta = client.get(keys.meta_key(publish_id))
    if meta is None or "value_format" in contract.decode_meta(meta):
        # Written by this release with its record gone (its keys expired with it), or
        # an earlier release's version whose keys expired: nothing left to find.
        return iter(())
    return scanned_key_blocks(client, keys, publish_id)


def record_key_blocks(keys: Keyspace, publish_id: int, user_ids: np.ndarray
                      ) -> Iterator[pa.BinaryArray]:
    for start in range(0, len(user_ids), KEY_BLOCK):
        yield pc.cast(keys.user_keys(publish_id, pa.array(user_ids[start:start + KEY_BLOCK])),
                      pa.binary())


def scanned_key_blocks(client: redis.Redis, keys: Keyspace, publish_id: int
                       ) -> Iterator[pa.BinaryArray]:
    """The user keys of a version an earlier release wrote, by one SCAN of its prefix."""
    logger.info("redis: version %d has no users record (an earlier release wrote it): "
                "finding its keys by a SCAN", publish_id)
    user_prefix = keys.version_prefix(publish_id) + b"u:"
    found: list[bytes] = []
    for key in client.scan_iter(match=keys.version_pattern(publish_id), count=SCAN_COUNT):
        if key.startswith(user_prefix):
            found.append(key)
        if len(found) == KEY_BLOCK:
            yield pa.array(found, pa.binary())
            found = []
    if found:
        yield pa.array(found, pa.binary())


def read_users_record(client: redis.Redis, keys: Keyspace, publish_id: int) -> bytes | None:
    """A version's users record, read :data:`RECORD_CHUNK_BYTES` at a time; None when it
    has none."""
    key = keys.users_key(publish_id)
    if not client.exists(key):
        return None
    parts = []
    start = 0
    while True:
        part = client.getrange(key, start, start + RECORD_CHUNK_BYTES - 1)
        parts.append(part)
        if len(part) < RECORD_CHUNK_BYTES:
            return b"".join(parts)
        start += RECORD_CHUNK_BYTES


def run_on_keys(connection: Connection, command: tuple[str, ...], keys: pa.Array,
                follow: Callable[[tuple[str, ...], bytes], int] | None = None) -> int:
    """Send ``command`` for each key on ``connection``, :data:`PIPELINE_BATCH` to a
    buffer, replies read a buffer behind; how many answered 1. A key a cluster node
    redirects (``MOVED``, ``ASK``) is run again by ``follow``, which says whether it
    answered 1; without ``follow`` a redirection is an error."""
    done = 0
    redirected: list[int] = []
    unread, unread_from, sent = 0, 0, 0
    for chunk, count in key_commands(command, keys, PIPELINE_BATCH):
        connection.send_packed_command([chunk])
        ones, moved = count_integer_replies(connection, unread, command[0])
        done += ones
        redirected += [unread_from + position for position in moved]
        unread, unread_from, sent = count, sent, sent + count
    ones, moved = count_integer_replies(connection, unread, command[0])
    done += ones
    redirected += [unread_from + position for position in moved]
    for position in redirected:
        key = keys[position].as_py()
        if follow is None:
            raise redis.ResponseError(f"{command[0]} {key!r} was redirected to another node")
        done += follow(command, key)
    return done


def send_sets(connection: Connection, keys: pa.Array, values: pa.Array, seconds: int,
              replicas: int = 0) -> tuple[list[int], int]:
    """``SET key value EX seconds`` for each key on ``connection``, :data:`PIPELINE_BATCH`
    to a buffer, replies read a buffer behind; the positions of the keys a cluster node
    redirected (``MOVED``, ``ASK``) instead of setting them. With ``replicas``, a
    ``WAIT`` for that many follows the last command in the same pipeline (no round
    trip of its own); the second value is how many confirmed (0 without)."""
    redirected: list[int] = []
    unread, unread_from, sent = 0, 0, 0
    for chunk, count in set_with_expiry_commands(keys, values, seconds, PIPELINE_BATCH):
        connection.send_packed_command([chunk])
        redirected += [unread_from + position for position in read_ok_replies(connection, unread)]
        unread, unread_from, sent = count, sent, sent + count
    if replicas:
        connection.send_packed_command([wait_command(replicas, REPLICA_WAIT_MS)])
    redirected += [unread_from + position for position in read_ok_replies(connection, unread)]
    return redirected, read_integer_reply(connection) if replicas else 0


def key_commands(command: tuple[str, ...], keys: pa.Array, batch: int
                 ) -> list[tuple[memoryview, int]]:
    """``command[0] key command[1:]...`` for each key in the Redis protocol (RESP),
    ``batch`` commands to a chunk; each chunk is one buffer to send, with its count."""
    name, *args = command
    keys = pc.cast(keys, pa.binary())
    head = f"*{2 + len(args)}\r\n${len(name)}\r\n{name}\r\n$"
    tail = "".join(f"\r\n${len(arg)}\r\n{arg}" for arg in args) + "\r\n"
    framed = pc.binary_join_element_wise(
        resp_text(head), resp_length(keys), resp_text("\r\n"), keys, resp_text(tail),
        resp_text(""))
    return chunked(framed, batch)


def resp_text(literal: str) -> pa.Scalar:
    return pa.scalar(literal.encode(), pa.binary())


def resp_length(column: pa.Array) -> pa.Array:
    return pc.cast(pc.cast(pc.binary_length(column), pa.string()), pa.binary())


def chunked(framed: pa.Array, batch: int) -> list[tuple[memoryview, int]]:
    buffer = memoryview(framed.buffers()[2])
    offsets = np.frombuffer(framed.buffers()[1], dtype=np.int32, count=len(framed) + 1,
                            offset=4 * framed.offset)
    return [(buffer[offsets[start]:offsets[min(start + batch, len(framed))]],
             min(start + batch, len(framed)) - start)
            for start in range(0, len(framed), batch)]


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
    framed = pc.binary_join_element_wise(
        resp_text("*5\r\n$3\r\nSET\r\n$"), resp_length(keys), resp_text("\r\n"), keys,
        resp_text("\r\n$"), resp_length(values), resp_text("\r\n"), values,
        resp_text(f"\r\n$2\r\nEX\r\n${len(ttl)}\r\n{ttl}\r\n"), resp_text(""))
    return chunked(framed, batch)


@contextmanager
def pipelined_connection(client: redis.Redis) -> Iterator[Connection]:
    """A new connection, made as the client's pool makes them (its class, address,
    credentials, database) but not counted by the pool, which would refuse more
    than ``max_connections`` in the client's life; to send RESP-encoded commands
    on and read their replies as the caller chooses. It is closed afterwards, so
    no reply left unread can reach another command."""
    connection = open_connection(client)
    try:
        yield connection
    finally:
        connection.disconnect()


class NodeWriters:
    """A connection to each node that keys go to, for pipelined commands.

    For one server, one connection. For a Redis Cluster, one to each master,
    used in parallel (a thread each): a block's keys are grouped by the master
    that serves their slot (:class:`jobs.platform.redis_nodes.NodeRoutes`); a
    key a node redirects (``MOVED`` during a resharding, ``ASK`` while its slot
    migrates) is sent again through the cluster client, which follows the
    redirection; and when a master goes down, its keys are sent again to the
    replica that takes its slots, once the cluster has failed over (within
    :data:`FAILOVER_TIMEOUT_SECONDS`, else the error says so). Each master's
    share of a block of ``SET`` commands ends with a ``WAIT`` in the same
    pipeline, on its own thread, so its replicas confirm what it was sent
    before the next block and a failover loses none of the blocks before;
    :meth:`wait_for_replicas` does the same for every master at once.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.routes = NodeRoutes(client)
        self._connections: dict[str, Connection] = {}
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> NodeWriters:
        return self

    def __exit__(self, *exc: object) -> None:
        for connection in self._connections.values():
            connection.disconnect()
        self._connections.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=True)

    def set_with_expiry(self, keys: pa.Array, values: pa.Array, seconds: int) -> None:
        """``SET key value EX seconds`` for each key, on the node that serves it, each
        master's share confirmed by its replicas."""
        redirected: list[int] = []

        def send(connection: Connection, group: NodeGroup) -> int:
            node_keys, node_values = take(keys, group.positions), take(values, group.positions)
            wanted = self.routes.replicas.get(group.name, 0)
            moved, confirmed = send_sets(connection, node_keys, node_values, seconds, wanted)
            check_replicas(group.name, wanted, confirmed)
            for position in moved:
                self.client.set(node_keys[position].as_py(), node_values[position].as_py(),
                                ex=seconds)
            redirected.extend(moved)
            return len(group.positions)

        self._on_nodes(keys, send)
        if redirected:  # set through the cluster client, on masters that may not have waited
            self.wait_for_replicas()

    def run(self, command: tuple[str, ...], keys: pa.Array) -> int:
        """``command`` on each key, on the node that serves it; how many answered 1."""

        def follow(command: tuple[str, ...], key: bytes) -> int:
            return int(self.client.execute_command(command[0], key, *command[1:]) == 1)

        return self._on_nodes(keys, lambda connection, group: run_on_keys(
            connection, command, take(keys, group.positions), follow))

    def wait_for_replicas(self) -> None:
        """Each master's replicas confirm every write sent to it so far (a cluster's
        masters; nothing for one server). A replica that does not within
        :data:`REPLICA_WAIT_MS` is logged, not waited for longer."""
        if not self.routes.cluster:
            return
        for name, connection in self._connections.items():
            wanted = self.routes.replicas.get(name, 0)
            if wanted == 0:
                continue
            connection.send_packed_command([wait_command(wanted, REPLICA_WAIT_MS)])
            check_replicas(name, wanted, read_integer_reply(connection))

    def _connection(self, group: NodeGroup) -> Connection:
        connection = self._connections.get(group.name)
        if connection is None:
            connection = open_connection(group.client)
            self._connections[group.name] = connection
        return connection

    def _on_nodes(self, keys: pa.Array, work: Callable[[Connection, NodeGroup], int]) -> int:
        """``work`` on each node's share of ``keys`` (its connection, and its group: the
        keys' positions), in parallel on a cluster; the sum of what it returns."""
        pending = self.routes.groups(keys)
        total = 0
        deadline: float | None = None
        while True:
            failed = []
            for group, outcome in self._each(pending, work):
                if (isinstance(outcome, (redis.ConnectionError, redis.TimeoutError))
                        and self.routes.cluster):
                    failed.append((group, outcome))
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    total += outcome
            if not failed:
                return total
            for group, _ in failed:
                dropped = self._connections.pop(group.name, None)
                if dropped is not None:
                    dropped.disconnect()
            if deadline is None:
                deadline = time.monotonic() + FAILOVER_TIMEOUT_SECONDS
            self._await_failover([group for group, _ in failed], failed[0][1], deadline)
            positions = np.concatenate([group.positions for group, _ in failed])
            pending = [NodeGroup(group.name, group.client, positions[group.positions])
                       for group in self.routes.groups(take(keys, positions))]

    def _each(self, groups: list[NodeGroup], work: Callable[[Connection, NodeGroup], int]
              ) -> list[tuple[NodeGroup, Any]]:
        def attempt(group: NodeGroup) -> Any:
            try:
                return work(self._connection(group), group)
            except Exception as err:  # handed back, to tell a lost node from the rest
                return err

        if len(groups) == 1:
            return [(groups[0], attempt(groups[0]))]
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=len(self.routes.nodes()),
                                               thread_name_prefix="redis-node")
        return list(zip(groups, self._threads.map(attempt, groups), strict=True))

    def _await_failover(self, lost: list[NodeGroup], error: Exception, deadline: float) -> None:
        names = {group.name for group in lost}
        logger.warning("redis: lost the connection to master %s (%s); waiting for a replica "
                       "to take its slots", ", ".join(sorted(names)), error)
        while True:
            try:
                self.routes.refresh()
                if not names & {name for name, _ in self.routes.nodes()}:
                    logger.info("redis: the cluster failed over; sending master %s's keys "
                                "again to the nodes that serve them now", ", ".join(names))
                    return
            except (redis.ConnectionError, redis.TimeoutError,
                    redis.exceptions.ClusterError, redis.exceptions.RedisClusterException):
                pass  # the slot map is being rebuilt
            if time.monotonic() > deadline:
                raise redis.ConnectionError(
                    f"Redis master {', '.join(sorted(names))} went down and no replica took "
                    f"its slots within {FAILOVER_TIMEOUT_SECONDS:.0f}s ({error}); nothing "
                    "is served from this version: run again once the cluster is healthy "
                    "(batchscore reconcile shows what it serves)") from error
            time.sleep(0.2)


def take(values: pa.Array, positions: np.ndarray) -> pa.Array:
    if len(positions) == len(values):
        return values  # every position, in order: the routes' only group
    return values.take(pa.array(positions))


def check_replicas(master: str, wanted: int, confirmed: int) -> None:
    """Log a master whose replicas did not all confirm its writes in time: they are not
    waited for longer."""
    if confirmed < wanted:
        logger.warning("redis: %d of master %s's %d replicas confirmed its writes within "
                       "%d ms", confirmed, master, wanted, REPLICA_WAIT_MS)


def read_integer_reply(connection: Connection) -> int:
    """The reply of one command that answers an integer (``WAIT``'s replicas)."""
    return int(line_replies(connection_socket(connection), bytearray(), 1,
                            INTEGER_REPLY_BYTES)[0].removeprefix(b":"))


def wait_command(replicas: int, timeout_ms: int) -> bytes:
    args = [b"WAIT", str(replicas).encode(), str(timeout_ms).encode()]
    return b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


def open_connection(client: redis.Redis) -> Connection:
    """A new connection to ``client``'s server, made as its pool makes them (see
    :func:`pipelined_connection`); the caller disconnects it."""
    pool = client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    connection.connect()
    return connection


def read_ok_replies(connection: Connection, count: int) -> list[int]:
    """Read the replies of ``count`` commands that each answer ``+OK``; the positions of
    those a cluster node redirected (``MOVED``, ``ASK``). Any other reply raises
    :class:`redis.ResponseError` with the server's message.

    The replies are read from the connection's socket as bytes and compared whole,
    as ``redis-cli --pipe`` does: parsing each one would cost more than the server
    takes to run the SET. Nothing else has been sent on the connection since its
    handshake, so its parser holds no replies of its own.
    """
    if count == 0:
        return []
    sock = connection_socket(connection)
    expected = OK_REPLY * count
    replies = _receive(sock, len(expected))
    if replies == expected:
        return []
    lines = line_replies(sock, replies, count, len(OK_REPLY))
    return redirections(connection, "set", lines, OK_REPLY[:-2])


def count_integer_replies(connection: Connection, count: int, command: str
                          ) -> tuple[int, list[int]]:
    """Read the replies of ``count`` commands that each answer ``:0`` or ``:1``; how many
    answered 1, and the positions of those a cluster node redirected. Any other reply
    raises with the server's message, as :func:`read_ok_replies` does."""
    if count == 0:
        return 0, []
    sock = connection_socket(connection)
    replies = _receive(sock, INTEGER_REPLY_BYTES * count)
    table = np.frombuffer(bytes(replies), dtype=np.uint8).reshape(count, INTEGER_REPLY_BYTES)
    whole = ((table[:, 0] == ord(":")) & ((table[:, 1] == ord("0")) | (table[:, 1] == ord("1")))
             & (table[:, 2] == ord("\r")) & (table[:, 3] == ord("\n")))
    if whole.all():
        return int((table[:, 1] == ord("1")).sum()), []
    lines = line_replies(sock, replies, count, INTEGER_REPLY_BYTES)
    moved = redirections(connection, command.lower(), lines, b":0", b":1")
    return sum(line == b":1" for line in lines), moved


def connection_socket(connection: Connection) -> Any:
    sock = connection._sock
    if sock is None:
        raise redis.ConnectionError("the connection closed before its replies were read")
    return sock


def line_replies(sock: Any, received: bytearray, count: int, shortest: int) -> list[bytes]:
    """``count`` one-line replies (each at least ``shortest`` bytes with its CRLF) whose
    first bytes are ``received``, the rest read from ``sock``; without their CRLF.

    Never reads past the last of them: replies to commands sent after them may be
    on their way.
    """
    lines: list[bytes] = []
    start = 0
    while len(lines) < count:
        end = received.find(b"\r\n", start)
        if end >= 0:
            lines.append(bytes(received[start:end]))
            start = end + 2
            continue
        pending = len(received) - start
        received += _receive(sock, max(1, (count - len(lines)) * shortest - pending))
    return lines


def redirections(connection: Connection, command: str, lines: list[bytes],
                 *fine: bytes) -> list[int]:
    """The positions of the ``MOVED`` and ``ASK`` replies among ``lines``; any reply that
    is neither one of ``fine`` nor a redirection raises with the server's message."""
    moved = []
    for position, line in enumerate(lines):
        if line in fine:
            continue
        message = line.decode(errors="replace").removeprefix("-")
        if message.startswith(("MOVED ", "ASK ")):
            moved.append(position)
        elif message.startswith("NOPERM"):
            raise permission_error(connection, command, message)
        else:
            raise redis.ResponseError(message)
    return moved


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
