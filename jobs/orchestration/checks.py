"""The nightly's check stage, after the switch.

A served (or canary) run's ``smoke_check`` reads a sample of users back from both stores
and checks that they serve the same version; a shadow run's ``compare_shadow`` measures
how its version differs from the served one (:mod:`jobs.training.differential`).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from jobs.contracts import redis as contract
from jobs.orchestration.run_state import RunState
from jobs.platform.redis_client import connect
from jobs.publish.postgres import (
    first_lists,
    lists_of,
    served_publish_id,
    version_status,
    version_users,
)

logger = logging.getLogger(__name__)

SMOKE_SAMPLE_USERS = 20


def smoke_check(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """Read a sample of users back from both stores, and check they serve the same version.

    A version for an older date than the one served is kept in PostgreSQL only
    (Redis holds the served version and the one before it): its rows are
    checked, and Redis's pointer.
    """
    client = connect(redis_url)
    keys = state.keys
    publish_id = state.publish_id
    status = version_status(engine, publish_id)
    sample = first_lists(engine, publish_id, SMOKE_SAMPLE_USERS)
    served = served_publish_id(engine)
    pointer = client.get(keys.pointer_key())
    problems = []
    if status != "published":
        problems.append(f"postgres: version {publish_id} is {status!r}, not published")
    if served is not None and (pointer is None or int(pointer) != served):
        problems.append(f"postgres serves version {served} but the redis pointer names "
                        f"{pointer.decode() if pointer else None}")
    if not sample:
        problems.append(f"postgres has no rows for version {publish_id}")
    in_redis = served == publish_id
    for user_id, items in sample if in_redis else []:
        value = client.get(keys.user_key(publish_id, user_id))
        stored = [item for item, _ in contract.decode_items(value)] if value else None
        if stored != items:
            problems.append(f"user {user_id}: postgres has {items[:5]}..., "
                            f"redis has {stored[:5] if stored else stored}")
    if problems:
        raise RuntimeError("smoke check failed: " + "; ".join(problems[:5]))
    if in_redis:
        logger.info("smoke check: %d users read back from both stores agree; version %s is "
                    "served", len(sample), served)
    else:
        logger.info("smoke check: version %s is in postgres (%d users read), not served; "
                    "version %s is served in both stores", publish_id, len(sample), served)
    return state


def compare_shadow(engine: Engine, state: RunState) -> RunState:
    """How the shadow version differs from the served one, on a fixed sample of users."""
    from jobs.training.differential import compare
    from jobs.training.gates import GateConfig

    served = served_publish_id(engine)
    report: dict[str, Any] = {"publish_id": state.publish_id, "compared_with": served}
    if served is None:
        report["differential"] = None
        logger.info("shadow: nothing is served yet to compare with")
    else:
        sample = GateConfig.load().differential.sample_users
        shadow_lists, served_lists = sampled_lists(engine, state.publish_id, served, sample)
        if shadow_lists and served_lists and set(shadow_lists) & set(served_lists):
            differential = compare(shadow_lists, served_lists, state.k)
            report["differential"] = differential.to_json()
            logger.info("shadow vs served version %d on %d users: overlap@%d %.3f, rank "
                        "correlation %.3f, score shift (KS) %.3f", served, differential.users,
                        state.k, differential.overlap_at_k, differential.rank_correlation,
                        differential.score_ks)
        else:
            report["differential"] = None
    state.stats["shadow"] = report
    return state.save()


def sampled_lists(engine: Engine, publish_id: int, other: int, sample_size: int
                  ) -> tuple[dict[int, tuple[list[int], list[float]]], ...]:
    """Both versions' lists for a fixed sample of ``publish_id``'s users (stable hash)."""
    from jobs.contracts.canary import fixed_sample

    chosen = [int(user) for user in fixed_sample(version_users(engine, publish_id),
                                                 sample_size)]
    return tuple(lists_of(engine, version, chosen) for version in (publish_id, other))
