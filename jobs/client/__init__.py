"""The read client product services import: one user's recommendations from Redis.

    from jobs.client import RecommendationClient
    client = RecommendationClient.from_url("redis://batchscore_reader:PASSWORD@cache:6379/0")
    recs = client.get_recommendations(user_id=42, k=10)

The URL is the reader's (``batchscore redis url --role reader`` prints it):
``redis://`` for one server, ``redis+cluster://`` (any node) for a Redis
Cluster; ``prefix`` is the deployment's ``BATCHSCORE_REDIS_PREFIX`` when it is
not the default. The reader may only GET the serving keys (and, on a cluster,
learn the slot map), which is all this client does.

Reads follow the contract in ``schemas/redis.md``: the pointer names the
served version, and a user without predictions gets that version's
popularity list (``source == "fallback"``). The client keeps the pointer for
``pointer_ttl_seconds`` (1 s by default), and a version's meta and fallback
list, which never change, for as long as it reads that version; so a read is
one ``GET`` of the user's key, one round trip (on a cluster, straight to the
key's master). A version's meta key is written
after all its other keys and deleted before any of them: when the user's key
is missing, the meta key is read again, and if it is still there the user has
no predictions in that version; if it is gone, the version was retired under
the read, and the read is done again on the version the pointer names now. A
switch reaches a client within ``pointer_ttl_seconds``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
import redis
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, TryAgainError

from jobs.contracts import redis as contract
from jobs.contracts.canary import in_canary
from jobs.contracts.redis import Keyspace
from jobs.platform.names import DEFAULT_REDIS_PREFIX
from jobs.platform.redis_client import connect, is_cluster, through_failover

# Reads done again when the version read was retired under them (each is a switch).
READ_ATTEMPTS = 5
# How long a read trusts the pointer it read before: a switch reaches readers within it.
DEFAULT_POINTER_TTL_SECONDS = 1.0


T = TypeVar("T")


class NoPublishedVersionError(LookupError):
    """Nothing has been published to this Redis yet."""


class Item(NamedTuple):
    """One recommended item. A named tuple: a read builds k of them, and a tuple is
    built in about half the time of a frozen dataclass."""

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
        return {"user_id": self.user_id,
                "items": [item._asdict() for item in self.items],
                "run_id": self.run_id, "model_version": self.model_version,
                "source": self.source}


@dataclass(frozen=True)
class ServedVersion:
    """What a client keeps of a version it reads: its meta and its fallback list."""

    publish_id: int
    meta: dict[str, Any]
    popular: bytes


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
        self._version: ServedVersion | None = None
        self._cluster = is_cluster(client)
        self._own = OwnConnections()

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_REDIS_PREFIX,
                 pointer_ttl_seconds: float = DEFAULT_POINTER_TTL_SECONDS
                 ) -> RecommendationClient:
        return cls(connect(url, socket_timeout=1.0), Keyspace(prefix), pointer_ttl_seconds)

    def get_recommendations(self, user_id: int, k: int = 10) -> Recommendations:
        """The best ``k`` items for a user, best first: one ``GET`` while the pointer
        read before is younger than ``pointer_ttl_seconds`` (and the user has
        predictions), more otherwise.

        Every key is read from one version, whole: a user key found belongs to the
        version the pointer named; a user key missing counts only if the version's
        meta key is still there after it, else the version was being retired, and
        the read is done again on the version the pointer names now.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        publish_id = self._served(refresh=False)
        for _ in range(READ_ATTEMPTS):
            version = self._version_of(publish_id)
            if version is not None:
                value = self._get(self.keys.user_key(publish_id, user_id))
                if value is not None:
                    return self._recommendations(user_id, k, version, value, "predictions")
                if self.client.get(self.keys.meta_key(publish_id)) is not None:
                    return self._recommendations(user_id, k, version, version.popular,
                                                 "fallback")
            self._version = None
            publish_id = self._served(refresh=True)
        raise RuntimeError(f"the version the Redis pointer names was retired during each "
                           f"of {READ_ATTEMPTS} reads")

    @staticmethod
    def _recommendations(user_id: int, k: int, version: ServedVersion, value: bytes,
                         source: str) -> Recommendations:
        return Recommendations(
            user_id=user_id,
            items=list(map(Item._make, contract.decode_items(value, limit=k))),
            run_id=str(version.meta["run_id"]),
            model_version=model_version_for(user_id, version.meta),
            source=source,
        )

    def _version_of(self, publish_id: int) -> ServedVersion | None:
        """The version's meta and fallback list, read once per version; None when its
        keys are gone (it was retired since the pointer was read)."""
        if self._version is not None and self._version.publish_id == publish_id:
            return self._version
        def both() -> list[bytes | None]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.keys.popular_key(publish_id))
            pipe.get(self.keys.meta_key(publish_id))
            return pipe.execute()

        popular, meta = self._through_failover(both)
        if popular is None or meta is None:
            return None
        self._version = ServedVersion(publish_id, contract.decode_meta(meta), popular)
        return self._version

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


    def _get(self, key: bytes) -> bytes | None:
        """``GET key``. On a cluster, sent straight to the master the client's slot map
        names for the key, on that node's own client: redis-py's cluster client
        routes each command in Python, which costs a read more than the GET itself.
        A redirection, a node lost or a slot the map lacks sends the GET through
        the cluster client instead, which follows the redirection, waits out a
        failover and reloads the slot map the next reads use."""
        try:
            if not self._cluster:
                return self._own.get(self.client, key)
            node = self.client.nodes_manager.slots_cache[key_slot(key)][0]  # type: ignore[attr-defined]
            return self._own.get(self.client.get_redis_connection(node), key)  # type: ignore[attr-defined]
        except (KeyError, IndexError, AskError, TryAgainError, ClusterDownError,
                redis.ConnectionError, redis.TimeoutError):
            return self.client.get(key)

    def close(self) -> None:
        """Close every connection this client opened, in any thread."""
        self._own.close()
        self.client.close()

    def _through_failover(self, read: Callable[[], T]) -> T:
        """``read()``; on a cluster, done again while a master that went down is being
        replaced (a cluster client's single commands do so themselves)."""
        if not self._cluster:
            return read()
        return through_failover(read, "a read of a version's meta and fallback list")


