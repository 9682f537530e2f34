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


def test_items_are_encoded_as_pairs_best_first_with_float32_scores() -> None:
    value = contract.encode_items([7, 3, 11], [0.5, 0.25, -1.125])
    assert value == b"[[7,0.5],[3,0.25],[11,-1.125]]"
    assert contract.decode_items(value) == [(7, 0.5), (3, 0.25), (11, -1.125)]


def test_scores_keep_the_shortest_float32_form() -> None:
    # 0.1 is not exact in float32; its shortest round-tripping form is still "0.1".
    assert contract.encode_items([1], [0.1]) == b"[[1,0.1]]"


def test_empty_list_and_mismatched_lengths() -> None:
    assert contract.encode_items([], []) == b"[]"
    with pytest.raises(ValueError, match="2 items but 1 scores"):
        contract.encode_items([1, 2], [0.5])


def test_meta_round_trips() -> None:
    meta = {"run_id": "nightly-2026-11-20-ab12cd34", "model_version": 3, "k": 50}
    assert contract.encode_meta(meta) == (
        b'{"k":50,"model_version":3,"run_id":"nightly-2026-11-20-ab12cd34"}'
    )
    assert contract.decode_meta(contract.encode_meta(meta)) == meta
