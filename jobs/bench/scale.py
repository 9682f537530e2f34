"""The scale run: the nightly steps end to end on a synthetic model and data set
(1,000,000 users x 20,000 items, rank 32, top 50 by default), with the wall
time of each stage, the peak memory of this process and everything it starts,
and the end-to-end time as a multiple of the floors: the matrix multiply at
numpy's speed, ``psql \\copy`` and ``redis-cli --pipe`` of the same data.
Everything it writes is removed at the end.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
from psycopg2 import sql

from jobs.bench.memory import PeakMemory
from jobs.bench.pairs import PostgresBench, RedisBench
from jobs.bench.servers import BENCH_DATABASE, Servers, resolve
from jobs.contracts.redis import Keyspace
from jobs.data import history
from jobs.data.store import day_end
from jobs.lifecycle import registry
from jobs.orchestration.after_monitor import monitor
from jobs.orchestration.checks import smoke_check
from jobs.orchestration.outcome import finish
from jobs.orchestration.prepare import (
    begin,
    score_in_process,
    validate_inputs,
    validate_predictions,
)
from jobs.orchestration.publish_steps import publish_postgres, publish_redis, switch
from jobs.orchestration.run_state import NightlyConfig
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, statement, upgrade
from jobs.platform.redis_client import connect
from jobs.publish.redis import retire_version
from jobs.scoring.model import MODEL_METADATA_FILE
from jobs.scoring.score import RECOMMENDATIONS_DIR

logger = logging.getLogger(__name__)

SCALE_DATE = date(2000, 1, 2)
RANK = 32
K = 50
EVENTS_PER_USER = 5
GIB = 1024**3
FLOOR_REPEATS = 3
# Above this many users each floor runs once and the scorer is not run again alone: at
# 10,000,000 users the three turns of each would add about half an hour.
REPEATED_UP_TO_USERS = 2_000_000


class Stages:
    """Wall time of named stages, printed as they finish."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, action: Callable[[], Any]) -> Any:
        print(f"  {name} ...", flush=True)
        start = time.perf_counter()
        result = action()
        self.seconds[name] = time.perf_counter() - start
        print(f"  {name}: {self.seconds[name]:.1f}s", flush=True)
        return result

    def median_of(self, name: str, action: Callable[[], Any], repeats: int) -> None:
        """Run ``action`` ``repeats`` times and keep the median time: a floor
        should not be raised by one slow run."""
        times = []
        for number in range(1, repeats + 1):
            start = time.perf_counter()
            action()
            times.append(time.perf_counter() - start)
            print(f"  {name} ({number}/{repeats}): {times[-1]:.1f}s", flush=True)
        self.seconds[name] = statistics.median(times)
        print(f"  {name}: {self.seconds[name]:.1f}s (median)", flush=True)


def report_of(engine: Any, config: NightlyConfig, run_id: str) -> Path:
    from jobs.monitoring.report import write_report

    return write_report(engine, config.home, run_id)


