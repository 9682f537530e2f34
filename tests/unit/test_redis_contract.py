import re

import numpy as np
import pytest

from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace

KEYS = Keyspace()  # the default prefix's keys


def test_keys_byte_for_byte() -> None:
    assert KEYS.pointer_key() == b"batchscore:recs:current"
    assert KEYS.meta_key(12) == b"batchscore:recs:v12:meta"
    assert KEYS.popular_key(12) == b"batchscore:recs:v12:popular"
    assert KEYS.user_key(12, 345) == b"batchscore:recs:v12:u:345"
    assert KEYS.version_pattern(12) == b"batchscore:recs:v12:*"


def test_a_version_pattern_does_not_match_a_longer_version_number() -> None:
    # v1:* must not reach v12's keys: the colon closes the version number.
    assert not KEYS.user_key(12, 3).startswith(KEYS.version_prefix(1))


def test_items_are_encoded_as_ids_then_float32_scores_best_first() -> None:
    value = contract.encode_items([7, 3, 11], [0.5, 0.25, -1.125])
    assert value == bytes([
        0x01, 0x02,  # layout version 1, 2-byte item ids
        0x07, 0x00, 0x03, 0x00, 0x0B, 0x00,  # 7, 3, 11 as little-endian uint16
        0x00, 0x00, 0x00, 0x3F,  # 0.5 as little-endian float32
        0x00, 0x00, 0x80, 0x3E,  # 0.25
        0x00, 0x00, 0x90, 0xBF,  # -1.125
    ])
    assert contract.decode_items(value) == [(7, 0.5), (3, 0.25), (11, -1.125)]


def test_an_id_above_65535_widens_every_id_of_the_value_to_4_bytes() -> None:
    value = contract.encode_items([65536, 2], [1.0, 2.0])
    assert value == bytes([0x01, 0x04, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
                           0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40])
    assert contract.decode_items(value) == [(65536, 1.0), (2, 2.0)]
    assert contract.encode_items([65535], [0.0])[:2] == b"\x01\x02"


def test_scores_are_float32() -> None:
    # 0.1 is not exact in float32: the value holds float32's nearest, 0.100000001...
    value = contract.encode_items([1], [0.1])
    assert value == b"\x01\x02\x01\x00\xcd\xcc\xcc\x3d"
    assert contract.decode_items(value) == [(1, float(np.float32(0.1)))]


def test_empty_list_and_mismatched_lengths() -> None:
    assert contract.encode_items([], []) == b"\x01\x02"
    assert contract.decode_items(b"\x01\x02") == []
    with pytest.raises(ValueError, match="2 items but 1 scores"):
        contract.encode_items([1, 2], [0.5])


@pytest.mark.parametrize("item", [-1, 2**32])
def test_an_item_id_outside_32_bits_is_refused_by_value(item: int) -> None:
    with pytest.raises(ValueError, match=f"item id {item} does not fit"):
        contract.encode_items([item], [0.5])


def test_json_values_of_earlier_releases_are_still_read() -> None:
    assert contract.decode_items(b"[[7,0.5],[3,0.25],[11,-1.125]]") == [
        (7, 0.5), (3, 0.25), (11, -1.125)]
    assert contract.decode_items(b"[]") == []


