"""What the fault tests assert after each fault: what readers of each store get, and
what is left behind. Also the tally the tier's one-line summary prints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import redis
import sqlalchemy as sa

from jobs.client import RecommendationClient
from jobs.contracts.redis import Keyspace
from tests.faults.publisher import (
    REDIS_URL_VARIABLE,
    USERS,
    K,
    Target,
    expected_items,
    version_tag,
)

KEYS = Keyspace()  # the default prefix's keys

# readers, switches, kills, restarts, ...: printed once at the end of the tier.
TALLY: Counter[str] = Counter()
REPO = Path(__file__).resolve().parents[2]
MARKER_WAIT_SECONDS = 60


class PartialReadError(AssertionError):
    """A reader saw a partial, mixed or empty version."""


def whole_rows(rows: list[tuple[int, int, int]]) -> int:
    """The tag of the version ``rows`` (user_id, rank, item_id) are, if they are all of
    one version and all of it; raises :class:`PartialReadError` otherwise."""
    if not rows:
        raise PartialReadError("an empty read")
    tags = {version_tag(item) for _, _, item in rows}
    if len(tags) != 1:
        raise PartialReadError(f"a read mixing versions {sorted(tags)}")
    tag = tags.pop()
    if len(rows) != USERS * K:
        raise PartialReadError(
            f"a partial read of version {tag}: {len(rows)} of {USERS * K} rows")
    for user, rank, item in rows:
        if item != expected_items(tag, user)[rank - 1]:
            raise PartialReadError(
                f"user {user} rank {rank}: item {item} is not version {tag}'s")
    return tag


def postgres_serves_whole(engine: sa.engine.Engine) -> int:
    """The tag of the version bi.recommendations serves, checked whole."""
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(sa.text(
            "SELECT user_id, rank, item_id FROM bi.recommendations"))]
    TALLY["postgres reads"] += 1
    return whole_rows(rows)


def redis_serves_whole(client: redis.Redis) -> int:
    """The tag of the version the read client serves every user from, checked whole."""
    reader = RecommendationClient(client, KEYS)
    tags = set()
    for user in range(1, USERS + 1):
        recs = reader.get_recommendations(user, k=K)
        if recs.source != "predictions":
            raise PartialReadError(f"user {user} got the fallback from the served version")
        items = [item.item_id for item in recs.items]
        tag = version_tag(items[0])
        if items != expected_items(tag, user):
            raise PartialReadError(f"user {user}: {items} is not one version's list")
        tags.add(tag)
    TALLY["redis reads"] += USERS
    if len(tags) != 1:
        raise PartialReadError(f"redis serves users from versions {sorted(tags)}")
    return tags.pop()


def assert_converged(engine: sa.engine.Engine, client: redis.Redis, home: Path) -> int:
    """Both stores serve the same whole version and nothing is left behind; its publish id."""
    with engine.connect() as conn:
        served = conn.execute(sa.text("SELECT publish_id FROM batchscore.serving")).scalar()
        staged = conn.execute(sa.text(
            "SELECT count(*) FROM batchscore.prediction_versions WHERE status = 'staged'"
        )).scalar()
        running = conn.execute(sa.text(
            "SELECT count(*) FROM batchscore.runs WHERE status = 'running'")).scalar()
        loose_tables = conn.execute(sa.text(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'batchscore' AND c.relname ~ '^prediction_lists_p[0-9]+$'"
            " AND c.relkind = 'r' AND NOT c.relispartition")).scalar()
    assert (staged, running, loose_tables) == (0, 0, 0), (
        f"left behind: {staged} staged versions, {running} running runs, "
        f"{loose_tables} loose tables")
    assert int(client.get(KEYS.pointer_key())) == served
    assert postgres_serves_whole(engine) == redis_serves_whole(client)
    # Permanent keys: the served version's, and the version served before it (a rollback
    # to it is a pointer flip), each with its users record; nothing else of any version.
    with engine.connect() as conn:
        previous = conn.execute(sa.text(
            "SELECT previous_publish_id FROM batchscore.serving_history WHERE publish_id = :id"
            " ORDER BY switched_at DESC LIMIT 1"), {"id": served}).scalar()
    kept = [version for version in (served, previous) if version is not None]
    permanent = [key for key in client.scan_iter(count=1_000)
                 if client.ttl(key) == -1
                 and not any(key.startswith(KEYS.version_prefix(version))
                             or key == KEYS.users_key(version) for version in kept)
                 and key not in (KEYS.pointer_key(), KEYS.versions_key())]
    assert permanent == [], f"keys without expiry outside the kept versions: {permanent[:5]}"
    assert {int(member) for member in client.smembers(KEYS.versions_key())} >= set(kept)
    staging = home / "staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    return served


def start_publisher(target: Target, run_date: date, tag: int, pause: str | None,
                    marker: Path, *extra: str) -> subprocess.Popen:
    """A publishing process of its own process group, stopping at ``pause`` (``extra``:
    more of its options, such as ``--hold FILE``, which needs ``marker``)."""
    marker.unlink(missing_ok=True)
    command = [sys.executable, "-m", "tests.faults.publisher",
               "--database-url", target.database_url,
               "--home", str(target.home), "--run-date", run_date.isoformat(),
               "--tag", str(tag), *extra]
    if pause is not None:
        command += ["--pause", pause]
    if pause is not None or "--hold" in extra:
        command += ["--marker", str(marker)]
    # The Redis URL holds the writer's password: in the environment, not on a command line.
    env = {**os.environ, REDIS_URL_VARIABLE: target.redis_url}
    return subprocess.Popen(command, cwd=REPO, start_new_session=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_marker(process: subprocess.Popen, marker: Path, point: str) -> None:
    deadline = time.monotonic() + MARKER_WAIT_SECONDS
    while not (marker.exists() and marker.read_text() == point):
        if process.poll() is not None:
            raise AssertionError(f"the publisher ended ({process.returncode}) before {point!r}:"
                                 f"\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            kill_group(process)
            raise AssertionError(f"the publisher did not reach {point!r} in "
                                 f"{MARKER_WAIT_SECONDS}s")
        time.sleep(0.02)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process's whole group and reap it."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()
    TALLY["kills"] += 1


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """Wait for a publishing process to end; its exit code and output."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise
    return process.returncode, output
