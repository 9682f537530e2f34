"""A small history for the run report's tests: three nightly runs really published to
PostgreSQL and Redis, with the metrics the monitor step records inserted by hand."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jobs.contracts.redis import Keyspace
from jobs.lifecycle.registry import NewModel, register
from jobs.platform import runs
from jobs.publish.postgres import PostgresPublisher
from jobs.publish.protocol import publish_lock, switch
from jobs.publish.redis import RedisPublisher

DAYS = (date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20))
CATALOG_ITEMS = 8
POPULAR = pa.table({"rank": [1, 2], "item_id": [10, 11], "score": [9.0, 7.0]})
GATES = {"passed": True, "reason": "all gates passed",
         "checks": [{"name": "beats_popularity", "passed": True,
                     "detail": "NDCG 0.1200 vs popularity 0.0900"}]}
# Each day's lists: user -> [(item, score)].
LISTS = (
    {1: [(10, 0.9), (11, 0.5)], 2: [(10, 0.8), (12, 0.4)]},
    {1: [(10, 0.7), (11, 0.6)], 2: [(12, 0.9), (10, 0.3)], 3: [(11, 0.8), (10, 0.2)]},
    # The newest run: item 10 in 4 lists, 11 in 2, 12 and 13 in 1.
    {1: [(10, 1.0), (11, 0.5)], 2: [(10, 0.9), (12, 0.1)], 3: [(10, 0.6), (11, 0.4)],
     4: [(13, 0.8), (10, 0.7)]},
)
LEVELS = {"monitoring": {"levels": [
    {"metric": "input.item_popularity_psi", "segment": "vs_training", "direction": "above",
     "warn": 0.1, "retrain": 0.25},
    {"metric": "realized.ndcg_share", "direction": "below", "warn": 0.8, "retrain": 0.6},
    # Of a segment no run has: drawn nowhere.
    {"metric": "input.rows", "segment": "vs_nothing", "direction": "below", "warn": 10},
]}}


@dataclass(frozen=True)
class World:
    run_ids: tuple[str, ...]
    publish_ids: tuple[int, ...]
    model_version: int


def block(lists: dict[int, list[tuple[int, float]]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"user_id": list(lists), "items": [[i for i, _ in pairs] for pairs in lists.values()],
         "scores": [[s for _, s in pairs] for pairs in lists.values()]},
        schema=pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                          ("scores", pa.list_(pa.float32()))]))


def publish(engine: Engine, client: redis.Redis, model_version: int, day: date,
            lists: dict[int, list[tuple[int, float]]]) -> tuple[str, int]:
    """What a nightly's publish steps do, then the run recorded as a nightly records it."""
    run_id = runs.start(engine, "nightly", day, model_version)
    postgres = PostgresPublisher(engine)
    version = postgres.allocate(run_id, model_version, day, k=2)
    postgres.prepare(version)
    postgres.write(block(lists))
    postgres.write_fallback(POPULAR)
    postgres.finish_load()
    writer = RedisPublisher(client, Keyspace())
    writer.prepare(version)
    writer.write(block(lists))
    writer.write_fallback(POPULAR)
    writer.write_meta()
    with publish_lock(engine, "test"):
        switch(engine, client, Keyspace(), version.publish_id)
    rows = sum(len(pairs) for pairs in lists.values())
    runs.succeed(engine, run_id, {
        "k": 2, "publish_id": version.publish_id, "rows": rows, "served": True,
        "scored_users": len(lists), "input_rows": 100 * len(lists), "input_rejected": 1,
        # A catalogue of 8 items, of which the lists show these.
        "predictions_catalog_coverage": len({i for pairs in lists.values() for i, _ in pairs})
        / CATALOG_ITEMS, "predictions_listed_items": rows,
        "predictions_catalog_items": CATALOG_ITEMS,
        "data_docs": {"input": f"file:///docs/{run_id}/input.html",
                      "predictions": f"file:///docs/{run_id}/predictions.html"}})
    return run_id, version.publish_id


def build(engine: Engine, client: redis.Redis) -> World:
    """Three published nightly runs, each with input, prediction and realized metrics."""
    model = register(engine, NewModel(
        created_by="test", trained_as_of=date(2026, 11, 17), params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere",
        gates=GATES)).version
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO batchscore.items (item_id, title) VALUES"
                             " (10, 'Heat'), (11, 'Ran')"))
    published = [publish(engine, client, model, day, lists) for day, lists in zip(
        DAYS, LISTS, strict=True)]
    run_ids = tuple(run_id for run_id, _ in published)
    publish_ids = tuple(publish_id for _, publish_id in published)
    first = publish_ids[0]
    metrics = []
    for index, run_id in enumerate(run_ids):
        metrics += [
            (run_id, "input.rows", "", 1000.0 + 100 * index),
            (run_id, "input.item_popularity_psi", "vs_training", (0.05, 0.15, 0.2)[index]),
            (run_id, "input.item_popularity_psi", "vs_previous_day", 0.02),
            (run_id, "predictions.catalog_coverage", "", 0.5),
        ]
    metrics += [
        (run_ids[1], "predictions.score_psi", "vs_previous_version", 0.03),
        (run_ids[2], "predictions.score_psi", "vs_previous_version", 0.07),
        # The first version's quality measured the next day, then again with more events.
        (run_ids[1], "realized.ndcg", f"model:{model}/publish:{first}", 0.10),
        (run_ids[2], "realized.ndcg", f"model:{model}/publish:{first}", 0.12),
        (run_ids[2], "realized.ndcg", f"popularity/publish:{first}", 0.08),
        (run_ids[2], "realized.ndcg", f"model:{model}/publish:{publish_ids[1]}", 0.11),
        (run_ids[2], "realized.ndcg", f"popularity/publish:{publish_ids[1]}", 0.09),
        (run_ids[2], "realized.ndcg_share", f"model:{model}", 0.7),
    ]
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO batchscore.run_metrics (run_id, metric, segment, value)"
                             " VALUES (:r, :m, :s, :v)"),
                     [{"r": r, "m": m, "s": s, "v": v} for r, m, s, v in metrics])
    return World(run_ids=run_ids, publish_ids=publish_ids, model_version=model)


def nights(engine: Engine, first: date, count: int) -> list[str]:
    """``count`` nightly runs recorded on consecutive dates from ``first``, each with an
    input.rows metric, as a fortnight of history for the trend plots (nothing published)."""
    model = register(engine, NewModel(
        created_by="test", trained_as_of=first, params={}, metrics={}, data_snapshot={},
        code_version="test", artifact_uri="file:///nowhere", gates=GATES)).version
    run_ids = []
    for night in range(count):
        run_id = runs.start(engine, "nightly", first + timedelta(days=night), model)
        runs.succeed(engine, run_id, {"served": False})
        run_ids.append(run_id)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO batchscore.run_metrics (run_id, metric, segment, value)"
                             " VALUES (:r, 'input.rows', '', :v)"),
                     [{"r": r, "v": 1000.0 + n} for n, r in enumerate(run_ids)])
    return run_ids
