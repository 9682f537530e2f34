"""The cluster slot of every key of a block, as CLUSTER KEYSLOT gives it."""

import pyarrow as pa

from jobs.platform.redis_nodes import key_slots


def slots(keys: list[bytes]) -> list[int]:
    return key_slots(pa.array(keys, pa.binary())).tolist()


def test_slots_are_those_redis_gives() -> None:
    # CLUSTER KEYSLOT's own examples, and redis-cli's redirections for foo, bar and hello.
    assert slots([b"somekey", b"foo{hash_tag}", b"bar{hash_tag}", b"foo", b"bar", b"hello"]
                 ) == [11058, 2515, 2515, 12182, 5061, 866]


def test_keys_of_different_lengths_sharing_their_start() -> None:
    # Each key's slot does not depend on the keys next to it in the block.
    assert slots([b"bar", b"bar{hash_tag}", b"bar", b"barbar{hash_tag}"]
                 ) == [5061, 2515, 5061, 2515]


def test_a_hash_tag_alone_decides_and_an_empty_tag_does_not() -> None:
    # Only what is between the first { and the next } is hashed, when it is not empty.
    assert slots([b"{foo}.a", b"{foo}.b", b"x{somekey}y{bar}", b"{}foo"])[:3] == [12182, 12182,
                                                                                11058]
    assert slots([b"{}foo"]) != slots([b"foo"])


def test_a_slice_of_a_block_and_no_keys() -> None:
    block = pa.array([b"bar", b"foo", b"hello", b""], pa.binary())
    assert key_slots(block.slice(1, 3)).tolist() == [12182, 866, 0]
    assert key_slots(pa.array([], pa.binary())).tolist() == []
    assert key_slots(pa.array(["foo", "bar"])).tolist() == [12182, 5061]
