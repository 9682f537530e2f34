"""Reconcile: bring both stores back to one served version after any crash, by itself.

Run at the start of every nightly (and as the DAG's first task), and by hand
with ``batchscore reconcile``. Under the publish lock it

1. marks running runs whose process is gone as failed (their lease ran out
   and no process holds it) and discards what they staged;
2. discards staged versions whose run is no longer running, and drops
   tables of versions that are not (or no longer) kept;
3. points Redis at what PostgreSQL serves, removing the expiry of its keys
   (and writing them again from PostgreSQL if Redis lost them);
4. removes from Redis every other version but the one served before the
   served one (PostgreSQL's serving history says which), and the keys of
   versions that failed; versions being written aside by a running run stay;
5. removes staging folders of runs that are not running.

Running it again at once finds nothing to do.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.engine import Engine

from jobs.contracts.redis import Keyspace
from jobs.platform import runs
from jobs.platform.db import statement
from jobs.publish.postgres import PostgresPublisher, partition_name, served_publish_id
from jobs.publish.protocol import DEFAULT_LOCK_WAIT_SECONDS, follow_postgres, publish_lock
from jobs.publish.redis import (
    known_versions,
    meta_is_persistent,
    pointer,
    retire_version,
)

logger = logging.getLogger(__name__)

GONE_RUN_ERROR = "the process running it is gone (found by reconcile)"


@dataclass
class ReconcileReport:
    """What reconcile found and did."""

    postgres_serves: int | None = None
    redis_pointer_before: int | None = None
    redis_pointer: int | None = None
    redis_keys_persisted: bool = False
    runs_failed: list[str] = field(default_factory=list)
    versions_discarded: list[int] = field(default_factory=list)
    tables_dropped: list[str] = field(default_factory=list)
    redis_versions_retired: list[int] = field(default_factory=list)
    redis_versions_deleted: list[int] = field(default_factory=list)
    folders_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.redis_pointer != self.redis_pointer_before
                    or self.redis_keys_persisted or self.runs_failed
                    or self.versions_discarded or self.tables_dropped
                    or self.redis_versions_retired or self.redis_versions_deleted
                    or self.folders_removed)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}

    def lines(self) -> list[str]:
        """What was done, one line each, for a person."""
        done = []
        if self.redis_pointer != self.redis_pointer_before:
            done.append(f"redis pointer moved from version {self.redis_pointer_before} to "
                        f"{self.redis_pointer}, the version postgres serves")
        elif self.redis_keys_persisted:
            done.append(f"redis keys of served version {self.redis_pointer} made permanent")
        for run_id in self.runs_failed:
            done.append(f"run {run_id} marked failed: {GONE_RUN_ERROR}")
        if self.versions_discarded:
            done.append(f"staged versions discarded: {join(self.versions_discarded)}")
        if self.tables_dropped:
            done.append(f"stale tables dropped: {join(self.tables_dropped)}")
        if self.redis_versions_retired:
            done.append("redis versions removed (postgres keeps them): "
                        f"{join(self.redis_versions_retired)}")
        if self.redis_versions_deleted:
            done.append(f"redis keys of failed versions deleted: "
                        f"{join(self.redis_versions_deleted)}")
        if self.folders_removed:
            done.append(f"staging folders removed: {join(self.folders_removed)}")
        return done


def join(values: list[Any]) -> str:
    return ", ".join(str(value) for value in values)


def reconcile(engine: Engine, client: redis.Redis, keys: Keyspace, staging_dir: Path, *,
              wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS) -> ReconcileReport:
    """Repair both stores and the run history; see the module's docstring."""
    report = ReconcileReport()
    with publish_lock(engine, "reconcile", wait_seconds):
        postgres = PostgresPublisher(engine)
        for run_id in runs.gone(engine):
            runs.fail(engine, run_id, GONE_RUN_ERROR)
            report.runs_failed.append(run_id)
        for publish_id in staged_of_finished_runs(engine):
            if postgres.discard(publish_id):
                report.versions_discarded.append(publish_id)
            retire_version(client, keys, publish_id)
        report.tables_dropped = drop_stale_tables(engine, postgres)
        report.redis_pointer_before = pointer(client, keys)
        report.postgres_serves = served_publish_id(engine)
        persistent = (report.postgres_serves is not None
                      and meta_is_persistent(client, keys, report.postgres_serves))
        follow_postgres(engine, client, keys)
        report.redis_pointer = pointer(client, keys)
        report.redis_keys_persisted = (report.postgres_serves is not None and not persistent)
        retired, deleted = settle_other_versions(engine, client, keys, report.postgres_serves)
        report.redis_versions_retired, report.redis_versions_deleted = retired, deleted
    report.folders_removed = remove_stale_folders(engine, staging_dir)
    for line in report.lines():
        logger.info("reconcile: %s", line)
    if not report.changed:
        logger.info("reconcile: both stores agree on version %s; nothing to do",
                    report.postgres_serves)
    return report


