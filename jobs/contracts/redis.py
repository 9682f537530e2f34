"""The Redis key and value contract shared by the publisher and the read client.

Documented in ``schemas/redis.md``; every key is built here and nowhere else, by a
:class:`Keyspace` for the deployment's prefix (``batchscore`` unless
``BATCHSCORE_REDIS_PREFIX`` says otherwise; below, as by default):

- ``batchscore:recs:current`` -> the served ``publish_id`` as decimal text.
- ``batchscore:recs:v{publish_id}:meta`` -> JSON object: run_id, model_version,
  logical_date, k, users, published_at.
- ``batchscore:recs:v{publish_id}:u:{user_id}`` -> JSON array of
  ``[item_id, score]`` pairs, best first.
- ``batchscore:recs:v{publish_id}:popular`` -> the same layout, the fallback list.
- ``batchscore:recs:versions`` -> a set of every ``publish_id`` written, so that
  reconcile finds each version without scanning the keyspace.
- ``batchscore:recs:users:v{publish_id}`` -> the user ids a version has keys for,
  little-endian uint32, appended before the keys they name are written: how
  the publisher finds a version's keys without scanning. Not for readers.
- ``batchscore:recs:write-check`` -> written and removed at once by each run
  before its input is loaded, to learn that Redis takes writes; it expires within a
  minute. Not for readers.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.platform.names import DEFAULT_REDIS_PREFIX, checked

# The scoring output's column holding each user's value, encoded where the
# scoring runs (see jobs.scoring.transforms.top_k_unseen), so that publishing only sends it.
VALUE_COLUMN = "redis_value"


@dataclass(frozen=True)
class Keyspace:
    """Every key of one deployment, under its prefix (``BATCHSCORE_REDIS_PREFIX``).

    Built once from the settings and handed to the publisher, reconcile, the
    read client and status, so that two deployments sharing one Redis never
    name each other's keys. The prefix is checked by
    :func:`jobs.platform.names.checked`: it carries no glob character into a
    SCAN pattern or an ACL rule.
    """

    prefix: str = DEFAULT_REDIS_PREFIX

    def __post_init__(self) -> None:
        checked("BATCHSCORE_REDIS_PREFIX", self.prefix)

    @property
    def namespace(self) -> str:
        return f"{self.prefix}:recs"

    def pointer_key(self) -> bytes:
        return f"{self.namespace}:current".encode()

    def versions_key(self) -> bytes:
        return f"{self.namespace}:versions".encode()

    def version_prefix(self, publish_id: int) -> bytes:
        return f"{self.namespace}:v{int(publish_id)}:".encode()

    def version_pattern(self, publish_id: int) -> bytes:
        """A SCAN pattern matching every key of one published version."""
        return self.version_prefix(publish_id) + b"*"

    def meta_pattern(self) -> bytes:
        """A SCAN pattern matching the meta key of every version."""
        return f"{self.namespace}:v*:meta".encode()

    def publish_id_of(self, key: bytes) -> int:
        """The publish id in one of a version's keys."""
        prefix = f"{self.namespace}:v".encode()
        if not key.startswith(prefix):
            raise ValueError(f"{key!r} is not a key of a published version")
        return int(key[len(prefix):].split(b":", 1)[0])

    def meta_key(self, publish_id: int) -> bytes:
        return self.version_prefix(publish_id) + b"meta"

    def users_key(self, publish_id: int) -> bytes:
        """The record of a version's user ids: outside ``v{publish_id}:``, where the
        reader may GET, as only the publisher needs it."""
        return f"{self.namespace}:users:v{int(publish_id)}".encode()

    def write_check_key(self) -> bytes:
        """The key a run writes before its input is loaded, to learn that Redis takes
        writes (:func:`jobs.publish.redis.check_takes_writes`)."""
        return f"{self.namespace}:write-check".encode()

    def popular_key(self, publish_id: int) -> bytes:
        return self.version_prefix(publish_id) + b"popular"

    def user_key(self, publish_id: int, user_id: int) -> bytes:
        return self.version_prefix(publish_id) + f"u:{int(user_id)}".encode()

    def user_keys(self, publish_id: int, user_ids: pa.Array) -> pa.StringArray:
        """:meth:`user_key` for many users at once, byte for byte the same."""
        prefix = (self.version_prefix(publish_id) + b"u:").decode()
        return pc.binary_join_element_wise(
            prefix, pc.cast(user_ids, pa.int64()).cast(pa.string()), "")


