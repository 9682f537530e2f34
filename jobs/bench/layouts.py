"""PostgreSQL's two layouts of a version side by side: one row per (user, rank), as
releases before migration 011 stored it, and one row per user with arrays, as
batchscore stores it now.

Both are loaded with binary ``COPY`` from the same synthetic lists on one
connection each, in turns (rows, lists, rows, lists, ...), one version per
turn, each version a partition of its layout's table, then indexed as the
publisher indexes it. Then BI's queries are timed on each: one user's list
(through the row-per-rank shape BI reads, ``bi.recommendations``), the most
recommended items, and one user's lists across the kept versions; and one user's
list as arrays (``bi.recommendation_lists``, or ``array_agg`` over the rows). Medians
over the turns; a query's p50 and p99 over many random users.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg2
import pyarrow as pa

from jobs.publish.copy_binary import COPY_HEADER, COPY_TRAILER, copy_lists_binary

BLOCK_USERS = 10_000
SCHEMA = "bench_layouts"

# The previous release's row: (publish_id, user_id, rank, item_id, score).
RANK_ROW = np.dtype([
    ("fields", ">i2"),
    ("publish_id_size", ">i4"), ("publish_id", ">i8"),
    ("user_id_size", ">i4"), ("user_id", ">i8"),
    ("rank_size", ">i4"), ("rank", ">i2"),
    ("item_id_size", ">i4"), ("item_id", ">i8"),
    ("score_size", ">i4"), ("score", ">f4"),
])


def copy_ranks_binary(publish_id: int, block: pa.RecordBatch) -> bytes:
    """A binary COPY stream of a block's lists as one row per (user, rank), all lists of
    the same length ``k`` (the synthetic lists are)."""
    users = block.column("user_id").to_numpy()
    items = block.column("items").flatten().to_numpy()
    scores = block.column("scores").flatten().to_numpy()
    k = len(items) // len(users)
    rows = np.empty(len(items), dtype=RANK_ROW)
    rows["fields"] = 5
    for name in ("publish_id", "user_id", "rank", "item_id", "score"):
        rows[f"{name}_size"] = RANK_ROW[name].itemsize
    rows["publish_id"] = publish_id
    rows["user_id"] = np.repeat(users, k)
    rows["rank"] = np.tile(np.arange(1, k + 1), len(users))
    rows["item_id"], rows["score"] = items, scores
    return COPY_HEADER + rows.tobytes() + COPY_TRAILER


LAYOUTS: dict[str, dict[str, Any]] = {
    "row per rank (before 011)": {
        "table": "ranks",
        "columns": "publish_id bigint NOT NULL, user_id bigint NOT NULL,"
                   " rank smallint NOT NULL, item_id bigint NOT NULL, score real NOT NULL",
        "copy": "(publish_id, user_id, rank, item_id, score)",
        "encode": copy_ranks_binary,
        "index": "(user_id, rank)",
        "one_user": "SELECT rank, item_id, score FROM {schema}.ranks"
                    " WHERE publish_id = %(p)s AND user_id = %(u)s ORDER BY rank",
        "one_list": "SELECT array_agg(item_id ORDER BY rank), array_agg(score ORDER BY rank)"
                    " FROM {schema}.ranks WHERE publish_id = %(p)s AND user_id = %(u)s",
        "top_items": "SELECT item_id, count(*) FROM {schema}.ranks WHERE publish_id = %(p)s"
                     " GROUP BY item_id ORDER BY 2 DESC LIMIT 20",
        "across_versions": "SELECT publish_id, array_agg(item_id ORDER BY rank)"
                           " FROM {schema}.ranks WHERE user_id = %(u)s AND rank <= 5"
                           " GROUP BY publish_id ORDER BY publish_id",
    },
    "row per user (now)": {
        "table": "lists",
        "columns": "publish_id bigint NOT NULL, user_id bigint NOT NULL,"
                   " item_ids integer[] NOT NULL, scores real[] NOT NULL",
        "copy": "(publish_id, user_id, item_ids, scores)",
        "encode": lambda publish_id, block: copy_lists_binary(publish_id, block).data,
        "index": "(user_id)",
        # What bi.recommendations does with the stored row: unnest it by rank.
        "one_user": "SELECT e.rank, e.item_id, e.score FROM {schema}.lists l"
                    " CROSS JOIN LATERAL unnest(l.item_ids, l.scores) WITH ORDINALITY"
                    " AS e (item_id, score, rank)"
                    " WHERE l.publish_id = %(p)s AND l.user_id = %(u)s ORDER BY e.rank",
        # What bi.recommendation_lists gives: the stored row.
        "one_list": "SELECT item_ids, scores FROM {schema}.lists"
                    " WHERE publish_id = %(p)s AND user_id = %(u)s",
        "top_items": "SELECT item_id, count(*) FROM {schema}.lists l,"
                     " unnest(l.item_ids) AS item_id WHERE l.publish_id = %(p)s"
                     " GROUP BY item_id ORDER BY 2 DESC LIMIT 20",
        "across_versions": "SELECT publish_id, item_ids[1:5] FROM {schema}.lists"
                           " WHERE user_id = %(u)s ORDER BY publish_id",
    },
}


def synthetic_blocks(users: int, items: int, k: int, seed: int) -> Iterator[pa.RecordBatch]:
    """``users`` lists of ``k`` distinct-enough item ids with falling scores."""
    rng = np.random.default_rng(seed)
    for start in range(0, users, BLOCK_USERS):
        n = min(BLOCK_USERS, users - start)
        item_ids = rng.integers(1, items + 1, size=(n, k), dtype=np.int64)
        scores = np.sort(rng.random((n, k), dtype=np.float32), axis=1)[:, ::-1]
        offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
        yield pa.RecordBatch.from_arrays([
            pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)),
            pa.ListArray.from_arrays(offsets, pa.array(item_ids.ravel())),
            pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(scores).ravel())),
        ], names=["user_id", "items", "scores"])


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def latencies_ms(cur: Any, query: str, params: list[dict[str, int]]) -> tuple[float, float]:
    took = []
    for values in params:
        start = time.perf_counter()
        cur.execute(query, values)
        cur.fetchall()
        took.append(time.perf_counter() - start)
    p50, p99 = np.percentile(took, [50, 99]) * 1000
    return float(p50), float(p99)


def compare_layouts(database_url: str, users: int, items: int, k: int, versions: int = 3,
                    queries: int = 1000) -> dict[str, dict[str, float]]:
    """Load ``versions`` versions of ``users`` lists in each layout, in turns; time the
    loads, the indexes and BI's queries; measure the size per version. Everything is made
    in schema ``bench_layouts`` and dropped at the end."""
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    results: dict[str, dict[str, list[float]]] = {name: {} for name in LAYOUTS}
    try:
        with connection.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            cur.execute(f"CREATE SCHEMA {SCHEMA}")
            for layout in LAYOUTS.values():
                cur.execute(f"CREATE TABLE {SCHEMA}.{layout['table']} ({layout['columns']})"
                            " PARTITION BY LIST (publish_id)")
            for version in range(1, versions + 1):
                for name, layout in LAYOUTS.items():
                    print(f"  version {version}, {name} ...", flush=True)
                    found = results[name]
                    part = f"{SCHEMA}.{layout['table']}_p{version}"
                    cur.execute(f"CREATE TABLE {part} (LIKE {SCHEMA}.{layout['table']})")

                    def load(layout=layout, part=part, version=version) -> None:
                        for block in synthetic_blocks(users, items, k, seed=version):
                            cur.copy_expert(
                                f"COPY {part} {layout['copy']} FROM STDIN WITH (FORMAT binary)",
                                io.BytesIO(layout["encode"](version, block)))

                    found.setdefault("load_s", []).append(timed(load))
                    found.setdefault("index_s", []).append(timed(lambda part=part, layout=layout: (
                        cur.execute(f"CREATE INDEX ON {part} {layout['index']}"),
                        cur.execute(f"ANALYZE {part}"))))
                    cur.execute(f"ALTER TABLE {SCHEMA}.{layout['table']} ATTACH PARTITION"
                                f" {part} FOR VALUES IN ({version})")
                    cur.execute("SELECT pg_total_relation_size(%s)", (part,))
                    found.setdefault("bytes_per_user", []).append(cur.fetchone()[0] / users)
            rng = np.random.default_rng(7)
            chosen = [{"p": versions, "u": int(user)}
                      for user in rng.integers(1, users + 1, size=queries)]
            for _turn in range(3):
                for name, layout in LAYOUTS.items():
                    found = results[name]
                    for query in ("one_user", "one_list", "across_versions"):
                        p50, p99 = latencies_ms(cur, layout[query].format(schema=SCHEMA),
                                                chosen)
                        found.setdefault(f"{query}_p50_ms", []).append(p50)
                        found.setdefault(f"{query}_p99_ms", []).append(p99)
                    found.setdefault("top_items_s", []).append(timed(lambda layout=layout: (
                        cur.execute(layout["top_items"].format(schema=SCHEMA),
                                    {"p": versions}), cur.fetchall())))
    finally:
        with connection.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        connection.close()
    return {name: {measure: statistics.median(values) for measure, values in found.items()}
            for name, found in results.items()}


def print_layouts(report: dict[str, dict[str, float]], users: int, k: int) -> None:
    names = list(report)
    print(f"\nPostgreSQL layouts, {users:,} users x K = {k}, medians:")
    print(f"  {'':34}" + "".join(f"{name:>28}" for name in names))
    for measure in report[names[0]]:
        print(f"  {measure:34}" + "".join(f"{report[name][measure]:>28.3f}" for name in names))
    old, new = (report[name] for name in names)
    speedup = (old["load_s"] + old["index_s"]) / (new["load_s"] + new["index_s"])
    print(f"  load + index {speedup:.1f}x faster; size per version "
          f"{old['bytes_per_user'] / new['bytes_per_user']:.1f}x smaller; one user's list "
          f"p50 {new['one_user_p50_ms'] / old['one_user_p50_ms']:.2f}x of before")
