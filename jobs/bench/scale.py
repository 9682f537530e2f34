"""The scale run: the nightly steps end to end on a synthetic model and data set
(1,000,000 users x 20,000 items, rank 32, top 50 by default), with the wall
time of each stage, the peak memory of this process and everything it starts,
the most disk it used at once (its servers' data included when they live in its
folder), and the end-to-end time as a multiple of the floors: the matrix multiply at
numpy's speed, ``psql \\copy`` and ``redis-cli --pipe`` of the same data.
Everything it writes is removed at the end.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
from psycopg2 import sql

from jobs.bench.headroom import MachineHeadroom, PeakMemory
from jobs.bench.pairs import PostgresBench, RedisBench
from jobs.bench.rewrite import rewrite_append_only_file
from jobs.bench.servers import BENCH_DATABASE, Servers, debian_or_resolved
from jobs.contracts.redis import Keyspace
from jobs.data import history
from jobs.data.store import day_end
from jobs.lifecycle import registry
from jobs.orchestration.after_monitor import monitor
from jobs.orchestration.checks import smoke_check
from jobs.orchestration.outcome import finish
from jobs.orchestration.prepare import (
    begin,
    check_redis_takes_writes,
    score_in_process,
    validate_inputs,
    validate_predictions,
)
from jobs.orchestration.publish_steps import publish_postgres, publish_redis, switch
from jobs.orchestration.run_state import NightlyConfig
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, statement, upgrade
from jobs.platform.redis_client import connect
from jobs.platform.spark import stop_with_jvm
from jobs.publish.redis import known_versions, retire_version
from jobs.scoring.model import MODEL_METADATA_FILE
from jobs.scoring.score import RECOMMENDATIONS_DIR

logger = logging.getLogger(__name__)

SCALE_DATE = date(2000, 1, 2)
RANK = 32
K = 50
EVENTS_PER_USER = 5
GIB = 1024**3
# Turns of the nightly and of each floor, taken in turn; each figure is their median.
TURNS = 3
# Above this many users the scorer is not run again alone (it adds minutes, not a figure
# of the run).
SCORER_ALONE_UP_TO_USERS = 2_000_000
# From this many users, a Redis built with libc's malloc is warned of: during an
# append-only rewrite it copies up to all its data (README, "Scale run").
LIBC_REDIS_WARNING_USERS = 5_000_000
# The run stops, and cleans up, when the machine's available memory falls below this,
MEMORY_GUARD_BYTES = 1 * GIB
# or the free disk under its folder (where Debian's servers keep their data) below this:
# room for the writes of a step in progress to finish before Redis refuses writes and
# PostgreSQL stops on a full disk.
DISK_GUARD_BYTES = 4 * GIB


class Stages:
    """Wall time of named stages, printed as they finish: ``every`` each time a stage
    ran (the setup's steps run in every turn), ``seconds`` its last time."""

    def __init__(self, headroom: MachineHeadroom | None = None, label: str = "") -> None:
        self.every: dict[str, list[float]] = {}
        self.headroom = headroom
        self.label = label

    @property
    def seconds(self) -> dict[str, float]:
        return {name: times[-1] for name, times in self.every.items()}

    def run(self, name: str, action: Callable[[], Any]) -> Any:
        print(f"  {name} ...", flush=True)
        if self.headroom is not None:
            self.headroom.step = f"{self.label}{name}"
        start = time.perf_counter()
        result = action()
        self.every.setdefault(name, []).append(time.perf_counter() - start)
        print(f"  {name}: {self.every[name][-1]:.1f}s", flush=True)
        return result


def report_of(engine: Any, config: NightlyConfig, run_id: str) -> Path:
    from jobs.monitoring.report import write_report

    return write_report(engine, config.home, run_id)


def run_scale(settings: Settings, work: Path, users: int = 1_000_000, items: int = 20_000,
              turns: int = TURNS, debian: bool = False) -> dict[str, Any]:
    """The synthetic world once, then ``turns`` turns of the nightly and each floor in
    turn; every figure is the median of its turns. With ``debian``, on Debian's
    PostgreSQL 15 and Redis 7 started for the run."""
    if turns < 1:
        raise ValueError(f"the scale run needs at least one turn, not {turns}")
    with debian_or_resolved(settings, work, debian) as servers:
        return scale_on(servers, settings, work, users, items, turns)


def scale_on(servers: Servers, settings: Settings, work: Path, users: int, items: int,
             turns: int) -> dict[str, Any]:
    from jobs.bench.servers import bench_spark
    from jobs.bench.synthetic import synthetic_world

    print(f"scale run: {users:,} users x {items:,} items, rank {RANK}, top {K}, against "
          f"the {servers.where}; {turns} turn(s) of the nightly and the floors", flush=True)
    warn_of_the_allocator(servers.redis_url, users)
    engine = engine_for(servers.database_url)
    upgrade(engine)
    spark = bench_spark("batchscore-scale", driver_memory="4g")
    free_at_start = shutil.disk_usage(work).free
    headroom = MachineHeadroom(MEMORY_GUARD_BYTES, watch_pid=redis_server_pid(servers),
                               disk=work, disk_guard_bytes=DISK_GUARD_BYTES)
    setup, breakdown = Stages(headroom, "setup: "), Stages(headroom)
    redis_turns: list[dict[str, float | None]] = []
    nights: list[dict[str, float]] = []
    floor_turns: dict[str, list[float]] = {}
    peak_bytes = 0
    stored: dict[str, float] = {}
    redis_bench = postgres = None
    pipe_file = copy_file = None
    try:
        with headroom:
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

            for turn in range(1, turns + 1):
                if spark is None:
                    spark = bench_spark("batchscore-scale", driver_memory="4g")
                # Each turn scores the same date again and replaces the last turn's version,
                # as a nightly run again does; from the second turn on, the version before
                # it is served and kept for rollback while the new one is written aside.
                print(f"turn {turn} of {turns}, the nightly steps:", flush=True)
                state = begin(engine, config)
                recommendations = work / RECOMMENDATIONS_DIR
                night, monitoring, peak = nightly_turn(engine, servers, config, state,
                                                       recommendations, headroom, turn)
                nights.append(night.seconds)
                peak_bytes = max(peak_bytes, peak)
                print(f"  monitoring: {len(monitoring['crossings'])} threshold(s) crossed",
                      flush=True)
                if turn == 1:
                    stored = stored_sizes(engine, servers.redis_url, state.publish_id, users)
                    print(f"  stored: PostgreSQL {stored['postgres_bytes_per_user']:.0f} bytes "
                          f"per user per version (indexes included); Redis used_memory "
                          f"{stored['redis_used_memory_bytes'] / GIB:.2f} GiB after the switch, "
                          f"{stored['redis_bytes_per_user']:.0f} bytes per user (MEMORY USAGE "
                          f"of {STORED_SAMPLE} keys)", flush=True)
                    if users <= SCORER_ALONE_UP_TO_USERS:
                        print("for comparison:", flush=True)
                        breakdown.run("the scorer alone (no-op sink, nothing seen)",
                                      partial(scorer_alone, spark, model_path))
                # The floors run without Spark's JVM beside them (a nightly's steps run
                # in processes of their own).
                stop_with_jvm(spark)
                spark = None

                print(f"turn {turn} of {turns}, the floors on the same data and servers:",
                      flush=True)
                if turn == 1:
                    redis_bench = RedisBench(servers, recommendations, work,
                                             publish_id=state.publish_id + 1_000_000)
                    postgres = PostgresBench(engine, servers, recommendations, work)
                # Each floor's input file is written just before it (not timed) and removed
                # after it: the rest of the run needs that disk (3.7 and 7.4 GB at
                # 10,000,000 users).
                pipe_file = setup.run("write the keys as a protocol file",
                                      redis_bench.pipe_file)
                # Redis first: loading PostgreSQL leaves the server checkpointing and
                # vacuuming, which would slow the next floor down.
                on_turn = {"headroom": headroom, "turn": turn}
                floor_time(floor_turns, REDIS_FLOOR, redis_bench.redis_cli_pipe, pipe_file,
                           **on_turn)
                if turn == 1:
                    breakdown.run("our Redis load again, right after that floor", redis_bench.ours)
                # The floor's keys go before the next turn writes its version aside, and the
                # pointer they shared is put back on the served version.
                client, pointer_key = connect(servers.redis_url), Keyspace().pointer_key()
                served = client.get(pointer_key)
                redis_bench.clear()
                if served is not None:
                    client.set(pointer_key, served)
                pipe_file.unlink()
                pipe_file = None
                # Nor does the floor's writing stay in the append-only file, which would
                # otherwise grow by a version and its deletion each turn.
                setup.run("rewrite Redis's append-only file without the floor's keys",
                          partial(rewrite_append_only_file, client))
                # Written before the multiply floor, which leaves PostgreSQL time to settle
                # from reading the version out.
                copy_file = setup.run("write the rows as a text file (COPY TO)",
                                      partial(postgres.copy_file_of, state.publish_id))
                floor_time(floor_turns, MATMUL_FLOOR, matmul_floor, model_path, users, items,
                           **on_turn)
                floor_time(floor_turns, POSTGRES_FLOOR, postgres.psql_copy, copy_file,
                           **on_turn)
                copy_file.unlink()
                copy_file = None
                redis_turns.append(redis_persistence(servers.redis_url))
    finally:
        for path in (pipe_file, copy_file):
            if path is not None:
                path.unlink(missing_ok=True)
        clean_up(servers, engine)
        engine.dispose()
        if spark is not None:
            stop_with_jvm(spark)
    report = scale_report(users, items, servers.where, nights, floor_turns, setup.every,
                          breakdown.seconds, peak_bytes, stored)
    report["memory"] = memory_report(headroom, redis_turns)
    report["disk"] = disk_report(headroom, free_at_start)
    print(f"\nend to end {report['end_to_end_seconds']:.0f}s (median of {turns}) = "
          f"{report['multiple_of_floors']:.2f}x the floors ({report['floors_sum_seconds']:.0f}s,"
          f" each the median of {turns}; target at most 2.5x); peak memory "
          f"{report['peak_memory_gib']:.2f} GiB (target under 12)")
    lowest = report["memory"]["lowest_available"]
    print(f"the machine's available memory was lowest, {lowest['gib']:.2f} GiB, during "
          f"{lowest['step']}; the Redis server's resident memory peaked at "
          f"{report['memory']['redis_rss_peak']['gib']:.2f} GiB during "
          f"{report['memory']['redis_rss_peak']['step']}")
    disk = report["disk"]
    print(f"the free disk under the run's folder was lowest, {disk['lowest_free']['gib']:.1f} "
          f"GiB, during {disk['lowest_free']['step']}: the run used {disk['used_gib']:.1f} "
          f"GiB at most, of {disk['free_at_start_gib']:.1f} GiB free at its start")
    out = settings.home / "bench" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")
    return report


REDIS_FLOOR = "redis-cli --pipe of the same keys and values"
MATMUL_FLOOR = "matrix multiply at numpy's speed"
POSTGRES_FLOOR = "psql \\copy of the same rows"


def nightly_turn(engine: Any, servers: Servers, config: NightlyConfig, state: Any,
                 keep_lists_at: Path, headroom: MachineHeadroom, turn: int
                 ) -> tuple[Stages, dict[str, Any], int]:
    """One nightly, stage by stage, timed: (its stages, monitoring's result, the peak
    memory of this process and everything it started). Its lists are moved to
    ``keep_lists_at`` for the floors (a rename, not timed)."""
    stages = Stages(headroom, f"turn {turn}: ")
    with PeakMemory() as peak:
        stages.run("check that Redis takes writes",
                   lambda: check_redis_takes_writes(servers.redis_url, state))
        stages.run("validate inputs (the day's events; the history's sync)",
                   lambda: validate_inputs(engine, state))
        stages.run("score (Spark job, with the prediction checks)",
                   lambda: score_in_process(state, None))
        stages.run("validate predictions", lambda: validate_predictions(state))
        stages.run("write aside in PostgreSQL (load, index)",
                   lambda: publish_postgres(engine, state))
        stages.run("write aside in Redis",
                   lambda: publish_redis(engine, servers.redis_url, state))
        stages.run("switch both stores (attach, serve, persist, flip)",
                   lambda: switch(engine, servers.redis_url, state))
        stages.run("smoke check", lambda: smoke_check(engine, servers.redis_url, state))
        # Recording the run removes its staging folder: the floors load the same lists.
        shutil.rmtree(keep_lists_at, ignore_errors=True)
        (state.folder / RECOMMENDATIONS_DIR).rename(keep_lists_at)
        stages.run("record the run", lambda: finish(engine, state))
        monitoring = stages.run(
            "monitor (input drift over the reference window, predictions)",
            lambda: monitor(engine, state.run_id, raise_errors=True))
        stages.run("run report", lambda: report_of(engine, config, state.run_id))
    return stages, monitoring, peak.peak


def floor_time(turns: dict[str, list[float]], name: str, action: Callable[..., Any],
               *args: Any, headroom: MachineHeadroom, turn: int) -> None:
    """Time one turn of a floor, ``action(*args)``, and add it to that floor's turns."""
    headroom.step = f"turn {turn}: floor: {name}"
    start = time.perf_counter()
    action(*args)
    turns.setdefault(name, []).append(time.perf_counter() - start)
    print(f"  {name} ({len(turns[name])}): {turns[name][-1]:.1f}s", flush=True)


def scale_report(users: int, items: int, where: str, nights: list[dict[str, float]],
                 floor_turns: dict[str, list[float]], setup: dict[str, list[float]],
                 breakdown: dict[str, float], peak_bytes: int, stored: dict[str, float]
                 ) -> dict[str, Any]:
    """The run's figures: each stage, the end to end and each floor the median of its
    turns, with every turn kept."""
    end_to_end = statistics.median(sum(night.values()) for night in nights)
    floors = {name: statistics.median(times) for name, times in floor_turns.items()}
    floor = sum(floors.values())
    return {
        "users": users, "items": items, "rank": RANK, "k": K, "servers": where,
        "turns": len(nights),
        "stages_seconds": {name: statistics.median(night[name] for night in nights)
                           for name in nights[0]},
        "floors_seconds": floors,
        "end_to_end_seconds": end_to_end,
        "floors_sum_seconds": floor, "multiple_of_floors": end_to_end / floor,
        "turns_stages_seconds": nights, "turns_floors_seconds": floor_turns,
        "setup_seconds": setup, "score_breakdown_seconds": breakdown,
        "peak_memory_gib": peak_bytes / GIB, **stored,
    }


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


def warn_of_the_allocator(redis_url: str, users: int) -> None:
    """Say so when the Redis server's allocator is libc's and the run is large enough for
    an append-only rewrite's copies to run the machine out of memory."""
    allocator = connect(redis_url).info("memory").get("mem_allocator", "")
    if users >= LIBC_REDIS_WARNING_USERS and allocator.startswith("libc"):
        print(f"warning: this Redis allocates with {allocator}, which copies up to all its "
              f"data while it rewrites its append-only file; at {users:,} users that can "
              f"run the machine out of memory (the guard then stops the run). Debian's "
              f"Redis 7 (jemalloc) copies less: run against it (make bench-scale "
              f"SERVERS=debian).", flush=True)


def redis_server_pid(servers: Servers) -> int | None:
    """The Redis server's process id when it runs on this machine (loopback), to watch
    its resident memory; None for a server elsewhere."""
    host = servers.redis_host_port_db[0]
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return int(connect(servers.redis_url).info("server")["process_id"])


def redis_persistence(redis_url: str) -> dict[str, float | None]:
    """What the Redis server's persistence has cost so far: append-only rewrites done
    (None from a server before 7.0, which does not count them) and the copy-on-write
    memory of the last one, with the allocator's peak."""
    client = connect(redis_url)
    persistence, memory = client.info("persistence"), client.info("memory")
    return {"aof_rewrites": persistence.get("aof_rewrites"),
            "aof_last_cow_gib": persistence.get("aof_last_cow_size", 0) / GIB,
            "used_memory_peak_gib": memory["used_memory_peak"] / GIB}


def extreme(per_step: dict[str, int], pick: Callable[..., str]) -> dict[str, Any]:
    """The ``pick`` (min or max) of per-step bytes, in GiB, with its step."""
    if not per_step:
        return {"gib": 0.0, "step": "none"}
    step = pick(per_step, key=per_step.__getitem__)
    return {"gib": per_step[step] / GIB, "step": step}


def memory_report(headroom: MachineHeadroom, redis_turns: list[dict[str, float | None]]
                  ) -> dict[str, Any]:
    """The machine's lowest available memory and the Redis server's peak resident memory,
    each overall (with its step) and per step, and Redis's persistence after each turn."""
    return {
        "guard_gib": headroom.guard_bytes / GIB,
        "lowest_available": extreme(headroom.lowest, min),
        "redis_rss_peak": extreme(headroom.watched_peak, max),
        "lowest_available_gib_per_step": {k: v / GIB for k, v in headroom.lowest.items()},
        "redis_rss_peak_gib_per_step": {k: v / GIB for k, v in headroom.watched_peak.items()},
        "redis_persistence_turns": redis_turns,
    }


def disk_report(headroom: MachineHeadroom, free_at_start: int) -> dict[str, Any]:
    """The free disk under the run's folder: at the start, its lowest (with its step) and
    per step, and so the most the run used at once (its servers' data included when they
    keep it there, as Debian's started for the run do)."""
    lowest = extreme(headroom.lowest_disk, min)
    return {
        "guard_gib": headroom.disk_guard_bytes / GIB,
        "free_at_start_gib": free_at_start / GIB,
        "lowest_free": lowest,
        "used_gib": free_at_start / GIB - lowest["gib"] if headroom.lowest_disk else 0.0,
        "lowest_free_gib_per_step": {k: v / GIB for k, v in headroom.lowest_disk.items()},
    }


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
    in blocks the size the scorer uses, one row per item (the faster way round for
    numpy's BLAS, by a fifth to a third; the product alone: no selection)."""
    from jobs.scoring.transforms import SCORE_BLOCK_BYTES

    rng = np.random.default_rng(1)
    item_factors = rng.normal(size=(items, RANK)).astype(np.float32)
    block_rows = max(1, SCORE_BLOCK_BYTES // (4 * items))
    block = rng.normal(size=(block_rows, RANK)).astype(np.float32)
    out = np.empty((items, block_rows), dtype=np.float32)
    for start in range(0, users, block_rows):
        rows = min(block_rows, users - start)
        np.matmul(item_factors, block[:rows].T, out=out[:, :rows])


def clean_up(servers: Servers, engine: Any) -> None:
    """Remove what the scale run published: every version's Redis keys and the bench
    database."""
    client = connect(servers.redis_url)
    keys = Keyspace()
    for publish_id in known_versions(client, keys):
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
