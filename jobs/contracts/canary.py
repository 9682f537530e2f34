"""Which users a canary serves: a stable hash of the user id, the same in every run.

The hash is SplitMix64's finaliser over the id as an unsigned 64-bit integer,
so any language can reproduce an assignment; a user is in a canary of
fraction ``f`` when ``hash % 10000 < round(f * 10000)``. Growing the fraction
keeps every user already in the canary.
"""

from __future__ import annotations

import numpy as np

BUCKETS = 10_000


def stable_hash(user_ids: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of each id, as ``uint64``."""
    with np.errstate(over="ignore"):
        z = np.asarray(user_ids, dtype=np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def check_fraction(fraction: float) -> float:
    if not 0 < fraction < 1:
        raise ValueError(f"a canary fraction must be between 0 and 1 (exclusive), got {fraction}")
    return fraction


def in_canary(user_ids: np.ndarray, fraction: float) -> np.ndarray:
    """A boolean mask: which of ``user_ids`` a canary of ``fraction`` serves."""
    threshold = np.uint64(round(check_fraction(fraction) * BUCKETS))
    return (stable_hash(user_ids) % np.uint64(BUCKETS)) < threshold


def fixed_sample(user_ids: np.ndarray, size: int) -> np.ndarray:
    """The same ``size`` users on every call: those with the smallest stable hashes."""
    ids = np.asarray(user_ids, dtype=np.int64)
    return ids[np.argsort(stable_hash(ids), kind="stable")[:size]]
