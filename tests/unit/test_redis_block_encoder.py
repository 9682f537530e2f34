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
        lists([[7, 3, 11], [], None, [70000, 1], [2]], pa.int64()),
        lists([[0.5, 0.25, -1.125], [], None, [1.0, 2.0], [1e-9]], pa.float32()))
    assert values.type == pa.binary()
    assert values.to_pylist() == [
        bytes.fromhex("0102" "07000300" "0b00" "0000003f" "0000803e" "000090bf"),
        b"\x01\x02", b"\x01\x02",
        # 70000 needs 4 bytes, so this user's 1 takes 4 too
        bytes.fromhex("0104" "70110100" "01000000" "0000803f" "00000040"),
        bytes.fromhex("0102" "0200" "5f708930"),
    ]


def test_byte_for_byte_the_same_as_encode_items() -> None:
    rng = np.random.default_rng(20261121)
    scores = np.concatenate([
        rng.normal(size=100_000).astype(np.float32),
        np.array([0.0, -0.0, 1.0, 0.1, 1e-45, 3.4e38, np.inf, -np.inf], dtype=np.float32)])
    # mostly narrow ids, some users with one id that needs 4 bytes
    items = np.where(rng.random(len(scores)) < 0.01, rng.integers(0, 2**32, len(scores)),
                     rng.integers(0, 2**16, len(scores)))
    # users of 0 to about 60 items (some cut points repeat: empty lists)
    cuts = np.sort(rng.integers(0, len(scores), len(scores) // 30))
    offsets = np.concatenate([[0], cuts, [len(scores)]]).astype(np.int32)
    values = contract.encode_items_block(
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(items)),
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(scores)))
    assert len(values) == len(offsets) - 1
    widths = set()
    for user, (start, stop) in enumerate(itertools.pairwise(offsets)):
        expected = contract.encode_items(items[start:stop], scores[start:stop])
        assert values[user].as_py() == expected, f"user {user}"
        widths.add(expected[1])
    assert widths == {2, 4}


def test_a_slice_of_a_block_encodes_its_own_users() -> None:
    items = lists([[1, 2], [3], [4, 5, 6]], pa.int64())
    scores = lists([[0.5, 0.25], [1.0], [3.0, 2.0, 1.0]], pa.float32())
    assert contract.encode_items_block(items.slice(1), scores.slice(1)).to_pylist() == [
        contract.encode_items([3], [1.0]), contract.encode_items([4, 5, 6], [3.0, 2.0, 1.0])]


def test_an_item_id_outside_32_bits_is_refused_by_value() -> None:
    with pytest.raises(ValueError, match="item id 4294967296 does not fit"):
        contract.encode_items_block(lists([[1, 2**32]], pa.int64()),
                                    lists([[0.5, 0.25]], pa.float32()))


def test_mismatched_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="as many scores as items"):
        contract.encode_items_block(lists([[1, 2]], pa.int64()), lists([[0.5]], pa.float32()))


def test_user_keys_match_user_key() -> None:
    keys = KEYS.user_keys(12, pa.array([345, 1, 2**40]))
    assert [key.encode() for key in keys.to_pylist()] == [
        KEYS.user_key(12, 345), KEYS.user_key(12, 1), KEYS.user_key(12, 2**40)]


def test_set_with_expiry_commands_in_the_redis_protocol() -> None:
    chunks = set_with_expiry_commands(pa.array(["ka", "kb", "kc"]),
                                      pa.array([b"\x01\x02", b"\r\n\x00", b"x"]), 90, 2)
    assert [(bytes(chunk), count) for chunk, count in chunks] == [
        (b"*5\r\n$3\r\nSET\r\n$2\r\nka\r\n$2\r\n\x01\x02\r\n$2\r\nEX\r\n$2\r\n90\r\n"
         b"*5\r\n$3\r\nSET\r\n$2\r\nkb\r\n$3\r\n\r\n\x00\r\n$2\r\nEX\r\n$2\r\n90\r\n", 2),
        (b"*5\r\n$3\r\nSET\r\n$2\r\nkc\r\n$1\r\nx\r\n$2\r\nEX\r\n$2\r\n90\r\n", 1),
    ]
    assert set_with_expiry_commands(pa.array([], pa.string()), pa.array([], pa.string()),
                                    90, 2) == []
