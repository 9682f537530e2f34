"""A publishing process for the fault tier: one nightly run through
``jobs.orchestration.nightly.execute`` (reconcile, lease, the publish steps, the run
record) on a scoring output written here instead of by Spark, that can stop at a named
point and wait there to be killed.

    python -m tests.faults.publisher --database-url URL --redis-url URL --home DIR \\
        --run-date 2026-11-20 --tag 3 [--pause POINT --marker FILE]
        [--hold FILE --marker FILE]

Every version's lists are a function of its tag and the user, so a reader can
tell from one row which version it came from and whether the row is whole.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.contracts import redis as contract
from jobs.lifecycle import registry
from jobs.orchestration import nightly, plans, publish_steps
from jobs.orchestration.run_state import NightlyConfig, RunState
from jobs.platform import runs
from jobs.publish import postgres as postgres_module
from jobs.publish import protocol as protocol_module
from jobs.publish import read_blocks
from jobs.publish import redis as redis_module
from jobs.scoring.score import POPULAR_FILE, RECOMMENDATIONS_DIR

USERS = 600
K = 5
BLOCK_USERS = 100
# A paused process waits this long at most for its kill, then exits on its own.
PAUSE_SECONDS = 120
# What --hold writes to the marker once the run has begun.
HELD = "run begun, held"
# Where the publishing process finds the writer's URL (it holds a password).
REDIS_URL_VARIABLE = "BATCHSCORE_FAULT_REDIS_URL"


def expected_items(tag: int, user: int) -> list[int]:
    return [tag * 1_000_000 + user * 10 + rank for rank in range(K)]


def expected_scores() -> list[float]:
    return [1.0 - rank / 8 for rank in range(K)]  # exact in float32


def version_tag(item_id: int) -> int:
    return item_id // 1_000_000


def write_scoring_output(folder: Path, tag: int, users: int = USERS) -> None:
    """What the scoring job leaves in a run's folder, for ``users`` users of version ``tag``."""
    (folder / RECOMMENDATIONS_DIR).mkdir(parents=True, exist_ok=True)
    ids = list(range(1, users + 1))
    items = pa.array([expected_items(tag, user) for user in ids], pa.list_(pa.int64()))
    scores = pa.array([expected_scores()] * users, pa.list_(pa.float32()))
    table = pa.table({"user_id": pa.array(ids, pa.int64()), "items": items, "scores": scores,
                      contract.VALUE_COLUMN: contract.encode_items_block(items, scores)})
    pq.write_table(table, folder / RECOMMENDATIONS_DIR / "part-0.parquet")
    pq.write_table(pa.table({"rank": pa.array([1, 2], pa.int16()),
                             "item_id": pa.array([tag * 1_000_000, tag * 1_000_000 + 1]),
                             "score": pa.array([2.0, 1.0], pa.float32())}),
                   folder / POPULAR_FILE)


@dataclass(frozen=True)
class Target:
    database_url: str
    redis_url: str
    home: Path


def ensure_model(engine: Any, home: Path) -> None:
    """Register a serving model whose artifact exists, once."""
    if registry.serving_or_none(engine) is not None:
        return
    artifact = home / "model"
    artifact.mkdir(parents=True, exist_ok=True)
    registry.register(engine, registry.NewModel(
        created_by="faults", trained_as_of=date(2026, 1, 1), params={}, metrics={},
        data_snapshot={}, code_version="faults", artifact_uri=artifact.as_uri()))


def publish(target: Target, run_date: date, tag: int, *, lock_wait_seconds: float = 30.0,
            users: int = USERS, on_begin: Callable[[], None] | None = None,
            serve_older_date: bool = False) -> RunState:
    """One nightly run's publish through ``jobs.orchestration.nightly.execute``;
    ``on_begin`` is called once the run has begun (after reconcile), before anything is
    written."""
    from jobs.platform.db import engine_for

    engine = engine_for(target.database_url)
    ensure_model(engine, target.home)
    engine.dispose()

    def prepare(engine: Any, state: RunState) -> None:
        write_scoring_output(state.folder, tag, users)
        state.stats["scored_users"] = users
        state.save()
        if on_begin is not None:
            on_begin()

    config = NightlyConfig(
        run_date=run_date, database_url=target.database_url, redis_url=target.redis_url,
        home=target.home, k=K, lock_wait_seconds=lock_wait_seconds,
        serve_older_date=serve_older_date)
    return nightly.execute(config, prepare)


