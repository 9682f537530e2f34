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
"""

from __future__ import annotations

import json
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

    def popular_key(self, publish_id: int) -> bytes:
        return self.version_prefix(publish_id) + b"popular"

    def user_key(self, publish_id: int, user_id: int) -> bytes:
        return self.version_prefix(publish_id) + f"u:{int(user_id)}".encode()

    def user_keys(self, publish_id: int, user_ids: pa.Array) -> pa.StringArray:
        """:meth:`user_key` for many users at once, byte for byte the same."""
        prefix = (self.version_prefix(publish_id) + b"u:").decode()
        return pc.binary_join_element_wise(
            prefix, pc.cast(user_ids, pa.int64()).cast(pa.string()), "")


def encode_items(items: Sequence[int], scores: Sequence[float]) -> bytes:
    """``[[item_id, score], ...]``; scores are float32 written in their shortest form."""
    if len(items) != len(scores):
        raise ValueError(f"{len(items)} items but {len(scores)} scores")
    pairs = ",".join(
        f"[{int(item)},{np.format_float_positional(np.float32(score), trim='-')}]"
        for item, score in zip(items, scores, strict=True)
    )
    return f"[{pairs}]".encode()


def decode_items(value: bytes | str) -> list[tuple[int, float]]:
    pairs = json.loads(value)
    return [(int(item), float(score)) for item, score in pairs]


def encode_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def decode_meta(value: bytes | str) -> dict[str, Any]:
    return dict(json.loads(value))


def encode_items_block(items: pa.Array, scores: pa.Array) -> pa.StringArray:
    """:func:`encode_items` for many users at once, byte for byte the same.

    ``items`` and ``scores`` are Arrow list arrays (one list per user, as the
    scoring output holds them). The text is built by Arrow's compute kernels,
    without a Python loop over users or pairs: Arrow writes a float32 in its
    shortest round-tripping digits as numpy does, in positional notation
    except for very small or large magnitudes, which are rewritten here with
    numpy's formatter.
    """
    item_lengths = pc.fill_null(pc.list_value_length(items), 0)
    if not pc.all(pc.equal(item_lengths, pc.fill_null(pc.list_value_length(scores), 0))).as_py():
        raise ValueError("every user needs as many scores as items")
    item_text = pc.cast(pc.list_flatten(items), pa.string())
    score_text = float32_text(pc.list_flatten(scores))
    pairs = pc.binary_join_element_wise(item_text, score_text, ",")
    lengths = item_lengths.to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), pairs), "],[")
    values = pc.binary_join_element_wise("[[", joined, "]]", "")
    if lengths.all():
        return values
    return pc.if_else(pa.array(lengths == 0), pa.scalar("[]"), values)


def float32_text(scores: pa.Array) -> pa.StringArray:
    """Each float32 as ``np.format_float_positional(score, trim='-')`` writes it."""
    scores = pc.cast(scores, pa.float32())
    text = pc.cast(scores, pa.string())
    scientific = pc.match_substring(text, "e")
    if not pc.any(scientific).as_py():
        return text
    floats = scores.filter(scientific).to_numpy(zero_copy_only=False)
    rewritten = [np.format_float_positional(value, trim="-") for value in floats]
    return pc.replace_with_mask(text, scientific, pa.array(rewritten, type=pa.string()))
