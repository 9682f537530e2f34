"""Synthetic inputs of any size: a real saved Spark ALSModel with random factors,
scored recommendations, interactions."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.platform.db import statement
from jobs.scoring.transforms import with_redis_value

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import SparkSession
    from sqlalchemy.engine import Engine

# Random factors of this spread give dot products of order one, as trained ones do.
FACTOR_SCALE = 0.3


def synthetic_model(spark: SparkSession, path: Path, users: int, items: int, rank: int,
                    seed: int = 7) -> ALSModel:
    """A real ALSModel, saved at ``path``, with Gaussian factors for users 1..``users``
    and items 1..``items``.

    A tiny model is fitted for Spark's own metadata, then its factor tables are
    replaced by generated ones of the same schema; ``ALSModel.load`` reads it
    back as any trained model.
    """
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import functions as F

    fit_metadata_model(spark, path, rank, seed)

    def factors(count: int, salt: int):
        features = F.array(*[(F.randn(seed * 1000 + salt * 100 + i) * FACTOR_SCALE)
                             .cast("float") for i in range(rank)])
        return spark.range(1, count + 1).select(F.col("id").cast("int").alias("id"),
                                                features.alias("features"))

    for name, count, salt in (("userFactors", users, 1), ("itemFactors", items, 2)):
        factors(count, salt).write.mode("overwrite").parquet(str(path / name))
    return ALSModel.load(str(path))


def synthetic_recommendations(path: Path, users: int, k: int, items: int, seed: int = 3,
                              rows_per_file: int = 50_000) -> Path:
    """Scoring output for users 1..``users``: (user_id, items, scores best first,
    redis_value), the last encoded as the scoring job encodes it."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    schema = pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                        ("scores", pa.list_(pa.float32()))])
    for number, start in enumerate(range(0, users, rows_per_file)):
        count = min(rows_per_file, users - start)
        offsets = pa.array(np.arange(0, count * k + 1, k, dtype=np.int32))
        picked = rng.integers(1, items + 1, (count, k))
        scores = -np.sort(-rng.normal(1.0, 0.5, (count, k)).astype(np.float32), axis=1)
        table = pa.table([pa.array(np.arange(start + 1, start + count + 1)),
                          pa.ListArray.from_arrays(offsets, pa.array(picked.ravel())),
                          pa.ListArray.from_arrays(offsets, pa.array(scores.ravel()))],
                         schema=schema)
        pq.write_table(pa.Table.from_batches(
            [with_redis_value(batch) for batch in table.to_batches()]),
            # written as jobs.scoring.score writes it: LZ4, row groups of a few thousand users
            path / f"part-{number:05d}.parquet", compression="lz4", row_group_size=8_000)
    return path


