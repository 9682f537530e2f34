"""The block encoder of Redis values and keys gives exactly what the one-user functions give."""

import itertools

import numpy as np
import pyarrow as pa
import pytest

from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace
from jobs.publish.redis import set_with_expiry_commands

KEYS = Keyspace()  # the default prefix's keys


def lists(rows, value_type):
    return pa.array(rows, type=pa.list_(value_type))


def test_hand_written_values() -> None:
    values = contract.encode_items_block(
        lists([[7, 3, 11], [], None, [1], [-5]], pa.int64()),
        lists([[0.5, 0.25, -1.125], [], None, [0.1], [1e-9]], pa.float32()))
    assert values.to_pylist() == [
        "[[7,0.5],[3,0.25],[11,-1.125]]", "[]", "[]", "[[1,0.1]]", "[[-5,0.000000001]]"]


def float32_samples(rng: np.random.Generator) -> np.ndarray:
    bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32)
    every_bit_pattern = bits.view(np.float32)
    return np.concatenate([
        rng.normal(size=100_000).astype(np.float32),
        (rng.normal(size=50_000) * 10.0 ** rng.integers(-12, 16, 50_000)).astype(np.float32),
        every_bit_pattern[np.isfinite(every_bit_pattern)],
        # exactly halfway between two shortest candidates: ties go to the even digit
        (rng.integers(-2**20, 2**20, 50_000) / 2.0 ** rng.integers(0, 24, 50_000)
         ).astype(np.float32),
        np.array([0.0, -0.0, 1.0, 0.1, 1e-7, 123456792.0, 3.4e38, 1e-45, 2.5, 10.0],
                 dtype=np.float32),
    ])


def test_byte_for_byte_the_same_as_encode_items() -> None:
    rng = np.random.default_rng(20261121)
    scores = float32_samples(rng)
    items = rng.integers(-10, 2**40, len(scores))
    # users of 0 to about 60 items (some cut points repeat: empty lists)
    cuts = np.sort(rng.integers(0, len(scores), len(scores) // 30))
    offsets = np.concatenate([[0], cuts, [len(scores)]]).astype(np.int32)
    values = contract.encode_items_block(
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(items)),
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(scores)))
    assert len(values) == len(offsets) - 1
    for user, (start, stop) in enumerate(itertools.pairwise(offsets)):
        expected = contract.encode_items(items[start:stop], scores[start:stop])
        assert values[user].as_py().encode() == expected, f"user {user}"


def test_mismatched_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="as many scores as items"):
        contract.encode_items_block(lists([[1, 2]], pa.int64()), lists([[0.5]], pa.float32()))


def test_user_keys_match_user_key() -> None:
    keys = KEYS.user_keys(12, pa.array([345, 1, 2**40]))
    assert [key.encode() for key in keys.to_pylist()] == [
        KEYS.user_key(12, 345), KEYS.user_key(12, 1), KEYS.user_key(12, 2**40)]


def test_set_with_expiry_commands_in_the_redis_protocol() -> None:
    chunks = set_with_expiry_commands(pa.array(["ka", "kb", "kc"]),
                                      pa.array(["[]", "[[1,2]]", "x"]), 90, 2)
    assert [(bytes(chunk), count) for chunk, count in chunks] == [
        (b"*5\r\n$3\r\nSET\r\n$2\r\nka\r\n$2\r\n[]\r\n$2\r\nEX\r\n$2\r\n90\r\n"
         b"*5\r\n$3\r\nSET\r\n$2\r\nkb\r\n$7\r\n[[1,2]]\r\n$2\r\nEX\r\n$2\r\n90\r\n", 2),
        (b"*5\r\n$3\r\nSET\r\n$2\r\nkc\r\n$1\r\nx\r\n$2\r\nEX\r\n$2\r\n90\r\n", 1),
    ]
    assert set_with_expiry_commands(pa.array([], pa.string()), pa.array([], pa.string()),
                                    90, 2) == []