@pytest.mark.parametrize(("value", "message"), [
    (b"", "not a Redis value of layout version 1 or JSON"),
    (b"\x02\x02", "not a Redis value of layout version 1 or JSON: it starts with b'\\x02\\x02'"),
    (b"\x01\x03\x00", "with 3-byte item ids is not a whole list"),
    (b"\x01\x02\x07\x00\x00", "a Redis value of 5 bytes with 2-byte item ids"),
])
def test_a_value_in_no_known_layout_is_refused_by_what_is_wrong(value: bytes,
                                                                 message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        contract.decode_items(value)


def test_meta_round_trips() -> None:
    meta = {"run_id": "nightly-2026-11-20-ab12cd34", "model_version": 3, "k": 50}
    assert contract.encode_meta(meta) == (
        b'{"k":50,"model_version":3,"run_id":"nightly-2026-11-20-ab12cd34"}'
    )
    assert contract.decode_meta(contract.encode_meta(meta)) == meta


def test_another_prefix_gives_the_same_keys_under_it_byte_for_byte() -> None:
    keys = Keyspace("shop_eu")
    assert keys.pointer_key() == b"shop_eu:recs:current"
    assert keys.versions_key() == b"shop_eu:recs:versions"
    assert keys.meta_key(12) == b"shop_eu:recs:v12:meta"
    assert keys.popular_key(12) == b"shop_eu:recs:v12:popular"
    assert keys.user_key(12, 345) == b"shop_eu:recs:v12:u:345"
    assert keys.version_pattern(12) == b"shop_eu:recs:v12:*"
    assert keys.meta_pattern() == b"shop_eu:recs:v*:meta"
    assert keys.users_key(12) == b"shop_eu:recs:users:v12"
    assert keys.publish_id_of(b"shop_eu:recs:v12:u:345") == 12
    with pytest.raises(ValueError, match="is not a key of a published version"):
        keys.publish_id_of(b"batchscore:recs:v12:u:345")


def test_the_default_keyspace_is_the_batchscore_prefix() -> None:
    assert Keyspace() == Keyspace("batchscore")
    assert KEYS.versions_key() == b"batchscore:recs:versions"
    assert KEYS.meta_pattern() == b"batchscore:recs:v*:meta"


@pytest.mark.parametrize("prefix", ["", "Shop", "shop:eu", "shop*", "a b", "1shop"])
def test_a_prefix_that_could_reach_other_keys_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="BATCHSCORE_REDIS_PREFIX must be 1 to 40"):
        Keyspace(prefix)


def test_the_acl_patterns_cover_exactly_the_keys_each_user_needs() -> None:
    """The writer's patterns match every key of its prefix; the reader's the keys the read
    client GETs, not the versions set; neither matches a longer prefix's keys."""
    from fnmatch import fnmatchcase

    from jobs.platform.names import Names
    from jobs.platform.services.redis import key_patterns

    names, keys, longer = Names(redis_prefix="shop"), Keyspace("shop"), Keyspace("shop2")

    def matched(role: str, key: bytes) -> bool:
        return any(fnmatchcase(key.decode(), pattern) for pattern in key_patterns(names, role))

    served = [keys.pointer_key(), keys.meta_key(3), keys.popular_key(3), keys.user_key(3, 9)]
    assert all(matched("writer", key) for key in [*served, keys.versions_key(),
                                                  keys.users_key(3)])
    assert all(matched("reader", key) for key in served)
    assert not matched("reader", keys.versions_key())
    assert not matched("reader", keys.users_key(3))
    for role in ("writer", "reader"):
        assert not any(matched(role, key) for key in (longer.pointer_key(),
                                                      longer.user_key(3, 9)))


def test_the_worked_example_in_the_schema_is_what_the_encoder_writes() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "schemas" / "redis.md").read_text()
    example = doc[doc.index("Worked example"):]
    hex_text = example[example.index("```\n") + 4:example.index("\n```", example.index("```\n"))]
    value = bytes.fromhex(hex_text)
    assert value == contract.encode_items([4211, 97, 3306], [0.8734, 0.8112, 0.7954])
    assert [(item, round(score, 4)) for item, score in contract.decode_items(value)] == [
        (4211, 0.8734), (97, 0.8112), (3306, 0.7954)]


def test_user_ids_are_recorded_as_uint32_and_read_back_once_each() -> None:
    import pyarrow as pa

    record = contract.encode_user_ids(pa.array([3, 1, 2**31 - 1]))
    assert record == bytes.fromhex("03000000" "01000000" "ffffff7f")
    # a retried block appends its ids again: each is read back once
    assert contract.decode_user_ids(record + record[:4]).tolist() == [1, 3, 2**31 - 1]
    with pytest.raises(ValueError, match="user id -1 does not fit"):
        contract.encode_user_ids(pa.array([5, -1]))
    with pytest.raises(ValueError, match="a Redis users record of 5 bytes is not whole"):
        contract.decode_user_ids(record[:5])


@pytest.mark.parametrize("ids", [[7, 3, 11], [70000, 3, 11]])
def test_a_limit_reads_the_first_pairs_of_either_width(ids: list[int]) -> None:
    value = contract.encode_items(ids, [0.5, 0.25, -1.125])
    assert contract.decode_items(value, limit=2) == [(ids[0], 0.5), (3, 0.25)]
    assert contract.decode_items(value, limit=5) == [(ids[0], 0.5), (3, 0.25), (11, -1.125)]
    assert contract.decode_items(value, limit=0) == []