# The format of user and popular values a version's meta names (``value_format``).
# Versions written by earlier releases have no such field: their values are JSON.
VALUE_FORMAT = "binary-1"
JSON_VALUE_FORMAT = "json"
# The first byte of a binary value: its layout's version. It is never ``[`` (0x5b),
# the first byte of every JSON value, so a reader tells the two apart by it.
BINARY_LAYOUT_VERSION = 1
HEADER_BYTES = 2
# Item ids are written in 2 bytes when every id of the value is below this.
NARROW_ID_LIMIT = 1 << 16
MAX_ITEM_ID = (1 << 32) - 1
SCORE_BYTES = 4


def encode_items(items: Sequence[int], scores: Sequence[float]) -> bytes:
    """One list in the binary layout of ``schemas/redis.md``, best first.

    Header: the layout version (1) and the width of an item id in bytes (2 when
    every id is below 65536, else 4); then the item ids as little-endian
    unsigned integers of that width; then the scores as little-endian float32.
    """
    if len(items) != len(scores):
        raise ValueError(f"{len(items)} items but {len(scores)} scores")
    ids = np.asarray(items, dtype=np.int64)
    check_item_ids(ids)
    width = 2 if not len(ids) or ids.max() < NARROW_ID_LIMIT else 4
    return (bytes([BINARY_LAYOUT_VERSION, width])
            + ids.astype(f"<u{width}").tobytes()
            + np.asarray(scores, dtype="<f4").tobytes())


def check_item_ids(ids: np.ndarray) -> None:
    if len(ids) and (ids.min() < 0 or ids.max() > MAX_ITEM_ID):
        bad = ids[(ids < 0) | (ids > MAX_ITEM_ID)][0]
        raise ValueError(f"item id {bad} does not fit the Redis value's unsigned 32-bit "
                         f"item ids (0 to {MAX_ITEM_ID})")


def decode_items(value: bytes | str, limit: int | None = None) -> list[tuple[int, float]]:
    """A user or popular value as ``(item_id, score)`` pairs, best first (the first
    ``limit`` of them when given).

    Reads both the binary layout and the JSON pairs of versions written by
    earlier releases (their first byte is ``[``).
    """
    if isinstance(value, str):
        value = value.encode()
    if value[:1] == b"[":
        pairs = [(int(item), float(score)) for item, score in json.loads(value)]
        return pairs[:limit]
    width, count = binary_shape(value)
    wanted = count if limit is None else max(0, min(limit, count))
    # struct reads the few pairs a reader asks for faster than numpy's arrays would.
    ids = struct.unpack_from(f"<{wanted}{'H' if width == 2 else 'I'}", value, HEADER_BYTES)
    scores = struct.unpack_from(f"<{wanted}f", value, HEADER_BYTES + width * count)
    return list(zip(ids, scores, strict=True))