def synthetic_world(spark: SparkSession, model_path: Path, root: str, users: int, items: int,
                    rank: int, per_user: int, end_seconds: int, seed: int = 5,
                    engine: Engine | None = None) -> int:
    """A model and the interaction history it was as if trained on: ``per_user`` events
    for every user 1..``users`` in the 30 days before ``end_seconds``, written as the
    interaction history (:mod:`jobs.data.history`), and a real ALSModel saved at
    ``model_path`` whose item factors are Gaussian and whose user factors are the sums of
    their events' item factors, so that the model ranks a user's own items high, as a
    trained one does, and the prediction contract's quality checks pass. With ``engine``
    the events are also loaded into ``batchscore.interactions`` (binary ``COPY``), where
    the input contract and monitoring read them, and their days recorded as written to
    the history. The events.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from jobs.data.history import SCHEMA, filesystem

    fit_metadata_model(spark, model_path, rank)
    rng = np.random.default_rng(seed)
    item_factors = (rng.normal(size=(items, rank)) * FACTOR_SCALE).astype(np.float32)
    write_factors(model_path / "itemFactors" / "part-0.parquet",
                  np.arange(1, items + 1), item_factors)
    files, base = filesystem(root)
    days: dict[date, int] = {}
    chunk_users = 200_000
    for number, start in enumerate(range(0, users, chunk_users)):
        count = min(chunk_users, users - start)
        ids = np.arange(start + 1, start + count + 1)
        picked = rng.integers(1, items + 1, (count, per_user))
        write_factors(model_path / "userFactors" / f"part-{number}.parquet", ids,
                      item_factors[picked - 1].sum(axis=1))
        rows = count * per_user
        events = pa.table({
            "user_id": np.repeat(ids, per_user),
            "item_id": picked.ravel(),
            "rating": rng.integers(1, 6, rows).astype(np.float64),
            "event_at": end_seconds - rng.integers(3600, 30 * 86_400, rows),
        }, schema=SCHEMA)
        day = pc.cast(pc.cast(pc.multiply(events["event_at"], 1_000_000),
                              pa.timestamp("us")), pa.date32())
        ds.write_dataset(events.append_column("event_date", day), base, filesystem=files,
                         format="parquet", partitioning=ds.partitioning(
                             pa.schema([("event_date", pa.date32())]), flavor="hive"),
                         basename_template=f"block{number}-{{i}}.parquet",
                         existing_data_behavior="overwrite_or_ignore")
        if engine is not None:
            copy_events(engine, events)
            for entry in pc.value_counts(day).to_pylist():
                days[entry["values"]] = days.get(entry["values"], 0) + entry["counts"]
    if engine is not None:
        written_days(engine, days)
    return users * per_user


def copy_events(engine: Engine, events: pa.Table) -> None:
    """``events`` (the history's columns, event_at in Unix seconds) appended to
    ``batchscore.interactions`` in one binary ``COPY``."""
    from jobs.bench.history import POSTGRES_EPOCH
    from jobs.bench.history import copy_events as copy_rows
    from jobs.platform.db import cursor

    epoch = int(POSTGRES_EPOCH.timestamp())
    with cursor(engine) as cur:
        copy_rows(cur, events["user_id"].to_numpy(), events["item_id"].to_numpy(),
                  events["rating"].to_numpy(),
                  (events["event_at"].to_numpy() - epoch) * 1_000_000)


def written_days(engine: Engine, days: dict[date, int]) -> None:
    """Record ``days`` ({date: events}) as written to the interaction history, as a sync
    that wrote them would."""

    with engine.begin() as conn:
        conn.execute(statement(conn,
            "UPDATE {schema}.history_days SET marked_at = NULL, events = :n,"
            " written_at = now() WHERE event_date = :d"),
            [{"d": day, "n": count} for day, count in days.items()])


def fit_metadata_model(spark: SparkSession, path: Path, rank: int, seed: int = 7) -> None:
    """A tiny fitted ALSModel saved at ``path``, its factor tables removed: Spark's own
    metadata, for factors written beside it."""
    from pyspark.ml.recommendation import ALS

    if path.exists():
        shutil.rmtree(path)
    tiny = spark.createDataFrame([(1, 1, 1.0), (1, 2, 1.0), (2, 1, 1.0)],
                                 "user int, item int, rating float")
    ALS(rank=rank, maxIter=1, implicitPrefs=True, userCol="user", itemCol="item",
        ratingCol="rating", seed=seed).fit(tiny).write().overwrite().save(str(path))
    for name in ("userFactors", "itemFactors"):
        shutil.rmtree(path / name)
        (path / name).mkdir()


def write_factors(path: Path, ids: np.ndarray, factors: np.ndarray) -> None:
    """A factor table's Parquet file as ALSModel keeps it: ``id`` int, ``features``
    array of float."""
    rank = factors.shape[1]
    features = pa.ListArray.from_arrays(
        pa.array(np.arange(0, len(ids) * rank + 1, rank, dtype=np.int32)),
        pa.array(np.ascontiguousarray(factors, dtype=np.float32).ravel()))
    pq.write_table(pa.table({"id": pa.array(ids.astype(np.int32)), "features": features}),
                   path)