class OwnConnections:
    """``GET`` of a user's key on a connection each thread keeps to each server.

    redis-py's command path (a connection taken from the pool and given back, its
    retry wrapper, the command packed from its arguments) costs a read about twice
    the round trip itself; a connection the thread keeps, made by the server's own
    pool (so with its password, TLS, database and timeouts) and sent the packed
    ``GET``, does not. Any error closes that connection (no reply is left unread on
    it) and is raised for the caller to read through the client instead, which
    retries, follows a redirection and waits out a failover.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list[redis.connection.AbstractConnection] = []

    def get(self, server: redis.Redis, key: bytes) -> bytes | None:
        pool = server.connection_pool
        address = (pool.connection_kwargs.get("host"), pool.connection_kwargs.get("port"),
                   pool.connection_kwargs.get("path"))
        mine = self._local.__dict__
        connection = mine.get(address)
        if connection is None:
            connection = mine[address] = pool.make_connection()
            with self._lock:
                self._made.append(connection)
        try:
            connection.send_packed_command(
                [b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)],
                check_health=False)
            connection.last_command = "GET"  # named by a refusal (ExplainedErrors)
            return connection.read_response()
        except BaseException:
            connection.disconnect()
            raise

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for connection in made:
            connection.disconnect()


def model_version_for(user_id: int, meta: dict[str, Any]) -> int:
    """The model that scored a user: the canary's for the users it serves."""
    canary = meta.get("canary")
    if canary and in_canary(np.array([user_id]), float(canary["fraction"]))[0]:
        return int(canary["model_version"])
    return int(meta["model_version"])
