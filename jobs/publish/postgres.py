"""Publishing predictions to PostgreSQL.

A version is loaded with COPY into its own table and indexed, aside, while
it is still ``staged``. The table is created, indexed, attached, detached and
dropped by functions that run as the owner role (``sql/009_roles.sql``), so
the writer role that publishes needs no other DDL. Switching it in (under the publish lock, see
:mod:`jobs.publish.protocol`) attaches it as a partition of
``batchscore.prediction_lists`` and makes it the served version by one UPDATE of
``batchscore.serving`` in the same transaction. A query of the BI views
therefore sees the previous complete version or the new complete one.

Every statement that locks the partitioned table runs with a short
``lock_timeout`` and is tried again with backoff, so a long BI query never
makes readers queue behind a switch or a cleanup.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from psycopg2 import errors, sql
from sqlalchemy.engine import Connection, Engine

from jobs.platform.config import DEFAULT_KEEP_VERSIONS
from jobs.platform.db import composed, cursor, names_of, statement
from jobs.platform.provenance import current_user
from jobs.publish import PublishVersion, SwitchOutcome, read_ahead
from jobs.publish.copy_binary import CopyPayload, copy_lists_binary
from jobs.publish.exposure import ExposureCounter

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How much of a COPY buffer is handed to the server per call.
COPY_CHUNK_BYTES = 1 << 20
# COPY streams loading one version at once: the server parses and inserts on
# as many cores (two loaded 15,000,000 rows 1.4x as fast as one on 2 cores).
DEFAULT_LOAD_CONNECTIONS = 2
# Longest a statement that locks batchscore.prediction_lists waits for its lock; a
# reader waits no longer than this behind it.
LOCK_TIMEOUT_MS = 1_000
# Tries of such a statement, with backoff between them (0.2 s, doubling).
LOCK_ATTEMPTS = 5
# What the load connections call themselves in pg_stat_activity.
LOAD_APPLICATION_NAME = "batchscore-load"
# Tables with rows of a version besides its own table, deleted when it is discarded or
# dropped.
VERSION_ROW_TABLES = ("popular_items", "canary_users", "prediction_item_exposure")
# Statuses of a version that was switched in once.
SWITCHED = ("published", "superseded", "rolled_back", "shadow", "dropped")


def partition_name(publish_id: int) -> str:
    return f"prediction_lists_p{int(publish_id)}"


class RollbackError(RuntimeError):
    """A rollback cannot be done; nothing was changed."""


class VersionStateError(RuntimeError):
    """A version is in a state that does not allow what was asked; nothing was changed."""


class LockTimeoutError(RuntimeError):
    """A statement kept waiting for a lock other sessions hold; nothing was changed."""


@dataclass(frozen=True)
class Canary:
    """A candidate model served to ``fraction`` of the users (see :mod:`jobs.contracts.canary`)."""

    model_version: int
    fraction: float


@dataclass(frozen=True)
class Rollback:
    rolled_back: int
    restored: int
    rolled_back_models: list[int]
    restored_model: int


def served_publish_id(engine: Engine) -> int | None:
    """The publish id readers are served now, or None before the first publish."""
    with engine.connect() as conn:
        return conn.execute(statement(conn, "SELECT publish_id FROM {schema}.serving")).scalar()


def served_version(engine: Engine) -> tuple[int, date, int] | None:
    """What readers are served now: ``(publish_id, logical_date, model_version)``, or None."""
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            "SELECT v.publish_id, v.logical_date, v.model_version FROM {schema}.serving s"
            " JOIN {schema}.prediction_versions v USING (publish_id)")).first()
    return None if row is None else (row.publish_id, row.logical_date, row.model_version)


def list_versions(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """Published versions, newest first, as ``bi.prediction_versions`` shows them: the ids
    ``batchscore rollback --to`` and ``batchscore validate --predictions`` take."""
    with engine.connect() as conn:
        rows = conn.execute(statement(conn,
            "SELECT publish_id, run_id, model_version, logical_date, k, status, users, rows,"
            " created_at, published_at, dropped_at, is_serving, canary_model_version,"
            " canary_fraction FROM {bi}.prediction_versions"
            " ORDER BY publish_id DESC LIMIT :n"), {"n": limit}).mappings().all()
    return [dict(row) for row in rows]


def version_status(engine: Engine, publish_id: int) -> str | None:
    """A version's status (``staged``, ``published``, ...), or None for no such version."""
    with engine.connect() as conn:
        return conn.execute(statement(conn, "SELECT status FROM {schema}.prediction_versions"
                                    " WHERE publish_id = :id"), {"id": publish_id}).scalar()


