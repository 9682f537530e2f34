"""The Redis key and value contract shared by the publisher and the read client.

Documented in ``schemas/redis.md``; every key is built here and nowhere else.

- ``batchscore:recs:current`` -> the served ``publish_id`` as decimal text.
- ``batchscore:recs:v{publish_id}:meta`` -> JSON object: run_id, model_version,
  logical_date, k, users, published_at.
- ``batchscore:recs:v{publish_id}:u:{user_id}`` -> JSON array of
  ``[item_id, score]`` pairs, best first.
- ``batchscore:recs:v{publish_id}:popular`` -> the same layout, the fallback list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

NAMESPACE = "batchscore:recs"


def pointer_key() -> bytes:
    return f"{NAMESPACE}:current".encode()


def version_prefix(publish_id: int) -> bytes:
    return f"{NAMESPACE}:v{int(publish_id)}:".encode()


def version_pattern(publish_id: int) -> bytes:
    """A SCAN pattern matching every key of one published version."""
    return version_prefix(publish_id) + b"*"


def meta_key(publish_id: int) -> bytes:
    return version_prefix(publish_id) + b"meta"


def popular_key(publish_id: int) -> bytes:
    return version_prefix(publish_id) + b"popular"


def user_key(publish_id: int, user_id: int) -> bytes:
    return version_prefix(publish_id) + f"u:{int(user_id)}".encode()


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
