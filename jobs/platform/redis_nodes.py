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


def crc16_table() -> np.ndarray:
    """CRC16-XMODEM (polynomial 0x1021) of every byte value, for a byte at a time."""
    table = np.arange(256, dtype=np.uint32) << 8
    for _ in range(8):
        table = np.where(table & 0x8000, (table << 1) ^ 0x1021, table << 1) & 0xFFFF
    return table.astype(np.uint16)


CRC16_TABLE = crc16_table()


def key_slots(keys: pa.Array) -> np.ndarray:
    """The cluster slot of every key, as ``CLUSTER KEYSLOT`` gives it.

    CRC16 (XMODEM) of all keys at once over the Arrow buffer: the bytes every
    key starts with (a version's user keys share all but the user id) once,
    then the rest a byte position at a time for all keys together, so a block
    costs a few numpy passes, not a Python call per key. A key with a ``{``
    goes through redis-py's ``key_slot``, which finds its hash tag.
    """
    keys = pa.concat_arrays([pc.cast(keys, pa.binary())])  # its own offsets, from 0
    if keys.null_count:
        raise ValueError("a Redis key cannot be null")
    if len(keys) == 0:
        return np.zeros(0, dtype=np.uint16)
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32, count=len(keys) + 1)
    starts, lengths = offsets[:-1], np.diff(offsets)
    data = np.frombuffer(keys.buffers()[2] or b"\0", dtype=np.uint8)
    shared = common_prefix(keys)
    crc = np.full(len(keys), crc16(shared), dtype=np.uint16)
    shortest = int(lengths.min())
    for position in range(len(shared), int(lengths.max())):
        if position < shortest:
            crc = (crc << 8) ^ CRC16_TABLE[(crc >> 8) ^ data[starts + position]]
        else:
            live = lengths > position
            byte = data[np.where(live, starts + position, 0)]
            crc = np.where(live, (crc << 8) ^ CRC16_TABLE[(crc >> 8) ^ byte], crc)
    slots = crc & (SLOTS - 1)
    braces = np.flatnonzero(data[:offsets[-1]] == ord("{"))
    for position in np.unique(np.searchsorted(offsets, braces, side="right") - 1):
        slots[position] = key_slot(keys[int(position)].as_py())
    return slots


def common_prefix(keys: pa.BinaryArray) -> bytes:
    """The bytes every key starts with: those the smallest and the largest share."""
    bounds = pc.min_max(keys)
    first, last = bounds["min"].as_py(), bounds["max"].as_py()
    shared = 0
    while shared < min(len(first), len(last)) and first[shared] == last[shared]:
        shared += 1
    return first[:shared]


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ int(CRC16_TABLE[(crc >> 8) ^ byte])
    return crc


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