# ---------------------------------------------------------------- pause points


def pause_here(marker: Path, point: str) -> None:
    """Say where this process stopped, then wait to be killed."""
    marker.write_text(point)
    time.sleep(PAUSE_SECONDS)
    sys.exit(f"paused at {point} for {PAUSE_SECONDS}s and nobody killed this process")


def hold_until(marker: Path, release: Path) -> None:
    """Say that the run has begun, then wait until ``release`` exists (or give up)."""
    marker.write_text(HELD)
    deadline = time.monotonic() + PAUSE_SECONDS
    while not release.exists():
        if time.monotonic() > deadline:
            sys.exit(f"held for {PAUSE_SECONDS}s and nobody released this process")
        time.sleep(0.05)


def hooked(owner: Any, name: str, nth: int, after: bool, action: Callable[[], None]) -> Any:
    """``owner.name`` wrapped to run ``action()`` at its ``nth`` call, before or after it
    runs; set it in place of the original (a static or class method stays one)."""
    original = getattr(owner, name)
    kind = inspect.getattr_static(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth and not after:
            action()
        result = original(*args, **kwargs)
        if calls == nth and after:
            action()
        return result

    if isinstance(kind, staticmethod):
        return staticmethod(wrapper)
    if isinstance(kind, classmethod):  # ``original`` is bound to the class already
        return classmethod(lambda cls, *args, **kwargs: wrapper(*args, **kwargs))
    return wrapper


def pause_at_stage(kind: str, stage: str, stop: Callable[[], None]) -> None:
    """Stop as a stage of a ``kind`` run's plan begins, before its first step runs."""
    first, *rest = plans.PLANS[kind][stage]

    def stopped(*args: Any) -> Any:
        stop()
        return first(*args)

    plans.PLANS[kind][stage] = (stopped, *rest)


def pause_in_key_pass(nth: int, at_key: int, stop: Callable[[], None]) -> None:
    """Stop in the ``nth`` pass over a version's Redis keys (persist, or the retirement of
    a version two back), once ``at_key`` keys were sent: the commands before ran, the
    rest not."""
    original_pass = redis_module.key_pass
    original_run = redis_module.run_on_keys
    passes = 0

    def key_pass(client: Any, keys: Any, publish_id: int, command: tuple[str, ...],
                 meta_first: bool = False) -> int:
        nonlocal passes
        passes += 1
        if passes != nth:
            return original_pass(client, keys, publish_id, command, meta_first)
        sent = 0

        def run_on_keys(connection: Any, command: tuple[str, ...], batch: Any,
                        *follow: Any) -> int:
            nonlocal sent
            if sent < at_key <= sent + len(batch):
                original_run(connection, command, batch.slice(0, at_key - sent), *follow)
                stop()
            sent += len(batch)
            return original_run(connection, command, batch, *follow)

        redis_module.run_on_keys = run_on_keys
        try:
            return original_pass(client, keys, publish_id, command, meta_first)
        finally:
            redis_module.run_on_keys = original_run

    redis_module.key_pass = key_pass


PG = postgres_module.PostgresPublisher
REDIS = redis_module.RedisPublisher
# name -> how to stop there: (owner, attribute, nth call, after it), a key pass, or the
# beginning of a stage of a plan.
POINTS: dict[str, tuple] = {
    "postgres: version allocated": (PG, "allocate", 1, True),
    "postgres: staged table created": (PG, "prepare", 1, True),
    "postgres: COPY of block 2": (postgres_module, "copy_lists_binary", 2, False),
    "postgres: COPY of block 5": (postgres_module, "copy_lists_binary", 5, False),
    "postgres: fallback written": (PG, "write_fallback", 1, True),
    "postgres: loaded, not indexed": (PG, "finish_load", 1, False),
    "postgres: written aside": (PG, "finish_load", 1, True),
    "redis: version registered": (REDIS, "prepare", 1, True),
    "redis: block 2 encoded": (REDIS, "_keys_and_values", 2, False),
    "redis: block 5 encoded": (REDIS, "_keys_and_values", 5, False),
    "redis: fallback written": (REDIS, "write_fallback", 1, True),
    "redis: written aside": (REDIS, "write_meta", 1, True),
    "switch: publish lock taken": (protocol_module, "switch", 1, False),
    "postgres: attached, not served": (PG, "attach", 1, True),
    "postgres: serving updated, not committed": (postgres_module, "record_switch", 1, True),
    "postgres: switched, redis not yet": (PG, "switch", 1, True),
    "redis: persist half done": ("keys", 1, 250),
    "redis: persisted, pointer not moved": (redis_module, "compare_and_set_pointer", 1, False),
    "redis: pointer moved, oldest not retired": (redis_module, "compare_and_set_pointer",
                                                 1, True),
    "redis: oldest half retired": ("keys", 2, 250),
    "postgres: cleanup begins": (PG, "cleanup", 1, False),
    "postgres: partition detached, not committed": (PG, "_drop", 1, True),
    "smoke check begins": ("stage", "serve", "check"),
    "run record begins": (nightly, "finish", 1, False),
    "run recorded, folder left": (runs, "succeed", 1, True),
}


def arm(point: str, marker: Path) -> None:
    """Install the stop at ``point``."""
    spec = POINTS[point]
    stop = functools.partial(pause_here, marker, point)
    if spec[0] == "keys":
        pause_in_key_pass(spec[1], spec[2], stop)
    elif spec[0] == "stage":
        pause_at_stage(spec[1], spec[2], stop)
    else:
        owner, name, nth, after = spec
        setattr(owner, name, hooked(owner, name, nth, after, stop))


def small_blocks() -> None:
    """Blocks of BLOCK_USERS users and key batches of 100, so a few hundred users make
    several of each to stop between."""
    publish_steps.read_blocks = functools.partial(read_blocks, block_users=BLOCK_USERS)
    redis_module.PIPELINE_BATCH = 100
    redis_module.KEY_BLOCK = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", default=os.environ.get(REDIS_URL_VARIABLE),
                        help=f"the writer's URL (default: ${REDIS_URL_VARIABLE})")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--run-date", type=date.fromisoformat, required=True)
    parser.add_argument("--tag", type=int, required=True)
    parser.add_argument("--pause", choices=sorted(POINTS), default=None)
    parser.add_argument("--marker", type=Path, default=None)
    parser.add_argument("--hold", type=Path, default=None,
                        help="once the run has begun, say so in --marker and wait until "
                             "this file exists")
    parser.add_argument("--lock-wait", type=float, default=30.0)
    parser.add_argument("--serve-older-date", action="store_true")
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error(f"--redis-url or {REDIS_URL_VARIABLE} is required")
    if (args.pause or args.hold) and args.marker is None:
        parser.error("--pause and --hold need --marker")
    if args.pause and args.hold:
        parser.error("--pause and --hold exclude each other")
    small_blocks()
    on_begin = None
    if args.pause is not None:
        on_begin = functools.partial(arm, args.pause, args.marker)
    elif args.hold is not None:
        on_begin = functools.partial(hold_until, args.marker, args.hold)
    state = publish(Target(args.database_url, args.redis_url, args.home), args.run_date,
                    args.tag, lock_wait_seconds=args.lock_wait, on_begin=on_begin,
                    serve_older_date=args.serve_older_date)
    print(f"published version {state.publish_id} for {state.run_date}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