def staged_of_finished_runs(engine: Engine) -> list[int]:
    """Staged versions whose run no longer runs: nothing will ever switch them in."""
    with engine.connect() as conn:
        return list(conn.execute(statement(conn,
            "SELECT v.publish_id FROM {schema}.prediction_versions v"
            " JOIN {schema}.runs r USING (run_id)"
            " WHERE v.status = 'staged' AND r.status <> 'running' ORDER BY v.publish_id"
        )).scalars())


def drop_stale_tables(engine: Engine, postgres: PostgresPublisher) -> list[str]:
    """Drop version tables that are not partitions and whose version is not staged."""
    with engine.connect() as conn:
        stale = list(conn.execute(statement(conn,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = {schema_name} AND c.relkind = 'r' AND NOT c.relispartition"
            " AND c.relname ~ '^prediction_lists_p[0-9]+$'"
            " AND NOT EXISTS (SELECT 1 FROM {schema}.prediction_versions v"
            "  WHERE v.status = 'staged'"
            "  AND 'prediction_lists_p' || v.publish_id::text = c.relname)"
            " ORDER BY c.relname")).scalars())
    for table in stale:
        publish_id = int(table.removeprefix("prediction_lists_p"))
        assert partition_name(publish_id) == table
        postgres.drop_table(publish_id)
    return stale


def settle_other_versions(engine: Engine, client: redis.Redis, keys: Keyspace,
                          served: int | None) -> tuple[list[int], list[int]]:
    """Versions in Redis other than the served one and the one served before it:
    removed (published ones: PostgreSQL keeps them), or deleted if they failed."""
    previous = previously_served(engine, served) if served is not None else None
    others = sorted(known_versions(client, keys) - {served, previous})
    if not others:
        return [], []
    with engine.connect() as conn:
        statuses = dict(conn.execute(statement(conn,
            "SELECT publish_id, status FROM {schema}.prediction_versions"
            " WHERE publish_id = ANY(:ids)"), {"ids": others}).all())
    retired, deleted = [], []
    for publish_id in others:
        status = statuses.get(publish_id)
        if status == "staged":
            continue  # a live run is writing it; its keys expire by themselves
        # Also what a retirement cut short left (its meta key went first).
        removed = retire_version(client, keys, publish_id)
        if removed:
            (deleted if status in (None, "failed") else retired).append(publish_id)
    return retired, deleted


def previously_served(engine: Engine, served: int) -> int | None:
    """The version served before ``served`` last became served."""
    with engine.connect() as conn:
        return conn.execute(statement(conn,
            "SELECT previous_publish_id FROM {schema}.serving_history"
            " WHERE publish_id = :id ORDER BY switched_at DESC LIMIT 1"),
            {"id": served}).scalar()


def remove_stale_folders(engine: Engine, staging_dir: Path) -> list[str]:
    """Remove staging folders of runs that are not running (or were never recorded)."""
    if not staging_dir.is_dir():
        return []
    removed = []
    for folder in sorted(staging_dir.iterdir()):
        if not folder.is_dir() or runs.status_of(engine, folder.name) == "running":
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def disagreement(engine: Engine, client: redis.Redis, keys: Keyspace) -> str | None:
    """Why the stores do not serve the same version, or None when they do."""
    served = served_publish_id(engine)
    at = pointer(client, keys)
    if served is None:
        return None if at is None else f"postgres serves nothing, the redis pointer names {at}"
    if at != served:
        return f"postgres serves version {served}, the redis pointer names {at}"
    if not meta_is_persistent(client, keys, served):
        return f"the served version {served}'s redis keys still expire"
    return None
