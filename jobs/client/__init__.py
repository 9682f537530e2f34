"""The read client product services import: one user's recommendations from Redis.

    from jobs.client import RecommendationClient
    client = RecommendationClient.from_url("redis://batchscore_reader:PASSWORD@cache:6379/0")
    recs = client.get_recommendations(user_id=42, k=10)

The URL is the reader's (``batchscore redis url --role reader`` prints it);
``prefix`` is the deployment's ``BATCHSCORE_REDIS_PREFIX`` when it is not
the default. The reader may only GET the serving keys, which is all this
client does.

Reads follow the contract in ``schemas/redis.md``: the pointer names the
served version, and a user without predictions gets that version's
popularity list (``source == "fallback"``). The pointer is read again with
the version's keys, so a read that overlaps a switch is retried on the new
version instead of mixing two or falling back by mistake.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import redis

from jobs.contracts import redis as contract
from jobs.contracts.canary import in_canary
from jobs.contracts.redis import Keyspace
from jobs.platform.names import DEFAULT_REDIS_PREFIX
from jobs.platform.redis_client import connect

# Reads retried when the pointer moves under one (each move is a switch or rollback).
READ_ATTEMPTS = 5


class NoPublishedVersionError(LookupError):
    """Nothing has been published to this Redis yet."""


@dataclass(frozen=True)
class Item:
    item_id: int
    score: float


@dataclass(frozen=True)
class Recommendations:
    user_id: int
    items: list[Item]
    run_id: str
    model_version: int
    source: str  # "predictions" or "fallback"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RecommendationClient:
    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.keys = keys

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_REDIS_PREFIX) -> RecommendationClient:
        return cls(connect(url, socket_timeout=1.0), Keyspace(prefix))

    def get_recommendations(self, user_id: int, k: int = 10) -> Recommendations:
        """The best ``k`` items for a user, best first, in two round trips.

        The second round trip reads the pointer again: if it moved meanwhile,
        the keys read may belong to a version being retired, so the read is
        done again on the version now served.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        pointer = self.client.get(self.keys.pointer_key())
        for _ in range(READ_ATTEMPTS):
            if pointer is None:
                raise NoPublishedVersionError(
                    "no recommendations are published in this Redis yet; run "
                    "`batchscore nightly`")
            publish_id = int(pointer)
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.keys.user_key(publish_id, user_id))
            pipe.get(self.keys.meta_key(publish_id))
            pipe.get(self.keys.popular_key(publish_id))
            pipe.get(self.keys.pointer_key())
            user_value, meta_value, popular_value, pointer_after = pipe.execute()
            if pointer_after == pointer:
                break
            pointer = pointer_after
        else:
            raise RuntimeError(f"the Redis pointer moved during each of {READ_ATTEMPTS} reads")
        if meta_value is None:
            raise NoPublishedVersionError(f"published version {publish_id} has no meta key")
        meta = contract.decode_meta(meta_value)
        source = "predictions" if user_value is not None else "fallback"
        value = user_value if user_value is not None else popular_value
        pairs = contract.decode_items(value) if value is not None else []
        return Recommendations(
            user_id=user_id,
            items=[Item(item_id, score) for item_id, score in pairs[:k]],
            run_id=str(meta["run_id"]),
            model_version=model_version_for(user_id, meta),
            source=source,
        )


def model_version_for(user_id: int, meta: dict[str, Any]) -> int:
    """The model that scored a user: the canary's for the users it serves."""
    canary = meta.get("canary")
    if canary and in_canary(np.array([user_id]), float(canary["fraction"]))[0]:
        return int(canary["model_version"])
    return int(meta["model_version"])
