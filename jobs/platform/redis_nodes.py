"""Which Redis node holds which key: one server, or the masters of a Redis Cluster.

A cluster puts each key in one of 16,384 slots, CRC16 (XMODEM) of the key (or
of its hash tag, the part between the first ``{`` and the next ``}``) modulo
16,384, and each slot on one master. The publisher sends a version's keys
pipelined to each master on a connection of its own, so it needs the slot of
every key (:func:`key_slots`), and :class:`NodeRoutes` groups a block's keys
by the master that serves them now. For one server there is one group, with
every key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from redis.crc import key_slot

from jobs.platform.redis_client import is_cluster

SLOTS = 16_384


def key_slots(keys: pa.Array) -> np.ndarray:
    """The cluster slot of every key, as ``CLUSTER KEYSLOT`` gives it (redis-py's
    ``key_slot``: CRC16 by ``binascii``, in C, hash tags included)."""
    return np.fromiter((key_slot(key) for key in pc.cast(keys, pa.binary()).to_pylist()),
                       dtype=np.uint16, count=len(keys))


@dataclass(frozen=True)
class NodeGroup:
    """The keys of a block that one node serves: where, and their positions in the block."""

    name: str  # host:port
    client: Any  # a plain redis.Redis of that node
    positions: np.ndarray


class NodeRoutes:
    """Groups keys by the node that serves them: the one server, or each key's master
    by the cluster client's slot map (:meth:`refresh` reloads it after a redirection
    or a failover)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        self._owners: np.ndarray | None = None
        self._nodes: list[Any] = []
        # How many replicas each master (by name) has.
        self.replicas: dict[str, int] = {}
        if self.cluster:
            self.refresh(reload=False)

    def refresh(self, reload: bool = True) -> None:
        """The slot map as the cluster client knows it; with ``reload``, asked of the
        cluster again first."""
        if not self.cluster:
            return
        manager = self.client.nodes_manager
        if reload:
            manager.initialize()
        names: dict[str, int] = {}
        owners = np.zeros(SLOTS, dtype=np.int32)
        nodes: list[Any] = []
        replicas: dict[str, int] = {}
        for slot in range(SLOTS):
            serving = manager.slots_cache[slot]
            node = serving[0]
            if node.name not in names:
                names[node.name] = len(nodes)
                nodes.append(node)
                replicas[node.name] = len(serving) - 1
            owners[slot] = names[node.name]
        self._owners, self._nodes, self.replicas = owners, nodes, replicas

    def nodes(self) -> list[tuple[str, Any]]:
        """Every master (name and plain client), or the one server."""
        if not self.cluster:
            return [(server_name(self.client), self.client)]
        return [(node.name, self.client.get_redis_connection(node)) for node in self._nodes]

    def groups(self, keys: pa.Array) -> list[NodeGroup]:
        """``keys`` split by the node that serves each, positions in order."""
        if not self.cluster:
            return [NodeGroup(server_name(self.client), self.client,
                              np.arange(len(keys), dtype=np.int64))]
        assert self._owners is not None
        owner = self._owners[key_slots(keys)]
        return [NodeGroup(node.name, self.client.get_redis_connection(node), positions)
                for index, node in enumerate(self._nodes)
                if len(positions := np.flatnonzero(owner == index))]


def server_name(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