def run_scale(settings: Settings, work: Path, users: int = 1_000_000, items: int = 20_000
              ) -> dict[str, Any]:
    from jobs.bench.servers import bench_spark
    from jobs.bench.synthetic import synthetic_world

    servers = resolve(settings)
    print(f"scale run: {users:,} users x {items:,} items, rank {RANK}, top {K}, against "
          f"the {servers.where}", flush=True)
    engine = engine_for(servers.database_url)
    upgrade(engine)
    spark = bench_spark("batchscore-scale", driver_memory="4g")
    setup, nightly_stages, floors, breakdown = Stages(), Stages(), Stages(), Stages()
    state = None
    spark_stopped = False
    try:
        print("inputs (not timed as part of the run):", flush=True)
        model_path = work / "model"
        history_root = history.root(engine, None, work / "home")
        setup.run("synthetic model and interaction history", lambda: synthetic_world(
            spark, model_path, history_root, users, items, RANK, EVENTS_PER_USER,
            int(day_end(SCALE_DATE).timestamp()), engine=engine))
        version = registry.register(engine, registry.NewModel(
            created_by="bench", trained_as_of=SCALE_DATE, params={"rank": RANK}, metrics={},
            data_snapshot={}, code_version="bench", artifact_uri=model_path.as_uri()),
            promote_if_first=False).version
        (model_path / MODEL_METADATA_FILE).write_text(json.dumps({"model_version": version}))
        config = NightlyConfig(
            run_date=SCALE_DATE, database_url=servers.database_url,
            redis_url=servers.redis_url, home=work / "home", k=K, model_version=version,
            serve_older_date=True)
        state = begin(engine, config)

        print("the nightly steps:", flush=True)
        with PeakMemory() as peak:
            nightly_stages.run("validate inputs (the day's events; the history's sync)",
                               lambda: validate_inputs(engine, state))
            nightly_stages.run("score (Spark job, with the prediction checks)",
                               lambda: score_in_process(state, None))
            nightly_stages.run("validate predictions",
                               lambda: validate_predictions(state))
            nightly_stages.run("write aside in PostgreSQL (load, index)",
                               lambda: publish_postgres(engine, state))
            nightly_stages.run("write aside in Redis",
                               lambda: publish_redis(engine, servers.redis_url, state))
            nightly_stages.run("switch both stores (attach, serve, persist, flip)",
                               lambda: switch(engine, servers.redis_url, state))
            nightly_stages.run("smoke check",
                               lambda: smoke_check(engine, servers.redis_url, state))
            # Recording the run removes its staging folder: the floors below load
            # the same lists, kept aside (a rename, not timed).
            recommendations = (state.folder / RECOMMENDATIONS_DIR).rename(
                work / RECOMMENDATIONS_DIR)
            nightly_stages.run("record the run", lambda: finish(engine, state))
            monitoring = nightly_stages.run(
                "monitor (input drift over the reference window, predictions)",
                lambda: monitor(engine, state.run_id, raise_errors=True))
            nightly_stages.run("run report", lambda: report_of(engine, config, state.run_id))
        print(f"  monitoring: {len(monitoring['crossings'])} threshold(s) crossed", flush=True)
        stored = stored_sizes(engine, servers.redis_url, state.publish_id, users)
        print(f"  stored: PostgreSQL {stored['postgres_bytes_per_user']:.0f} bytes per user "
              f"per version (indexes included); Redis used_memory "
              f"{stored['redis_used_memory_bytes'] / GIB:.2f} GiB after the switch, "
              f"{stored['redis_bytes_per_user']:.0f} bytes per user (MEMORY USAGE of "
              f"{STORED_SAMPLE} keys)", flush=True)
        repeats = FLOOR_REPEATS if users <= REPEATED_UP_TO_USERS else 1
        if users <= REPEATED_UP_TO_USERS:
            print("for comparison:", flush=True)
            breakdown.run("the scorer alone (no-op sink, nothing seen)",
                          lambda: scorer_alone(spark, model_path))
        spark.stop()
        spark_stopped = True

        print("floors, on the same data and servers:", flush=True)
        # Redis first: loading PostgreSQL three times leaves the server
        # checkpointing and vacuuming, which would slow the next floor down.
        redis_bench = RedisBench(servers, recommendations, work, publish_id=state.publish_id)
        pipe_file = setup.run("write the keys as a protocol file", redis_bench.pipe_file)
        floors.median_of("redis-cli --pipe of the same keys and values",
                         lambda: redis_bench.redis_cli_pipe(pipe_file), repeats)
        pipe_file.unlink()
        breakdown.run("our Redis load again, right after that floor",
                      lambda: redis_bench.ours())
        floors.median_of("matrix multiply at numpy's speed",
                         lambda: matmul_floor(model_path, users, items), repeats)
        postgres = PostgresBench(engine, servers, recommendations, work)
        copy_file = setup.run("write the rows as a text file", postgres.copy_file)
        floors.median_of("psql \\copy of the same rows", lambda: postgres.psql_copy(copy_file),
                         repeats)
        copy_file.unlink()
    finally:
        if state is not None:
            clean_up(servers, state.publish_id, engine)
        engine.dispose()
        if not spark_stopped:
            spark.stop()
    end_to_end = sum(nightly_stages.seconds.values())
    floor = sum(floors.seconds.values())
    report = {
        "users": users, "items": items, "rank": RANK, "k": K, "servers": servers.where,
        "stages_seconds": nightly_stages.seconds, "floors_seconds": floors.seconds,
        "setup_seconds": setup.seconds, "score_breakdown_seconds": breakdown.seconds,
        "end_to_end_seconds": end_to_end,
        "floors_sum_seconds": floor, "multiple_of_floors": end_to_end / floor,
        "peak_memory_gib": peak.peak / GIB, **stored,
    }
    print(f"\nend to end {end_to_end:.0f}s = {end_to_end / floor:.2f}x the floors "
          f"({floor:.0f}s; target at most 2.5x); peak memory {peak.peak / GIB:.2f} GiB "
          f"(target under 12)")
    out = settings.home / "bench" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return report