def decode_binary(value: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The item ids and float32 scores of a value in the binary layout."""
    width, count = binary_shape(value)
    ids = np.frombuffer(value, dtype=f"<u{width}", count=count, offset=HEADER_BYTES)
    scores = np.frombuffer(value, dtype="<f4", count=count,
                           offset=HEADER_BYTES + width * count)
    return ids, scores


def binary_shape(value: bytes) -> tuple[int, int]:
    """(item id width in bytes, items) of a value in the binary layout; a clear error
    for anything else."""
    if len(value) < HEADER_BYTES or value[0] != BINARY_LAYOUT_VERSION:
        raise ValueError(f"not a Redis value of layout version {BINARY_LAYOUT_VERSION} or "
                         f"JSON: it starts with {bytes(value[:HEADER_BYTES])!r}")
    width = value[1]
    if width not in (2, 4) or (len(value) - HEADER_BYTES) % (width + SCORE_BYTES):
        raise ValueError(f"a Redis value of {len(value)} bytes with {width}-byte item ids "
                         "is not a whole list")
    return width, (len(value) - HEADER_BYTES) // (width + SCORE_BYTES)


USER_ID_DTYPE = "<u4"
MAX_USER_ID = (1 << 32) - 1


def encode_user_ids(user_ids: pa.Array) -> bytes:
    """User ids as the users record holds them: little-endian uint32, one after another."""
    ids = np.asarray(pc.cast(user_ids, pa.int64()).to_numpy(zero_copy_only=False))
    if len(ids) and (ids.min() < 0 or ids.max() > MAX_USER_ID):
        bad = ids[(ids < 0) | (ids > MAX_USER_ID)][0]
        raise ValueError(f"user id {bad} does not fit the Redis users record's unsigned "
                         f"32-bit ids (0 to {MAX_USER_ID})")
    return ids.astype(USER_ID_DTYPE).tobytes()


def decode_user_ids(record: bytes) -> np.ndarray:
    """The distinct user ids of a users record (an id appended twice, by a retried
    write, counts once)."""
    if len(record) % 4:
        raise ValueError(f"a Redis users record of {len(record)} bytes is not whole "
                         "uint32 ids")
    return np.unique(np.frombuffer(record, dtype=USER_ID_DTYPE)).astype(np.int64)


def encode_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def decode_meta(value: bytes | str) -> dict[str, Any]:
    return dict(json.loads(value))


def encode_items_block(items: pa.Array, scores: pa.Array) -> pa.BinaryArray:
    """:func:`encode_items` for many users at once, byte for byte the same.

    ``items`` and ``scores`` are Arrow list arrays (one list per user, as the
    scoring output holds them; a null list is an empty one). Every value is
    laid out in one buffer by numpy's indexing, without a Python loop over
    users or items.
    """
    item_lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy(zero_copy_only=False)
    score_lengths = pc.fill_null(pc.list_value_length(scores), 0).to_numpy(zero_copy_only=False)
    if not np.array_equal(item_lengths, score_lengths):
        raise ValueError("every user needs as many scores as items")
    ids = np.asarray(pc.list_flatten(items).to_numpy(zero_copy_only=False), dtype=np.int64)
    check_item_ids(ids)
    flat_scores = np.asarray(pc.list_flatten(scores).to_numpy(zero_copy_only=False),
                             dtype="<f4")
    lengths = item_lengths.astype(np.int64)
    users = len(lengths)
    starts = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    owner = np.repeat(np.arange(users), lengths)  # the user of each item
    position = np.arange(len(ids)) - starts[owner]  # its place in the user's list
    # Each user's widest id decides the width of all of theirs.
    user_max = np.zeros(users, dtype=np.int64)
    np.maximum.at(user_max, owner, ids)
    widths = np.where(user_max < NARROW_ID_LIMIT, 2, 4)
    sizes = HEADER_BYTES + lengths * (widths + SCORE_BYTES)
    offsets = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"a block of {users} users encodes to {offsets[-1]} bytes; "
                         "encode it in smaller blocks")
    out = np.empty(offsets[-1], dtype=np.uint8)
    out[offsets[:-1]] = BINARY_LAYOUT_VERSION
    out[offsets[:-1] + 1] = widths
    item_width = widths[owner]
    id_at = offsets[:-1][owner] + HEADER_BYTES + position * item_width
    id_bytes = ids.astype("<u4").view(np.uint8).reshape(-1, 4)
    for byte in range(4):
        wide = item_width > byte
        out[id_at[wide] + byte] = id_bytes[wide, byte]
    score_at = (offsets[:-1][owner] + HEADER_BYTES + lengths[owner] * item_width
                + position * SCORE_BYTES)
    score_bytes = flat_scores.view(np.uint8).reshape(-1, SCORE_BYTES)
    for byte in range(SCORE_BYTES):
        out[score_at + byte] = score_bytes[:, byte]
    return pa.BinaryArray.from_buffers(
        pa.binary(), users, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(out)])
