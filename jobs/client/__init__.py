"""The read client product services import: one user's recommendations from Redis.

    from jobs.client import RecommendationClient
    client = RecommendationClient.from_url("redis://batchscore_reader:PASSWORD@cache:6379/0")
    recs = client.get_recommendations(user_id=42, k=10)

The URL is the reader's (``batchscore redis url --role reader`` prints it);
``prefix`` is the deployment's ``BATCHSCORE_REDIS_PREFIX`` when it is not
the default. The reader may only GET and MGET the serving keys, which is all
this client does.

Reads follow the contract in ``schemas/redis.md``: the pointer names the
served version, and a user without predictions gets that version's
popularity list (``source == "fallback"``). The client keeps the pointer for
``pointer_ttl_seconds`` (1 s by default), so a read is one round trip: the
user's key, the fallback list and the version's meta key, in one ``MGET``
(read at one instant), or, for a reader user whose ACL predates ``MGET``, in
one pipeline of ``GET``s with the meta key last. A version's meta key is
written after all its other keys and deleted before any of them, so finding
it proves the keys read with it were the whole version's; when it is gone
(the version was retired), the pointer is read again and the read done again
on the version now served. A switch reaches a client within
``pointer_ttl_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import redis

from jobs.contracts import redis as contract
from jobs.contracts.canary import in_canary
from jobs.contracts.redis import Keyspace
from jobs.platform.names import DEFAULT_REDIS_PREFIX
from jobs.platform.redis_client import connect

# Reads done again when the version read was retired under them (each is a switch).
READ_ATTEMPTS = 5
# How long a read trusts the pointer it read before: a switch reaches readers within it.
DEFAULT_POINTER_TTL_SECONDS = 1.0


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
    def __init__(self, client: redis.Redis, keys: Keyspace,
                 pointer_ttl_seconds: float = DEFAULT_POINTER_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if pointer_ttl_seconds < 0:
            raise ValueError(f"pointer_ttl_seconds must be 0 or more, got {pointer_ttl_seconds}")
        self.client = client
        self.keys = keys
        self.pointer_ttl_seconds = pointer_ttl_seconds
        self.clock = clock
        self._publish_id: int | None = None
        self._read_at = 0.0
        # False once the server refused MGET to this user (an ACL from before it).
        self._mget = True

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_REDIS_PREFIX,
                 pointer_ttl_seconds: float = DEFAULT_POINTER_TTL_SECONDS
                 ) -> RecommendationClient:
        return cls(connect(url, socket_timeout=1.0), Keyspace(prefix), pointer_ttl_seconds)

    def get_recommendations(self, user_id: int, k: int = 10) -> Recommendations:
        """The best ``k`` items for a user, best first: one round trip while the
        pointer read before is younger than ``pointer_ttl_seconds``, two otherwise.

        Every key is read from one version, whole: if its meta key is gone by the
        end of the read, the version was being retired, and the read is done
        again on the version the pointer names now.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        publish_id = self._served(refresh=False)
        for _ in range(READ_ATTEMPTS):
            user_value, popular_value, meta_value = self._read(publish_id, user_id)
            if meta_value is not None:
                break
            publish_id = self._served(refresh=True)
        else:
            raise RuntimeError(f"the version the Redis pointer names was retired during each "
                               f"of {READ_ATTEMPTS} reads")
        meta = contract.decode_meta(meta_value)
        source = "predictions" if user_value is not None else "fallback"
        value = user_value if user_value is not None else popular_value
        pairs = contract.decode_items(value, limit=k) if value is not None else []
        return Recommendations(
            user_id=user_id,
            items=[Item(item_id, score) for item_id, score in pairs],
            run_id=str(meta["run_id"]),
            model_version=model_version_for(user_id, meta),
            source=source,
        )

    def _read(self, publish_id: int, user_id: int) -> list[bytes | None]:
        """The user's value, the fallback list and the meta key of one version, in one
        round trip."""
        keys = [self.keys.user_key(publish_id, user_id), self.keys.popular_key(publish_id),
                self.keys.meta_key(publish_id)]
        if self._mget:
            try:
                return self.client.mget(keys)
            except redis.exceptions.NoPermissionError:
                # The reader's ACL predates MGET (`batchscore redis users` sets it
                # again): the same keys as GETs, the meta key last.
                self._mget = False
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute()

    def _served(self, refresh: bool) -> int:
        """The publish id the pointer names, read again when asked or when older than
        ``pointer_ttl_seconds``."""
        now = self.clock()
        if (refresh or self._publish_id is None
                or now - self._read_at >= self.pointer_ttl_seconds):
            pointer = self.client.get(self.keys.pointer_key())
            if pointer is None:
                self._publish_id = None
                raise NoPublishedVersionError(
                    "no recommendations are published in this Redis yet; run "
                    "`batchscore nightly`")
            self._publish_id, self._read_at = int(pointer), now
        return self._publish_id


def model_version_for(user_id: int, meta: dict[str, Any]) -> int:
    """The model that scored a user: the canary's for the users it serves."""
    canary = meta.get("canary")
    if canary and in_canary(np.array([user_id]), float(canary["fraction"]))[0]:
        return int(canary["model_version"])
    return int(meta["model_version"])
