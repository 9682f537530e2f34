"""Which slot a key is in, and the cluster users' rules as the README gives them."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from jobs.platform.names import Names
from jobs.platform.redis_nodes import key_slots
from jobs.platform.services.redis import acl_rules

README = Path(__file__).resolve().parents[2] / "README.md"


def test_key_slots_are_those_redis_computes() -> None:
    # What CLUSTER KEYSLOT answers on Redis 7.0 for each.
    slots = key_slots(pa.array(["foo", "bar", "hello", "batchscore:recs:current"]))
    assert slots.tolist() == [12182, 5061, 866, 13701]


def test_a_hash_tag_puts_keys_in_the_slot_of_the_tag() -> None:
    slots = key_slots(pa.array(["{user1000}.following", "{user1000}.followers", "user1000",
                                "foo{}{bar}", "foo{{bar}}zap"]))
    assert slots[0] == slots[1] == slots[2]
    # An empty tag is no tag (the whole key is hashed); a tag is from the first { to
    # the next }. CLUSTER KEYSLOT answers 8363 and 4015 (the slot of "{bar").
    assert slots[3:].tolist() == [8363, 4015]


def test_the_readmes_cluster_users_are_the_rules_batchscore_sets() -> None:
    text = README.read_text()
    for role in ("writer", "reader"):
        line = re.search(rf"^ACL SETUSER batchscore_{role} reset on >\w+ (.*)$", text, re.M)
        assert line is not None, role
        assert line.group(1).split() == acl_rules(Names(), role, cluster=True)
