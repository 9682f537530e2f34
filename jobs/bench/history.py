"""Reading the interactions for a nightly: the interaction history's Parquet days, against
what releases before it did, a CSV export of the whole table parsed again by Spark.

Both sides end in the same DataFrame (``user_id, item_id, rating, event_at`` up to the
end of the run date) written to Spark's no-op sink, on the same events in the same
PostgreSQL. Ours includes its sync, which finds nothing to write on a night whose days
are already written; writing the whole history once (as after the upgrade) is timed
apart and reported in the note.
"""

from __future__ import annotations

import io
import shutil
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from jobs.bench.results import Pair
from jobs.data import history
from jobs.data.store import day_end
from jobs.platform.db import composed, cursor, upgrade
from jobs.publish.copy_binary import COPY_HEADER, COPY_TRAILER

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

RUN_DATE = date(2000, 1, 1)
DAYS = 90
USERS_PER_EVENT = 20  # one user per 20 events
ITEMS = 20_000
CHUNK_EVENTS = 5_000_000
TURNS = 3
POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def load_events(engine: Engine, events: int, seed: int = 11) -> None:
    """``events`` synthetic events over the ``DAYS`` days up to ``RUN_DATE``, in binary COPY.

    The table's indexes are dropped for the load and built again after it, as a bulk
    load is done: inserted into one by one, the user index alone (random user ids)
    slows a 100,000,000-event load from minutes to hours. Not timed by the pair."""
    rng = np.random.default_rng(seed)
    end_us = int((day_end(RUN_DATE) - POSTGRES_EPOCH).total_seconds() * 1_000_000)
    with cursor(engine) as cur:
        cur.execute(composed(cur, "TRUNCATE {schema}.interactions"))
        cur.execute(composed(cur, "DELETE FROM {schema}.history_days"))
        cur.execute(composed(
            cur, "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)"
                 " FROM pg_index AS i"
                 " WHERE i.indrelid = ({schema_name} || '.interactions')::regclass"
                 "  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c"
                 "                  WHERE c.conindid = i.indexrelid)"))
        indexes = cur.fetchall()
        for name, _ in indexes:
            cur.execute(f"DROP INDEX {name}")  # regclass text: already quoted as needed
        for start in range(0, events, CHUNK_EVENTS):
            n = min(CHUNK_EVENTS, events - start)
            copy_events(cur, rng.integers(1, max(2, events // USERS_PER_EVENT), n),
                        rng.integers(1, ITEMS + 1, n), rng.integers(1, 6, n),
                        end_us - rng.integers(1, DAYS * 86_400 * 1_000_000, n))
        for _, definition in indexes:
            cur.execute(definition)
        cur.execute(composed(cur, "ANALYZE {schema}.interactions"))


def copy_events(cur: Any, user_ids: np.ndarray, item_ids: np.ndarray, ratings: np.ndarray,
                event_at_us: np.ndarray) -> None:
    """Events appended to ``batchscore.interactions`` in one binary ``COPY`` on ``cur``;
    ``event_at_us`` counts microseconds from 2000-01-01 UTC, as PostgreSQL does."""
    rows = np.empty(len(user_ids), dtype=history.COPY_ROW)
    rows["fields"] = 4
    for name, values in (("user_id", user_ids), ("item_id", item_ids), ("rating", ratings),
                         ("event_at", event_at_us)):
        rows[f"{name}_size"] = 8
        rows[name] = values
    cur.copy_expert(composed(cur, "COPY {schema}.interactions (user_id, item_id, rating, event_at)"
                    " FROM STDIN WITH (FORMAT binary)"),
                    io.BytesIO(COPY_HEADER + rows.tobytes() + COPY_TRAILER))


def ours(spark: SparkSession, engine: Engine, root: str) -> float:
    start = time.perf_counter()
    history.sync(engine, root)
    history.read_events(spark, root, RUN_DATE).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def export_and_parse(spark: SparkSession, engine: Engine, work: Path) -> float:
    """What the nightly did before the history: the whole table to CSV, parsed by Spark."""
    from pyspark.sql import functions as F

    from jobs.scoring.transforms import INTERACTIONS_SCHEMA

    path = work / "interactions.csv"
    start = time.perf_counter()
    with cursor(engine) as cur, path.open("w", encoding="utf-8") as out:
        cur.copy_expert(
            cur.mogrify(composed(
                cur, "COPY (SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
                " FROM {schema}.interactions WHERE event_at < %s) TO STDOUT WITH (FORMAT csv)"),
                (day_end(RUN_DATE),)), out)
    (spark.read.csv(str(path), schema=INTERACTIONS_SCHEMA, header=False, mode="FAILFAST")
     .where(F.col("event_at") < F.lit(int(day_end(RUN_DATE).timestamp())))
     .write.format("noop").mode("overwrite").save())
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def history_pair(spark: SparkSession, engine: Engine, work: Path, events: int) -> Pair:
    upgrade(engine)
    root = str(work / "history")
    load_start = time.perf_counter()
    load_events(engine, events)
    loaded = time.perf_counter() - load_start
    first_start = time.perf_counter()
    history.sync(engine, root)
    first = time.perf_counter() - first_start
    timings: dict[str, list[float]] = {"ours": [], "peer": []}
    try:
        for turn in range(1, TURNS + 1):
            timings["ours"].append(ours(spark, engine, root))
            timings["peer"].append(export_and_parse(spark, engine, work))
            print(f"  turn {turn}/{TURNS}: history {timings['ours'][-1]:.1f}s, export and "
                  f"parse {timings['peer'][-1]:.1f}s", flush=True)
    finally:
        with cursor(engine) as cur:
            cur.execute(composed(cur, "TRUNCATE {schema}.interactions"))
            cur.execute(composed(cur, "DELETE FROM {schema}.history_days"))
        shutil.rmtree(root, ignore_errors=True)
    mine, peer = (statistics.median(timings[side]) for side in ("ours", "peer"))
    return Pair.of("reading a nightly's interactions vs CSV export and parse", mine, peer, "s",
                   higher_is_better=False, target=5,
                   peer_name="COPY of the whole table to CSV, then spark.read.csv",
                   note=f"{events:,} events over {DAYS} days; medians of {TURNS} turns; "
                        f"loading them took {loaded:.0f}s, writing the whole history once "
                        f"{first:.0f}s")