STORED_SAMPLE = 1_000


def stored_sizes(engine: Any, redis_url: str, publish_id: int, users: int) -> dict[str, float]:
    """What one version takes in each store: the PostgreSQL partition with its index, per
    user; Redis's ``used_memory`` and ``MEMORY USAGE`` of sampled users' keys."""
    import sqlalchemy as sa

    from jobs.publish.postgres import partition_name

    with engine.connect() as conn:
        postgres_bytes = conn.execute(sa.text("SELECT pg_total_relation_size(:t)"), {
            "t": f"batchscore.{partition_name(publish_id)}"}).scalar_one()
        sample = conn.execute(statement(conn,
            "SELECT user_id FROM {schema}.prediction_lists WHERE publish_id = :p LIMIT :n"),
            {"p": publish_id, "n": STORED_SAMPLE}).scalars().all()
    client = connect(redis_url)
    keys = Keyspace()
    usage = [client.memory_usage(keys.user_key(publish_id, user), samples=0) or 0
             for user in sample]
    return {"postgres_bytes_per_user": postgres_bytes / users,
            "redis_used_memory_bytes": float(client.info("memory")["used_memory"]),
            "redis_bytes_per_user": statistics.mean(usage) if usage else 0.0}


def scorer_alone(spark: Any, model_path: Path) -> None:
    """Every user of the model through ``top_k_unseen`` into Spark's no-op sink."""
    from pyspark.ml.recommendation import ALSModel

    from jobs.bench.pairs import model_users
    from jobs.scoring.model import item_matrix
    from jobs.scoring.transforms import top_k_unseen

    model = ALSModel.load(str(model_path))
    item_ids, item_factors = item_matrix(model)
    (top_k_unseen(model_users(model, spark.sparkContext.defaultParallelism), item_ids,
                  item_factors, K).write.format("noop").mode("overwrite").save())


def matmul_floor(model_path: Path, users: int, items: int) -> None:
    """Every user against every item by matrix multiply, numpy with all its threads,
    in blocks the size the scorer uses (the product alone: no selection)."""
    from jobs.scoring.transforms import SCORE_BLOCK_BYTES

    rng = np.random.default_rng(1)
    item_factors = rng.normal(size=(items, RANK)).astype(np.float32)
    block_rows = max(1, SCORE_BLOCK_BYTES // (4 * items))
    block = rng.normal(size=(block_rows, RANK)).astype(np.float32)
    out = np.empty((block_rows, items), dtype=np.float32)
    for start in range(0, users, block_rows):
        rows = min(block_rows, users - start)
        np.matmul(block[:rows], item_factors.T, out=out[:rows])


def clean_up(servers: Servers, publish_id: int | None, engine: Any) -> None:
    """Remove what the scale run published: its Redis keys and the bench database."""
    client = connect(servers.redis_url)
    keys = Keyspace()
    if publish_id is not None:
        retire_version(client, keys, publish_id)
    client.delete(keys.pointer_key())
    engine.dispose()
    admin = servers.database_url.rsplit("/", 1)[0] + "/postgres"
    connection = psycopg2.connect(admin)
    connection.autocommit = True
    try:
        with connection.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(BENCH_DATABASE)))
    finally:
        connection.close()
