"""Writing and reading the interactions table in bulk."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from jobs.platform.db import composed, cursor, statement
from jobs.platform.progress import progress

if TYPE_CHECKING:
    from psycopg2.sql import Composable

logger = logging.getLogger(__name__)

# A template (:meth:`jobs.platform.names.Names.compose`).
COPY_INTERACTIONS = (
    "COPY {schema}.interactions (user_id, item_id, rating, event_at) FROM STDIN WITH (FORMAT csv)"
)


def epoch_to_sql(seconds: int) -> str:
    """A Unix time as a timestamptz literal that COPY accepts."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def copy_interactions(
    engine: Engine, rows_csv: IO[str], *, replace: bool = False, rows: int | None = None
) -> int:
    """Load CSV rows ``user_id,item_id,rating,event_at`` in one transaction.

    With ``replace`` the table is emptied first, in the same transaction, so
    readers see either the old contents or the new ones. Returns the row count.
    ``rows``, when the caller knows it, is the total the progress bar counts to.
    """
    with cursor(engine) as cur:
        if replace:
            cur.execute(composed(cur, "TRUNCATE {schema}.interactions"))
        count = copy_with_progress(cur, COPY_INTERACTIONS, rows_csv, "loading interactions",
                                   rows)
    logger.info("loaded %d interaction rows", count)
    return count


class CountingReader:
    """The file a COPY reads from, telling ``report`` how many lines it has handed over.

    One line is one row: the rows batchscore copies never quote a line end.
    """

    def __init__(self, source: IO[str], report: Callable[[int], None]) -> None:
        self.source, self.report = source, report
        self.lines = 0

    def read(self, size: int = -1) -> str:
        return self._counted(self.source.read(size))

    def readline(self, size: int = -1) -> str:
        return self._counted(self.source.readline(size))

    def _counted(self, chunk: str) -> str:
        self.lines += chunk.count("\n")
        self.report(self.lines)
        return chunk


def copy_with_progress(cur: Any, template: str, rows_csv: IO[str], description: str,
                       rows: int | None, **fields: Composable) -> int:
    """``COPY ... FROM STDIN`` on ``cur`` from ``rows_csv``, showing the rows sent of
    ``rows`` (None: unknown); the rows the server copied. ``template`` names the table
    with the deployment's fields and ``fields`` (:func:`jobs.platform.db.composed`)."""
    with progress(description, rows, "rows", verb="sent") as sent:
        cur.copy_expert(composed(cur, template, **fields), CountingReader(rows_csv, sent))
    return cur.rowcount


def rows_to_csv(rows: Iterable[tuple[int, int, float, int]], out: IO[str]) -> int:
    """Write ``(user_id, item_id, rating, unix_seconds)`` rows as COPY CSV."""
    writer = csv.writer(out, lineterminator="\n")
    count = 0
    for user_id, item_id, rating, seconds in rows:
        writer.writerow((user_id, item_id, repr(float(rating)), epoch_to_sql(seconds)))
        count += 1
    return count


def day_end(day: date) -> datetime:
    """The first instant after ``day`` (UTC): events before it belong to runs of ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def newest_event_date(engine: Engine) -> date | None:
    """The day (UTC) of the newest interaction, or None when there is none."""
    with engine.connect() as conn:
        newest = conn.execute(statement(conn, "SELECT max(event_at) FROM {schema}.interactions")
                              ).scalar()
    return newest.astimezone(UTC).date() if newest is not None else None