def first_lists(engine: Engine, publish_id: int, users: int) -> list[tuple[int, list[int]]]:
    """The item lists of a version's first ``users`` users by id: ``(user_id, item_ids)``."""
    with engine.connect() as conn:
        return [(user_id, list(items)) for user_id, items in conn.execute(statement(conn,
            "SELECT user_id, item_ids FROM {schema}.prediction_lists"
            " WHERE publish_id = :id ORDER BY user_id LIMIT :n"),
            {"id": publish_id, "n": users})]


def version_users(engine: Engine, publish_id: int) -> np.ndarray:
    """The ids of the users a version holds lists for (int64)."""
    with engine.connect() as conn:
        return np.array(conn.execute(statement(conn,
            "SELECT user_id FROM {schema}.prediction_lists WHERE publish_id = :id"),
            {"id": publish_id}).scalars().all(), dtype=np.int64)


def lists_of(engine: Engine, publish_id: int, users: list[int]
             ) -> dict[int, tuple[list[int], list[float]]]:
    """A version's lists of ``users`` (those it holds): user id -> (item ids, scores)."""
    rows: dict[int, tuple[list[int], list[float]]] = {}
    with engine.connect() as conn:
        for user, items, scores in conn.execute(statement(conn,
            "SELECT user_id, item_ids, scores FROM {schema}.prediction_lists"
            " WHERE publish_id = :id AND user_id = ANY(:users)"),
                {"id": publish_id, "users": users}):
            rows[int(user)] = (list(items), list(scores))
    return rows


def record_switch(cur: Any, publish_id: int, previous: int | None, action: str,
                  reason: str, switched_by: str | None = None) -> None:
    """Add a row to ``batchscore.serving_history`` in the cursor's transaction."""
    cur.execute(
        composed(cur,
                "INSERT INTO {schema}.serving_history (publish_id, previous_publish_id, action,"
                " switched_by, reason) VALUES (%s, %s, %s, %s, %s)"),
        (publish_id, previous, action, switched_by or current_user(), reason),
    )


