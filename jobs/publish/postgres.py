"""Publishing predictions to PostgreSQL.

A version is loaded with COPY into its own table, indexed, then attached as a
partition of ``batchscore.predictions`` and made the served version by one
UPDATE of ``batchscore.serving`` in the same transaction. A query of the BI
views therefore sees the previous complete version or the new complete one.
"""

from __future__ import annotations

import io
import logging
from datetime import date

import pyarrow as pa
import sqlalchemy as sa
from psycopg2 import sql
from sqlalchemy.engine import Engine

from jobs.db import cursor
from jobs.publish import PublishVersion, SwitchOutcome
from jobs.publish.copy_binary import copy_rows_binary

logger = logging.getLogger(__name__)

# Published versions kept besides the served one, for history and rollback.
DEFAULT_KEEP_VERSIONS = 7
# How much of a COPY buffer is handed to the server per call.
COPY_CHUNK_BYTES = 1 << 20


def partition_name(publish_id: int) -> str:
    return f"predictions_p{int(publish_id)}"


class PostgresPublisher:
    def __init__(self, engine: Engine, keep_versions: int = DEFAULT_KEEP_VERSIONS) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, got {keep_versions}")
        self.engine = engine
        self.keep_versions = keep_versions
        self.version: PublishVersion | None = None
        self.users = 0
        self.rows = 0

    def allocate(self, run_id: str, model_version: int, logical_date: date,
                 k: int) -> PublishVersion:
        """Reserve a publish id for a run; nothing is visible to readers yet."""
        with self.engine.begin() as conn:
            publish_id = conn.execute(
                sa.text(
                    "INSERT INTO batchscore.prediction_versions"
                    " (run_id, model_version, logical_date, k, status)"
                    " VALUES (:run_id, :model_version, :logical_date, :k, 'staged')"
                    " RETURNING publish_id"
                ),
                {"run_id": run_id, "model_version": model_version,
                 "logical_date": logical_date, "k": k},
            ).scalar_one()
        return PublishVersion(publish_id=publish_id, run_id=run_id, model_version=model_version,
                              logical_date=logical_date, k=k)

    def prepare(self, version: PublishVersion) -> None:
        self.version = version
        self._execute(sql.SQL(
            "CREATE TABLE batchscore.{} (LIKE batchscore.predictions INCLUDING ALL)"
        ).format(sql.Identifier(partition_name(version.publish_id))))

    def write(self, block: pa.RecordBatch) -> int:
        """COPY one block of (user_id, items, scores) rows as one row per rank.

        The block is encoded in COPY's binary format with numpy, in one buffer.
        """
        version = self._require_version()
        payload = copy_rows_binary(version.publish_id, block)
        with cursor(self.engine) as cur:
            cur.copy_expert(
                sql.SQL("COPY batchscore.{} (publish_id, user_id, rank, item_id, score)"
                        " FROM STDIN WITH (FORMAT binary)").format(
                    sql.Identifier(partition_name(version.publish_id))
                ).as_string(cur),
                io.BytesIO(payload.data), size=COPY_CHUNK_BYTES,
            )
        self.users += block.num_rows
        self.rows += payload.rows
        return payload.rows

    def write_fallback(self, popular: pa.Table) -> None:
        version = self._require_version()
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO batchscore.popular_items (publish_id, rank, item_id, score)"
                        " VALUES (:publish_id, :rank, :item_id, :score)"),
                [{"publish_id": version.publish_id, "rank": int(rank), "item_id": int(item),
                  "score": float(score)}
                 for rank, item, score in zip(popular.column("rank").to_pylist(),
                                              popular.column("item_id").to_pylist(),
                                              popular.column("score").to_pylist(), strict=True)],
            )

    def switch(self, force_serve: bool = False) -> SwitchOutcome:
        """Attach the staged version and serve it unless a later date is served.

        A version for a date that already has one replaces it (the old one is
        marked superseded and dropped by :meth:`cleanup`). ``force_serve``
        serves it even when a later date is being served.
        """
        version = self._require_version()
        table = sql.Identifier(partition_name(version.publish_id))
        self._execute(sql.SQL(
            "CREATE INDEX ON batchscore.{} (user_id, rank)"
        ).format(table))
        self._execute(sql.SQL(
            "ALTER TABLE batchscore.{} ADD CHECK (publish_id = {})"
        ).format(table, sql.Literal(version.publish_id)))
        self._execute(sql.SQL("ANALYZE batchscore.{}").format(table))
        with cursor(self.engine) as cur:
            # One publisher switches at a time.
            cur.execute("LOCK TABLE batchscore.serving IN EXCLUSIVE MODE")
            cur.execute(sql.SQL(
                "ALTER TABLE batchscore.predictions ATTACH PARTITION batchscore.{}"
                " FOR VALUES IN ({})"
            ).format(table, sql.Literal(version.publish_id)))
            cur.execute(
                "UPDATE batchscore.prediction_versions SET status = 'superseded'"
                " WHERE logical_date = %s AND status = 'published' RETURNING publish_id",
                (version.logical_date,),
            )
            superseded = [row[0] for row in cur.fetchall()]
            cur.execute(
                "UPDATE batchscore.prediction_versions SET status = 'published',"
                " published_at = now(), users = %s, rows = %s WHERE publish_id = %s",
                (self.users, self.rows, version.publish_id),
            )
            cur.execute(
                "SELECT s.publish_id, v.logical_date FROM batchscore.serving s"
                " JOIN batchscore.prediction_versions v USING (publish_id)"
            )
            current = cur.fetchone()
            served = force_serve or current is None or version.logical_date >= current[1]
            if served:
                cur.execute(
                    "INSERT INTO batchscore.serving (only_row, publish_id) VALUES (true, %s)"
                    " ON CONFLICT (only_row) DO UPDATE"
                    " SET publish_id = EXCLUDED.publish_id, switched_at = now()",
                    (version.publish_id,),
                )
        outcome = SwitchOutcome(
            served=served,
            previous_served=current[0] if current is not None else None,
            superseded=superseded,
        )
        logger.info("postgres: version %d published (%d users, %d rows)%s",
                    version.publish_id, self.users, self.rows,
                    ", now served" if served else ", not served (a later date is served)")
        return outcome

    def abort(self) -> None:
        """Drop the staged table and mark the version failed."""
        if self.version is not None:
            self.discard(self.version.publish_id)

    def discard(self, publish_id: int) -> bool:
        """Drop a version that is still staged and mark it failed.

        A version that was already switched in is left alone; returns whether
        anything was discarded.
        """
        with cursor(self.engine) as cur:
            cur.execute("SELECT status FROM batchscore.prediction_versions"
                        " WHERE publish_id = %s FOR UPDATE", (publish_id,))
            row = cur.fetchone()
            if row is None or row[0] != "staged":
                return False
            cur.execute(sql.SQL("DROP TABLE IF EXISTS batchscore.{}").format(
                sql.Identifier(partition_name(publish_id))))
            cur.execute("UPDATE batchscore.prediction_versions SET status = 'failed'"
                        " WHERE publish_id = %s", (publish_id,))
            cur.execute("DELETE FROM batchscore.popular_items WHERE publish_id = %s",
                        (publish_id,))
        logger.info("postgres: staged version %d discarded", publish_id)
        return True

    def cleanup(self) -> list[int]:
        """Drop superseded versions and published ones beyond the kept count."""
        with self.engine.connect() as conn:
            doomed = list(conn.execute(
                sa.text(
                    "SELECT publish_id FROM batchscore.prediction_versions v"
                    " WHERE v.status = 'superseded' OR (v.status = 'published'"
                    "  AND v.publish_id <> (SELECT publish_id FROM batchscore.serving)"
                    "  AND v.publish_id NOT IN (SELECT kept.publish_id"
                    "   FROM batchscore.prediction_versions kept WHERE kept.status = 'published'"
                    "   ORDER BY kept.logical_date DESC LIMIT :keep))"
                ),
                {"keep": self.keep_versions + 1},
            ).scalars())
        for publish_id in doomed:
            table = sql.Identifier(partition_name(publish_id))
            with cursor(self.engine) as cur:
                cur.execute(sql.SQL(
                    "ALTER TABLE batchscore.predictions DETACH PARTITION batchscore.{}"
                ).format(table))
                cur.execute(sql.SQL("DROP TABLE batchscore.{}").format(table))
                cur.execute(
                    "UPDATE batchscore.prediction_versions SET status = 'dropped',"
                    " dropped_at = now() WHERE publish_id = %s", (publish_id,),
                )
                cur.execute("DELETE FROM batchscore.popular_items WHERE publish_id = %s",
                            (publish_id,))
        if doomed:
            logger.info("postgres: dropped versions %s", doomed)
        return doomed

    def _require_version(self) -> PublishVersion:
        if self.version is None:
            raise RuntimeError("prepare() a version before writing or switching it")
        return self.version

    def _execute(self, statement: sql.Composable) -> None:
        with cursor(self.engine) as cur:
            cur.execute(statement)