class PostgresPublisher:
    def __init__(self, engine: Engine, keep_versions: int = DEFAULT_KEEP_VERSIONS,
                 load_connections: int = DEFAULT_LOAD_CONNECTIONS,
                 lock_timeout_ms: int = LOCK_TIMEOUT_MS,
                 lock_attempts: int = LOCK_ATTEMPTS) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, got {keep_versions}")
        if load_connections < 1:
            raise ValueError(f"load_connections must be at least 1, got {load_connections}")
        self.engine = engine
        self.keep_versions = keep_versions
        self.load_connections = load_connections
        self.lock_timeout_ms = lock_timeout_ms
        self.lock_attempts = lock_attempts
        self.version: PublishVersion | None = None
        self.users = 0
        self.rows = 0
        self.exposure = ExposureCounter()

    def allocate(self, run_id: str, model_version: int, logical_date: date, k: int,
                 canary: Canary | None = None) -> PublishVersion:
        """Reserve a publish id for a run; nothing is visible to readers yet."""
        with self.engine.begin() as conn:
            publish_id = conn.execute(
                statement(conn, "INSERT INTO {schema}.prediction_versions"
                    " (run_id, model_version, logical_date, k, status, canary_model_version,"
                    "  canary_fraction)"
                    " VALUES (:run_id, :model_version, :logical_date, :k, 'staged',"
                    "  :canary_model_version, :canary_fraction)"
                    " RETURNING publish_id"),
                {"run_id": run_id, "model_version": model_version,
                 "logical_date": logical_date, "k": k,
                 "canary_model_version": canary.model_version if canary else None,
                 "canary_fraction": canary.fraction if canary else None},
            ).scalar_one()
        return PublishVersion(publish_id=publish_id, run_id=run_id, model_version=model_version,
                              logical_date=logical_date, k=k)

    def prepare(self, version: PublishVersion) -> None:
        self.version = version
        self.exposure = ExposureCounter()
        # The partition's CHECK exists before the load, so every row is checked
        # as it is copied and attaching needs no scan of the table.
        self._call("create_version_table", version.publish_id)

    def write(self, block: pa.RecordBatch) -> int:
        """COPY one block; see :meth:`write_blocks`."""
        return self.write_blocks([block])

    def write_blocks(self, blocks: Iterable[pa.RecordBatch],
                     progress: Callable[[int], None] | None = None) -> int:
        """COPY blocks of (user_id, items, scores) rows, one row per user; the (user, rank)
        pairs written.

        Each block is encoded in COPY's binary format with numpy, in one
        buffer, on another thread while the blocks before it are loaded, on
        :attr:`load_connections` connections at once, so the server parses
        and inserts on as many cores. Nothing is committed unless every block
        loads; the staged table is invisible to readers either way.
        ``progress`` is called with the users written so far after each block.
        Each block's items are counted as it is encoded (:attr:`exposure`), for
        :meth:`finish_load` to store.
        """
        version = self._require_version()
        connections = [self.engine.raw_connection() for _ in range(self.load_connections)]
        for connection in connections:
            with connection.cursor() as cur:
                cur.execute("SET application_name = %s", (LOAD_APPLICATION_NAME,))
        idle: queue.Queue[Any] = queue.Queue()
        for connection in connections:
            idle.put(connection)
        failures: list[BaseException] = []
        counted = threading.Lock()
        rows_before = self.rows

        def load(connection: Any, statement: str, users: int, payload: CopyPayload) -> None:
            try:
                with connection.cursor() as cur:
                    cur.copy_expert(statement, io.BytesIO(payload.data), size=COPY_CHUNK_BYTES)
                with counted:
                    self.users += users
                    self.rows += payload.rows
                    if progress is not None:
                        progress(self.users)
            except BaseException as err:  # raised by the calling thread below
                failures.append(err)
            finally:
                idle.put(connection)

        try:
            statement = names_of(self.engine).compose(
                "COPY {schema}.{table} (publish_id, user_id, item_ids, scores)"
                " FROM STDIN WITH (FORMAT binary)",
                table=sql.Identifier(partition_name(version.publish_id))).as_string(
                    connections[0].dbapi_connection)
            with ThreadPoolExecutor(len(connections), thread_name_prefix="copy") as loaders:
                for users, payload in read_ahead(self._encoded(version.publish_id, block)
                                                 for block in blocks):
                    connection = idle.get()
                    if failures:
                        break
                    loaders.submit(load, connection, statement, users, payload)
            if failures:
                raise failures[0]
            for connection in connections:
                connection.commit()
        except BaseException:
            for connection in connections:
                # A connection the server terminated has nothing left to roll back.
                if not connection.dbapi_connection.closed:
                    connection.rollback()
            raise
        finally:
            for connection in connections:
                if connection.dbapi_connection.closed:
                    connection.invalidate()
                connection.close()
        return self.rows - rows_before

    def _encoded(self, publish_id: int, block: pa.RecordBatch) -> tuple[int, CopyPayload]:
        payload = copy_lists_binary(publish_id, block)
        self.exposure.add(block.column("items"))
        return block.num_rows, payload

    def write_fallback(self, popular: pa.Table) -> None:
        version = self._require_version()
        with self.engine.begin() as conn:
            conn.execute(
                statement(conn,
                    "INSERT INTO {schema}.popular_items (publish_id, rank, item_id, score)"
                    " VALUES (:publish_id, :rank, :item_id, :score)"),
                [{"publish_id": version.publish_id, "rank": int(rank), "item_id": int(item),
                  "score": float(score)}
                 for rank, item, score in zip(popular.column("rank").to_pylist(),
                                              popular.column("item_id").to_pylist(),
                                              popular.column("score").to_pylist(), strict=True)],
            )

    def finish_load(self) -> None:
        """Index and analyse the loaded table and record its counts, and each item's;
        it stays staged.

        Done before the switch, which is then only an attach and two updates.
        """
        version = self._require_version()
        self._call("index_version_table", version.publish_id)
        exposure = self.exposure.total()
        with cursor(self.engine) as cur:
            cur.execute(composed(cur,
                    "UPDATE {schema}.prediction_versions SET users = %s, rows = %s"
                    " WHERE publish_id = %s AND status = 'staged'"),
                        (self.users, self.rows, version.publish_id))
            if cur.rowcount:
                cur.execute(composed(cur, "DELETE FROM {schema}.prediction_item_exposure"
                            " WHERE publish_id = %s"), (version.publish_id,))
                cur.copy_expert(composed(cur,
                        "COPY {schema}.prediction_item_exposure (publish_id, item_id, users,"
                        " rank_sum) FROM STDIN"),
                        io.StringIO(exposure.copy_text(version.publish_id)))

    def switch(self, publish_id: int, force_serve: bool = False) -> SwitchOutcome:
        """Attach a staged version and serve it unless a later date is served.

        The caller holds the publish lock. A version for a date that already
        has one replaces it (the old one is marked superseded; :meth:`cleanup`
        drops it once it leaves the kept window). ``force_serve`` serves it
        even when a later date is being served. Switching a version that was
        already switched in changes nothing and says whether it is served.
        """
        self.attach(publish_id)
        return self._with_lock_retries(
            f"switching in version {publish_id}",
            lambda cur: self._switch(cur, publish_id, force_serve))

    def attach(self, publish_id: int) -> None:
        """Attach a staged version's table as a partition, in a transaction of its own.

        ATTACH takes only SHARE UPDATE EXCLUSIVE on ``batchscore.prediction_lists``,
        so readers do not wait for it, and a reader that planned its query
        just before may not know the new partition yet. Committing the attach
        before the switch that names the version served means that no reader
        can see the version served without seeing its partition. Until then,
        a staged partition is seen by no view.
        """
        def attach(cur: Any) -> None:
            status = self._lock_version(cur, publish_id)[0]
            if status == "staged" and not self._is_partition(cur, publish_id):
                cur.execute(composed(cur, "SELECT {schema}.attach_version_table(%s)"),
                            (publish_id,))

        self._with_lock_retries(f"attaching version {publish_id}", attach)

    def _switch(self, cur: Any, publish_id: int, force_serve: bool) -> SwitchOutcome:
        status, logical_date, users, rows = self._lock_version(cur, publish_id)
        if status != "staged":
            return self._already_switched(cur, publish_id, status)
        cur.execute(
            composed(cur, "UPDATE {schema}.prediction_versions SET status = 'superseded'"
            " WHERE logical_date = %s AND status = 'published' RETURNING publish_id"),
            (logical_date,),
        )
        superseded = [row[0] for row in cur.fetchall()]
        cur.execute(
            composed(cur, "UPDATE {schema}.prediction_versions SET status = 'published',"
            " published_at = now() WHERE publish_id = %s"), (publish_id,))
        cur.execute(
            composed(cur, "SELECT s.publish_id, v.logical_date FROM {schema}.serving s"
            " JOIN {schema}.prediction_versions v USING (publish_id)")
        )
        current = cur.fetchone()
        served = force_serve or current is None or logical_date >= current[1]
        if served:
            cur.execute(
                composed(cur,
                        "INSERT INTO {schema}.serving (only_row, publish_id) VALUES (true, %s)"
                        " ON CONFLICT (only_row) DO UPDATE"
                        " SET publish_id = EXCLUDED.publish_id, switched_at = now()"),
                (publish_id,),
            )
            cur.execute(composed(cur, "SELECT run_id FROM {schema}.prediction_versions"
                        " WHERE publish_id = %s"), (publish_id,))
            record_switch(cur, publish_id, current[0] if current else None,
                          "publish", f"run {cur.fetchone()[0]}")
        logger.info("postgres: version %d published (%s users, %s rows)%s", publish_id, users,
                    rows, ", now served" if served else ", not served (a later date is served)")
        return SwitchOutcome(served=served,
                             previous_served=current[0] if current is not None else None,
                             superseded=superseded)

    def keep_aside(self, publish_id: int) -> SwitchOutcome:
        """Attach a staged version as a shadow: queryable, never served."""
        self.attach(publish_id)

        def attach(cur: Any) -> SwitchOutcome:
            status, _, users, rows = self._lock_version(cur, publish_id)
            if status != "staged":
                return self._already_switched(cur, publish_id, status)
            cur.execute(composed(cur, "UPDATE {schema}.prediction_versions SET status = 'shadow',"
                        " published_at = now() WHERE publish_id = %s"), (publish_id,))
            logger.info("postgres: shadow version %d stored (%s users, %s rows), not served",
                        publish_id, users, rows)
            return SwitchOutcome(served=False)

        return self._with_lock_retries(f"keeping version {publish_id} aside", attach)

    @staticmethod
    def _lock_version(cur: Any, publish_id: int) -> tuple[str, date, int | None, int | None]:
        cur.execute(composed(cur, "SELECT status, logical_date, users, rows"
                    " FROM {schema}.prediction_versions WHERE publish_id = %s FOR UPDATE"),
                    (publish_id,))
        row = cur.fetchone()
        if row is None:
            raise VersionStateError(f"version {publish_id} does not exist")
        return row

    @staticmethod
    def _already_switched(cur: Any, publish_id: int, status: str) -> SwitchOutcome:
        if status not in SWITCHED:
            raise VersionStateError(f"version {publish_id} is {status}, not staged: it cannot "
                                    "be switched in; run its date again")
        cur.execute(composed(cur, "SELECT publish_id FROM {schema}.serving"))
        row = cur.fetchone()
        logger.info("postgres: version %d was already switched in (%s)", publish_id, status)
        return SwitchOutcome(served=row is not None and row[0] == publish_id)

    def record_canary_users(self, user_ids: np.ndarray, model_version: int) -> int:
        """Record which users of the staged version the canary model served."""
        version = self._require_version()
        buffer = io.StringIO("".join(f"{version.publish_id}\t{int(user)}\t{model_version}\n"
                                     for user in user_ids))
        with cursor(self.engine) as cur:
            cur.copy_expert(composed(cur,
                    "COPY {schema}.canary_users (publish_id, user_id, model_version)"
                    " FROM STDIN"), buffer)
        logger.info("postgres: %d users of version %d get canary model %d",
                    len(user_ids), version.publish_id, model_version)
        return len(user_ids)

    def rollback(self, changed_by: str, reason: str, to: int | None = None,
                 before_switch: Callable[[int], None] | None = None,
                 in_transaction: Callable[[Connection, Rollback], None] | None = None
                 ) -> Rollback:
        """Serve the version served before the current one (or ``to``), in one transaction.

        The current version is marked rolled back (kept for inspection until it
        leaves the kept window). ``Rollback.rolled_back_models`` are the models
        the current version used (its model, or its canary's) and the restored
        one does not. ``before_switch(publish_id)`` may refuse the target by
        raising; then nothing changes. ``in_transaction(conn, rollback)`` runs
        last in the same transaction, for what must change with the switch
        (the registry's statuses); if it raises, nothing changes.
        """
        with self.engine.begin() as conn:
            conn.execute(statement(conn, "LOCK TABLE {schema}.serving IN EXCLUSIVE MODE"))
            current = conn.execute(statement(conn,
                "SELECT v.publish_id, v.model_version, v.canary_model_version"
                " FROM {schema}.serving s JOIN {schema}.prediction_versions v"
                " USING (publish_id)")).first()
            if current is None:
                raise RollbackError("nothing is served yet: there is nothing to roll back")
            target = conn.execute(statement(conn,
                "SELECT v.publish_id, v.model_version, v.canary_model_version"
                " FROM {schema}.prediction_versions v"
                " WHERE v.publish_id <> :current AND (v.status = 'published'"
                "  OR (v.status = 'superseded' AND NOT EXISTS (SELECT 1"
                "   FROM {schema}.prediction_versions o WHERE o.logical_date = v.logical_date"
                "   AND o.status = 'published' AND o.publish_id <> :current)))"
                " AND (v.publish_id = :to OR (CAST(:to AS bigint) IS NULL AND v.publish_id IN"
                "  (SELECT h.publish_id FROM {schema}.serving_history h)))"
                " ORDER BY (SELECT max(h.switched_at) FROM {schema}.serving_history h"
                "  WHERE h.publish_id = v.publish_id) DESC NULLS LAST, v.publish_id DESC"
                " LIMIT 1"), {"current": current.publish_id, "to": to}).first()
            if target is None:
                raise RollbackError(
                    f"version {to} is not a kept published version" if to is not None else
                    f"no earlier published version is kept to go back to from version "
                    f"{current.publish_id}")
            if before_switch is not None:
                before_switch(target.publish_id)
            conn.execute(statement(conn,
                "UPDATE {schema}.prediction_versions SET status = 'rolled_back'"
                " WHERE publish_id = :id"), {"id": current.publish_id})
            conn.execute(statement(conn,
                "UPDATE {schema}.prediction_versions SET status = 'published'"
                " WHERE publish_id = :id"), {"id": target.publish_id})
            conn.execute(statement(conn,
                "UPDATE {schema}.serving SET publish_id = :id, switched_at = now()"),
                {"id": target.publish_id})
            record_switch(conn.connection.cursor(), target.publish_id, current.publish_id,
                          "rollback", reason, changed_by)
            # Models the current version used and the restored one does not.
            bad_models = sorted({current.model_version, current.canary_model_version}
                                - {target.model_version, target.canary_model_version, None})
            done = Rollback(rolled_back=current.publish_id, restored=target.publish_id,
                            rolled_back_models=bad_models, restored_model=target.model_version)
            if in_transaction is not None:
                in_transaction(conn, done)
        logger.info("postgres: version %d rolled back; version %d served again",
                    current.publish_id, target.publish_id)
        return done

    def abort(self) -> None:
        """Drop the staged table and mark the version failed."""
        if self.version is not None:
            self.discard(self.version.publish_id)

    def discard(self, publish_id: int) -> bool:
        """Drop a version that is still staged and mark it failed.

        A version that was already switched in is left alone; returns whether
        anything was discarded.
        """
        def drop(cur: Any) -> bool:
            cur.execute(composed(cur, "SELECT status FROM {schema}.prediction_versions"
                        " WHERE publish_id = %s FOR UPDATE"), (publish_id,))
            row = cur.fetchone()
            if row is None or row[0] != "staged":
                return False
            self._drop_table(cur, publish_id)
            cur.execute(composed(cur, "UPDATE {schema}.prediction_versions SET status = 'failed'"
                        " WHERE publish_id = %s"), (publish_id,))
            self._delete_version_rows(cur, publish_id)
            return True

        discarded = self._with_lock_retries(f"discarding version {publish_id}", drop)
        if discarded:
            logger.info("postgres: staged version %d discarded", publish_id)
        return discarded

    def cleanup(self) -> list[int]:
        """Drop versions beyond the kept count: the newest ``keep_versions`` published
        ones besides the served one are kept, and as many superseded, shadow and
        rolled-back ones (a superseded version may still be rolled back to).

        The caller holds the publish lock. When a partition's lock stays taken
        (a long BI query reads the table), it and the rest are left for the
        next cleanup; the ones dropped are returned.
        """
        with self.engine.connect() as conn:
            doomed = list(conn.execute(
                statement(conn, "SELECT publish_id FROM {schema}.prediction_versions v"
                    " WHERE (v.status = 'published'"
                    "  AND v.publish_id <> (SELECT publish_id FROM {schema}.serving)"
                    "  AND v.publish_id NOT IN (SELECT kept.publish_id"
                    "   FROM {schema}.prediction_versions kept WHERE kept.status = 'published'"
                    "   ORDER BY kept.logical_date DESC LIMIT :keep))"
                    " OR (v.status IN ('superseded', 'shadow', 'rolled_back')"
                    "  AND v.publish_id NOT IN (SELECT kept.publish_id"
                    "   FROM {schema}.prediction_versions kept WHERE kept.status = v.status"
                    "   ORDER BY kept.publish_id DESC LIMIT :aside))"
                    " ORDER BY publish_id"),
                {"keep": self.keep_versions + 1, "aside": self.keep_versions},
            ).scalars())
        dropped = []
        for publish_id in doomed:
            try:
                self._with_lock_retries(f"dropping version {publish_id}",
                                        lambda cur, publish_id=publish_id:
                                        self._drop(cur, publish_id))
            except LockTimeoutError as err:
                # The rest would wait for the same long query.
                logger.warning("postgres: %s; the next cleanup tries again", err)
                break
            dropped.append(publish_id)
        if dropped:
            logger.info("postgres: dropped versions %s", dropped)
        return dropped

    def drop_table(self, publish_id: int) -> None:
        """Drop a version's table that is not attached (a crash left it behind)."""
        self._with_lock_retries(
            f"dropping table {partition_name(publish_id)}",
            lambda cur: self._drop_table(cur, publish_id))

    @classmethod
    def _drop(cls, cur: Any, publish_id: int) -> None:
        cls._drop_table(cur, publish_id)
        cur.execute(
            composed(cur, "UPDATE {schema}.prediction_versions SET status = 'dropped',"
            " dropped_at = now() WHERE publish_id = %s"), (publish_id,),
        )
        cls._delete_version_rows(cur, publish_id)

    def _with_lock_retries(self, what: str, work: Callable[[Any], T]) -> T:
        """Run ``work(cursor)`` in one transaction whose lock waits are bounded by
        :attr:`lock_timeout_ms`, again with backoff while a lock is not granted."""
        delay = 0.2
        for attempt in range(1, self.lock_attempts + 1):
            try:
                with cursor(self.engine) as cur:
                    cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(f"{int(self.lock_timeout_ms)}ms")))
                    return work(cur)
            except errors.LockNotAvailable:
                if attempt == self.lock_attempts:
                    break
                logger.info("postgres: %s waits for a lock (attempt %d of %d)", what, attempt,
                            self.lock_attempts)
                time.sleep(delay)
                delay *= 2
        raise LockTimeoutError(
            f"{what}: a lock on {names_of(self.engine).schema}.prediction_lists stayed taken "
            f"through "
            f"{self.lock_attempts} tries of {self.lock_timeout_ms} ms (a long query holds it; "
            "see pg_stat_activity)")

    @staticmethod
    def _delete_version_rows(cur: Any, publish_id: int) -> None:
        """Delete what other tables hold of a version: its fallback list, its canary's
        users and its per-item counts."""
        for table in VERSION_ROW_TABLES:
            cur.execute(composed(cur, "DELETE FROM {schema}.{table} WHERE publish_id = %s",
                                 table=sql.Identifier(table)), (publish_id,))

    @staticmethod
    def _drop_table(cur: Any, publish_id: int) -> None:
        """Detach a version's table if it is a partition, then drop it."""
        cur.execute(composed(cur, "SELECT {schema}.drop_version_table(%s)"), (publish_id,))

    @staticmethod
    def _is_partition(cur: Any, publish_id: int) -> bool:
        cur.execute(composed(cur, "SELECT c.relispartition FROM pg_class c JOIN pg_namespace n"
                    " ON n.oid = c.relnamespace WHERE n.nspname = {schema_name}"
                    " AND c.relname = %s"), (partition_name(publish_id),))
        row = cur.fetchone()
        return row is not None and bool(row[0])

    def _require_version(self) -> PublishVersion:
        if self.version is None:
            raise RuntimeError("prepare() a version before writing or switching it")
        return self.version

    def _call(self, function: str, publish_id: int) -> None:
        """Run one of the publisher's DDL functions (``sql/009_roles.sql``): the writer
        role may create, index, attach and drop version tables only through them."""
        with cursor(self.engine) as cur:
            cur.execute(composed(cur, "SELECT {schema}.{function}(%s)",
                                 function=sql.Identifier(function)), (publish_id,))
