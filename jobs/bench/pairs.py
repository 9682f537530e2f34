"""The benchmark pairs: each runs ours and the peer on the same data and server."""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import redis
from psycopg2 import sql
from sqlalchemy.engine import URL, Engine, make_url

from jobs.bench.results import Pair
from jobs.bench.servers import JDBC_HINT, JDBC_JAR, Servers, require_tool
from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace
from jobs.lifecycle import registry
from jobs.platform import runs
from jobs.platform.db import composed, cursor
from jobs.platform.redis_client import connect, is_cluster, is_cluster_url
from jobs.publish import REDIS_COLUMNS, PublishVersion, read_blocks
from jobs.publish.postgres import PostgresPublisher
from jobs.publish.redis import (
    PIPELINE_BATCH,
    STAGED_TTL_SECONDS,
    NodeWriters,
    RedisPublisher,
    retire_version,
    serve,
    set_with_expiry_commands,
)
from jobs.scoring.transforms import with_redis_value

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

BENCH_DATE = date(2000, 1, 1)
# Redis publish ids far from any real one (the bench uses its own Redis database too).
REDIS_BENCH_PUBLISH_ID = 900_000_001
# The user redis-benchmark reads as, for the length of its run (see benchmark_user).
BENCH_USER = "batchscore_bench"
PEER_TABLE = "bench_peer"
WARM_UP_USERS = 2_000
REDIS_REPEATS = 3


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- scoring -------------------------------------------------------------------

def model_users(model: ALSModel, parallelism: int):
    """The model's users as the scorer takes them (nothing seen), in at least
    ``parallelism`` partitions; read as stored when there are that many already,
    as ``recommendForAllUsers`` reads them."""
    from pyspark.sql import functions as F

    users = (model.userFactors.select(F.col("id").cast("long").alias("user_id"), "features")
             .withColumn("seen", F.lit(None).cast("array<long>")))
    if users.rdd.getNumPartitions() < parallelism:
        users = users.repartition(parallelism)
    return users


def scorer_pair(spark: SparkSession, model: ALSModel, users: int, items: int, k: int
                ) -> Pair:
    """Exact top-k of every user: our blocked scorer vs ``recommendForAllUsers``.

    Both read the saved model's factors and run to completion into Spark's
    no-op sink, so neither pays for writing output.
    """
    from pyspark.sql import functions as F

    from jobs.scoring.model import item_matrix
    from jobs.scoring.transforms import top_k_unseen

    item_ids, item_factors = item_matrix(model)
    parallelism = spark.sparkContext.defaultParallelism

    def ours(users: int | None = None) -> None:
        selected = model_users(model, parallelism)
        if users is not None:
            selected = selected.limit(users)
        (top_k_unseen(selected, item_ids, item_factors, k)
         .write.format("noop").mode("overwrite").save())

    def peer(users: int | None = None) -> None:
        if users is None:
            recommended = model.recommendForAllUsers(k)
        else:
            subset = model.userFactors.select(F.col("id").alias(model.getUserCol()))
            recommended = model.recommendForUserSubset(subset.limit(users), k)
        recommended.write.format("noop").mode("overwrite").save()

    # Warm both up on a few users first (JVM code paths, Python workers), so
    # neither pays for what the other already started.
    ours(WARM_UP_USERS)
    peer(WARM_UP_USERS)
    ours_seconds, peer_seconds = timed(ours), timed(peer)
    scores = float(users) * items
    logger.info("scorer %.1fs, recommendForAllUsers %.1fs", ours_seconds, peer_seconds)
    return Pair.of("scoring throughput", scores / ours_seconds, scores / peer_seconds,
                   "scores/s", higher_is_better=True, peer_name="recommendForAllUsers",
                   target=10,
                   note=f"{users:,} users x {items:,} items, top {k}, local Spark with "
                        f"{parallelism} cores; ours {ours_seconds:.1f}s, peer "
                        f"{peer_seconds:.1f}s")


def block_timing_task(batches: Iterator[pa.RecordBatch], catalog: Any, k: int,
                      repeats: int) -> Iterator[pa.RecordBatch]:
    """Inside a Spark task: time the scorer's matrix multiply and top-k on one block."""
    from jobs.scoring.transforms import block_scores, top_k_items, user_matrix

    block = pa.Table.from_batches(list(batches)).combine_chunks().to_batches()[0]
    users = user_matrix(block.column("features"), catalog.factors.shape[1])
    multiply, select = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = block_scores(users, catalog)
        middle = time.perf_counter()
        top_k_items(scores, k, catalog.chunk)
        multiply.append(middle - start)
        select.append(time.perf_counter() - middle)
    yield pa.RecordBatch.from_pydict({"multiply": [statistics.median(multiply)],
                                      "select": [statistics.median(select)],
                                      "users": [block.num_rows]})


def top_k_pair(spark: SparkSession, model: ALSModel, k: int, repeats: int = 7) -> Pair:
    """Top-k selection time vs matrix multiply time on one block, in a Spark task
    (one BLAS thread, as in scoring), median of ``repeats``."""
    from jobs.scoring.model import item_matrix
    from jobs.scoring.transforms import SCORE_BLOCK_BYTES, ItemCatalog

    item_ids, item_factors = item_matrix(model)
    catalog = ItemCatalog.build(item_ids, item_factors, k)
    block_rows = max(1, SCORE_BLOCK_BYTES // (4 * catalog.factors.shape[0]))
    users = model_users(model, 1).limit(block_rows).coalesce(1)
    row = users.mapInArrow(
        lambda batches: block_timing_task(batches, catalog, k, repeats),
        "multiply double, select double, users long").first()
    return Pair.of("top-k selection vs matrix multiply", row["select"], row["multiply"],
                   "s per block", higher_is_better=False, peer_name="the block's matmul",
                   target=1,
                   note=f"one block of {row['users']:,} users x {len(item_ids):,} items, "
                        f"rank {item_factors.shape[1]}, k {k}")


# -- PostgreSQL ----------------------------------------------------------------

@dataclass
class PostgresBench:
    engine: Engine
    servers: Servers
    recommendations: Path
    work: Path
    model_version: int = 0
    run_id: str = ""

    def setup(self) -> None:
        from jobs.platform.db import upgrade

        upgrade(self.engine)
        model = registry.register(self.engine, registry.NewModel(
            created_by="bench", trained_as_of=BENCH_DATE, params={}, metrics={},
            data_snapshot={}, code_version="bench", artifact_uri="file:///bench"))
        self.model_version = model.version
        self.run_id = runs.start(self.engine, "nightly", BENCH_DATE, model.version)

    def ours(self) -> tuple[float, int]:
        """Our load: a staged table written block by block (no index yet), then dropped."""
        publisher = PostgresPublisher(self.engine)
        version = publisher.allocate(self.run_id, self.model_version, BENCH_DATE, 50)
        publisher.prepare(version)
        try:
            seconds = timed(lambda: publisher.write_blocks(read_blocks(self.recommendations)))
        finally:
            publisher.abort()
        return seconds, publisher.rows

    def fresh_peer_table(self) -> str:
        with cursor(self.engine) as cur:
            cur.execute(f"DROP TABLE IF EXISTS batchscore.{PEER_TABLE}")
            cur.execute(composed(cur, f"CREATE TABLE batchscore.{PEER_TABLE}"
                        " (LIKE {schema}.prediction_lists INCLUDING ALL)"))
        return f"batchscore.{PEER_TABLE}"

    def drop_peer_table(self) -> None:
        with cursor(self.engine) as cur:
            cur.execute(f"DROP TABLE IF EXISTS batchscore.{PEER_TABLE}")

    def jdbc(self, spark: SparkSession) -> float:
        """Spark's JDBC writer, as its documentation configures a bulk load."""
        from pyspark.sql import functions as F

        table = self.fresh_peer_table()
        rows = (spark.read.parquet(str(self.recommendations))
                .where(F.size("items") > 0)
                .select(F.lit(1).cast("long").alias("publish_id"), "user_id",
                        F.col("items").cast("array<int>").alias("item_ids"),
                        F.col("scores").alias("scores")))
        try:
            return timed(lambda: rows.write.jdbc(
                self.servers.jdbc_url, table, mode="append",
                properties={"driver": "org.postgresql.Driver", "batchsize": "10000"}))
        finally:
            self.drop_peer_table()

    def copy_file(self) -> Path:
        """The same rows as a tab-separated file for ``psql \\copy`` (not timed): one
        line per user, its arrays in PostgreSQL's text form (``{3,1,2}``)."""
        path = self.work / "rows.tsv"
        with path.open("w") as out:
            for block in read_blocks(self.recommendations):
                for user, items, scores in zip(*(block.column(name).to_pylist() for name in
                                                 ("user_id", "items", "scores")), strict=True):
                    if items:
                        out.write(f"1\t{user}\t{{{','.join(map(str, items))}}}"
                                  f"\t{{{','.join(map(repr, scores))}}}\n")
        return path

    def copy_file_of(self, publish_id: int) -> Path:
        """:meth:`copy_file` for lists already published as ``publish_id``: the server
        writes them out with ``COPY ... TO STDOUT`` (PostgreSQL's own text form of the
        arrays), several times faster than formatting them in Python."""
        path = self.work / "rows.tsv"
        with path.open("wb") as out, cursor(self.engine) as cur:
            cur.copy_expert(composed(
                cur, "COPY (SELECT 1, user_id, item_ids, scores FROM {schema}.prediction_lists"
                     " WHERE publish_id = {publish_id}) TO STDOUT",
                publish_id=sql.Literal(publish_id)), out)
        return path

    def psql_copy(self, path: Path) -> float:
        psql = require_tool("psql")
        table = self.fresh_peer_table()
        # The password goes through psql's environment, never its command line.
        url = make_url(self.servers.database_url)
        env = {**os.environ, "PGPASSWORD": url.password or ""}
        without_password = URL.create("postgresql", url.username, None, url.host, url.port,
                                      url.database).render_as_string()
        command = [psql, without_password, "-v", "ON_ERROR_STOP=1", "-q", "-c",
                   f"\\copy {table} (publish_id, user_id, item_ids, scores)"
                   f" FROM '{path}'"]
        try:
            return timed(lambda: subprocess.run(command, check=True, capture_output=True,
                                                env=env))
        finally:
            self.drop_peer_table()


def postgres_pairs(spark: SparkSession, bench: PostgresBench) -> list[Pair]:
    bench.setup()
    ours_seconds, rows = bench.ours()
    pairs = []
    if JDBC_JAR.exists():
        jdbc_seconds = bench.jdbc(spark)
        pairs.append(Pair.of("postgres load vs Spark JDBC", rows / ours_seconds,
                             rows / jdbc_seconds, "rows/s", higher_is_better=True,
                             peer_name="DataFrame.write.jdbc (batchsize 10000, "
                                       "reWriteBatchedInserts)", target=3,
                             note=f"{rows:,} rows; ours {ours_seconds:.1f}s, peer "
                                  f"{jdbc_seconds:.1f}s; {bench.servers.where}"))
    else:
        logger.warning("skipping the Spark JDBC pair: %s", JDBC_HINT)
        print(f"skipped the Spark JDBC pair: {JDBC_HINT}")
    copy_seconds = bench.psql_copy(bench.copy_file())
    pairs.append(Pair.of("postgres load vs psql \\copy", rows / ours_seconds,
                         rows / copy_seconds, "rows/s", higher_is_better=True,
                         peer_name="psql \\copy FROM a file", target=0.8,
                         note=f"{rows:,} rows; ours {ours_seconds:.1f}s (from Parquet), peer "
                              f"{copy_seconds:.1f}s (from text); both into an unindexed table"))
    return pairs


# -- Redis ---------------------------------------------------------------------

@dataclass
class RedisBench:
    servers: Servers
    recommendations: Path
    work: Path
    publish_id: int = REDIS_BENCH_PUBLISH_ID
    # The benchmark's own database holds one deployment's keys, under the default prefix.
    keys: Keyspace = field(default_factory=Keyspace)

    @property
    def client(self) -> redis.Redis:
        return connect(self.servers.redis_url)

    @property
    def cluster(self) -> bool:
        return is_cluster_url(self.servers.redis_url)

    def version(self) -> PublishVersion:
        return PublishVersion(publish_id=self.publish_id, run_id="bench",
                              model_version=1, logical_date=BENCH_DATE, k=50)

    def clear(self, timeout: float = 120) -> None:
        """Delete the benchmark's keys and wait until Redis has freed them in the
        background, so that the next load does not share the server with that.

        ``redis-cli --pipe`` loads the users' keys without a users record, so
        they are deleted by the scoring output's user ids too (on each key's node,
        on a cluster)."""
        client = self.client
        retire_version(client, self.keys, self.publish_id)
        with NodeWriters(client) as writers:
            for block in read_blocks(self.recommendations, columns=["user_id"]):
                writers.run(("UNLINK",),
                            self.keys.user_keys(self.publish_id, block.column("user_id")))
        client.delete(self.keys.pointer_key())
        deadline = time.monotonic() + timeout
        while (sum(int(node.info("memory").get("lazyfree_pending_objects", 0))
                   for node in node_clients(client))
               and time.monotonic() < deadline):
            time.sleep(0.1)

    def publish(self, client: redis.Redis) -> tuple[float, int]:
        """Seconds to write the version's user keys as a nightly does, and the users."""
        publisher = RedisPublisher(client, self.keys)
        publisher.prepare(self.version())
        seconds = timed(lambda: publisher.write_blocks(
            read_blocks(self.recommendations, columns=REDIS_COLUMNS)))
        return seconds, publisher.users

    def load(self) -> tuple[float, int]:
        """:meth:`publish` after clearing the last load's keys."""
        self.clear()
        return self.publish(self.client)

    def ours(self) -> tuple[float, int, dict[str, float]]:
        client = self.client
        self.clear()
        before = int(client.info("memory")["used_memory"])
        seconds, users = self.publish(client)
        after = int(client.info("memory")["used_memory"])
        return seconds, users, self.memory(client, users, after - before)

    def encode(self) -> float:
        """Seconds to encode every user's value from the lists, on one core, as the
        scoring job's tasks do."""
        return sum(timed(lambda block=block: with_redis_value(block))
                   for block in read_blocks(self.recommendations))

    def memory(self, client: redis.Redis, users: int, delta: int, sample: int = 500
               ) -> dict[str, float]:
        """Bytes per user: INFO delta, MEMORY USAGE of a sample of our keys, and of the
        same users' lists stored as a plain JSON string (json.dumps of objects)."""
        rng = random.Random(1)
        picked = sorted(rng.sample(range(1, users + 1), min(sample, users)))
        pipe = client.pipeline(transaction=False)
        for user in picked:
            pipe.memory_usage(self.keys.user_key(self.publish_id, user), samples=0)
            pipe.get(self.keys.user_key(self.publish_id, user))
        replies = pipe.execute()
        ours = replies[0::2]
        values = replies[1::2]
        plain_pipe = client.pipeline(transaction=False)
        for user, value in zip(picked, values, strict=True):
            plain = json.dumps([{"item_id": item, "score": score}
                                for item, score in contract.decode_items(value)])
            key = f"bench:plain-json:u:{user}"
            plain_pipe.set(key, plain)
            plain_pipe.memory_usage(key, samples=0)
            plain_pipe.delete(key)
        plain = plain_pipe.execute()[1::3]
        return {"info_delta_per_user": delta / users,
                "memory_usage_per_user": statistics.mean(ours),
                "value_bytes_per_user": statistics.mean(len(value) for value in values),
                "plain_json_memory_usage_per_user": statistics.mean(plain)}

    def pipe_file(self) -> Path:
        """The same keys and values as the same ``SET ... EX`` commands our load sends,
        in the Redis protocol (not timed)."""
        path = self.work / "keys.resp"
        with path.open("wb") as out:
            for block in read_blocks(self.recommendations, columns=REDIS_COLUMNS):
                keys = self.keys.user_keys(self.publish_id, block.column("user_id"))
                for chunk, _ in set_with_expiry_commands(
                        keys, block.column(contract.VALUE_COLUMN), STAGED_TTL_SECONDS,
                        PIPELINE_BATCH):
                    out.write(chunk)
        return path

    def redis_cli_pipe(self, path: Path) -> float:
        host, port, db = self.servers.redis_host_port_db
        user, auth = self.servers.redis_cli_auth
        command = [require_tool("redis-cli"), "-h", host, "-p", str(port), "-n", str(db),
                   *user, "--pipe"]
        self.clear()
        with path.open("rb") as source:
            start = time.perf_counter()
            done = subprocess.run(command, stdin=source, check=True, capture_output=True,
                                  text=True, env={**os.environ, **auth})
            seconds = time.perf_counter() - start
        if "errors: 0" not in done.stdout:
            raise RuntimeError(f"redis-cli --pipe reported errors: {done.stdout[-500:]}")
        return seconds


def redis_pairs(bench: RedisBench, reader_requests: int) -> tuple[list[Pair], dict[str, Any]]:
    """Each load :data:`REDIS_REPEATS` times, taking turns, and the median of each
    (one load is a fraction of a second at the default size); the reader is
    measured on the keys of our last load."""
    pipe_file = bench.pipe_file()
    ours_runs, pipe_runs = [], []
    for _ in range(REDIS_REPEATS):
        pipe_runs.append(bench.redis_cli_pipe(pipe_file))
        seconds, users, memory = bench.ours()
        ours_runs.append(seconds)
    ours_seconds, pipe_seconds = statistics.median(ours_runs), statistics.median(pipe_runs)
    encode_seconds = bench.encode()
    reader = reader_pairs(bench, users, reader_requests)
    bench.clear()
    pairs = [
        Pair.of("redis load vs redis-cli --pipe", users / ours_seconds, users / pipe_seconds,
                "keys/s", higher_is_better=True,
                peer_name="redis-cli --pipe of the same SET ... EX commands",
                target=0.8,
                note=f"{users:,} keys, median of {REDIS_REPEATS} loads each; ours "
                     f"{ours_seconds:.2f}s from the scoring output "
                     f"(values encoded by the scoring job), peer {pipe_seconds:.2f}s from a "
                     f"ready protocol file; {bench.servers.where}; encoding the values "
                     f"takes {encode_seconds:.2f}s on one core, spread over the scoring "
                     f"job's tasks"),
        Pair.of("redis memory per user", memory["memory_usage_per_user"],
                memory["plain_json_memory_usage_per_user"], "bytes",
                higher_is_better=False, peer_name="plain JSON string per user",
                note="MEMORY USAGE of 500 sampled keys; INFO used_memory delta "
                     f"{memory['info_delta_per_user']:.0f} B/user; value itself "
                     f"{memory['value_bytes_per_user']:.0f} B"),
        *reader,
    ]
    return pairs, {"redis_memory": memory, "redis_encode_seconds": encode_seconds}


def node_clients(client: redis.Redis) -> list[redis.Redis]:
    """The client itself for one server; a plain client of every node of a cluster."""
    if is_cluster(client):
        return [client.get_redis_connection(node)  # type: ignore[attr-defined]
                for node in client.get_nodes()]  # type: ignore[attr-defined]
    return [client]


@contextmanager
def benchmark_user(client: redis.Redis, servers: Servers, keys: str) -> Iterator[list[str]]:
    """redis-benchmark's credentials on a server that asks for them: it reads no password
    from its environment, so it gets a user of its own, allowed only GET of the keys the
    pattern ``keys`` matches (and, on a cluster, to learn its nodes), with a password made
    for this run and dropped with the user afterwards; on every node of a cluster, as
    ACLs are not shared between nodes."""
    if not servers.redis_cli_auth[0]:
        yield []
        return
    password = secrets.token_urlsafe(16)
    nodes = node_clients(client)
    rules = ["+cluster|nodes", "+cluster|slots"] if is_cluster(client) else []
    for node in nodes:
        node.execute_command("ACL", "SETUSER", BENCH_USER, "reset", "on", f">{password}",
                             f"~{keys}", "-@all", "+get", "+ping", "+select", *rules)
    try:
        yield ["--user", BENCH_USER, "-a", password]
    finally:
        for node in nodes:
            node.execute_command("ACL", "DELUSER", BENCH_USER)


def redis_benchmark_latencies(csv_output: str) -> tuple[float, float]:
    """p50 and p99 in ms from ``redis-benchmark --csv``'s output of one test: its last
    two lines, the header and the test's row (any warnings come before them)."""
    header, row = [line for line in csv_output.splitlines() if line.strip()][-2:]
    fields = dict(zip(json.loads(f"[{header}]"), json.loads(f"[{row}]"), strict=True))
    return float(fields["p50_latency_ms"]), float(fields["p99_latency_ms"])


def cluster_benchmark_key(keys: Keyspace) -> str:
    """The key ``redis-benchmark --cluster`` is given to GET: it rewrites ``{tag}`` in it,
    for each connection, to a hash tag of a slot of the master that connection reads
    from, so the key it reads is no user's and the GET finds nothing."""
    return f"{keys.namespace}:bench:{{tag}}"


def redis_benchmark_get(bench: RedisBench, client: redis.Redis, key: str, connections: int,
                        requests: int) -> tuple[float, float]:
    """p50 and p99 in ms of ``redis-benchmark`` GET of ``key`` (on a cluster,
    :func:`cluster_benchmark_key` instead) on ``connections`` connections."""
    host, port, db = bench.servers.redis_host_port_db
    if bench.cluster:
        key = cluster_benchmark_key(bench.keys)
        target, allowed = ["--cluster"], key.replace("{tag}", "{*")
    else:
        target, allowed = ["--dbnum", str(db)], key
    with benchmark_user(client, bench.servers, allowed) as auth:
        done = subprocess.run(
            [require_tool("redis-benchmark"), "-h", host, "-p", str(port), *target, *auth,
             "-c", str(connections), "-n", str(requests), "--csv", "GET", key],
            check=True, capture_output=True, text=True)
    return redis_benchmark_latencies(done.stdout)


# Concurrent readers in the reader pairs, as redis-benchmark's -c; ours spreads them
# over one process per core (a product service's workers), threads within each.
READER_CONNECTIONS = (1, 50)
READER_TURNS = 3
READER_P99_TARGET = 0.5


def reader_pairs(bench: RedisBench, users: int, requests: int, name: str = "reader latency"
                 ) -> list[Pair]:
    """``get_recommendations`` latency against ``redis-benchmark`` GET of one user key (on a
    cluster, ``redis-benchmark --cluster``: :func:`cluster_benchmark_key`), at each of
    :data:`READER_CONNECTIONS` concurrent connections, :data:`READER_TURNS` turns each
    taken in turns, medians of each side's p50 and p99; the pairs are named ``name``."""
    client = bench.client
    publisher = RedisPublisher(client, bench.keys)
    publisher.prepare(bench.version())
    publisher.users = users
    publisher.write_fallback(pa.table({"item_id": [1, 2, 3], "score": [3.0, 2.0, 1.0]}))
    publisher.write_meta()
    serve(client, bench.keys, bench.publish_id, expected_keys=users + 2)
    key = bench.keys.user_key(bench.publish_id, 1).decode()
    pairs = []
    for connections in READER_CONNECTIONS:
        ours, peer = [], []
        for _ in range(READER_TURNS):
            ours.append(concurrent_reads(bench.servers.redis_url, bench.keys, users, requests,
                                         connections))
            peer.append(redis_benchmark_get(bench, client, key, connections, requests))
        processes = min(connections, os.cpu_count() or 1)
        note = (f"{requests:,} requests, {connections} connection(s) "
                f"({processes} process(es) x {connections // processes} thread(s)), loopback, "
                f"medians of {READER_TURNS} turns; ours is one GET of the user's key (the "
                "pointer kept for 1 s), then binary decoding"
                + ("; redis-benchmark --cluster's GET finds no key (it rewrites the key's "
                   "{tag} per connection)" if bench.cluster else ""))
        peer_name = (f"redis-benchmark{' --cluster' if bench.cluster else ''} GET "
                     f"-c {connections}")
        for index, percentile in ((0, "p50"), (1, "p99")):
            pairs.append(Pair.of(
                f"{name} {percentile}, {connections} connection(s)",
                statistics.median(run[index] for run in ours),
                statistics.median(run[index] for run in peer), "ms", higher_is_better=False,
                peer_name=peer_name, note=note if index == 0 else "",
                # The p99 within 2x of redis-benchmark's.
                target=READER_P99_TARGET if percentile == "p99" else None))
    return pairs


def concurrent_reads(url: str, keys: Keyspace, users: int, requests: int,
                     connections: int) -> tuple[float, float]:
    """p50 and p99 in ms of ``requests`` reads of random users through
    :class:`jobs.client.RecommendationClient`, ``connections`` at once: one process per
    core (started afresh, not forked from this process and its threads), each with its
    share of threads and a client each."""
    import multiprocessing

    processes = min(connections, os.cpu_count() or 1)
    threads = connections // processes
    each = requests // (processes * threads)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        latencies = pool.starmap(reader_process, [(url, keys.prefix, users, each, threads, seed)
                                                  for seed in range(processes)])
    merged = np.concatenate(latencies) * 1000
    return float(np.percentile(merged, 50)), float(np.percentile(merged, 99))


def reader_process(url: str, prefix: str, users: int, requests: int, threads: int,
                   seed: int) -> np.ndarray:
    """One reader process's latencies in seconds: ``threads`` threads, ``requests`` reads
    each, started together."""
    import threading

    from jobs.client import RecommendationClient

    start = threading.Barrier(threads)
    results: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def read(number: int) -> None:
        try:
            reader = RecommendationClient.from_url(url, prefix)
            rng = random.Random(seed * 1000 + number)
            reader.get_recommendations(1)  # connected, the pointer read: as in steady state
            start.wait()
            for _ in range(requests):
                user = rng.randint(1, users)
                began = time.perf_counter()
                recs = reader.get_recommendations(user, k=10)
                results[number].append(time.perf_counter() - began)
                if recs.source != "predictions":
                    raise RuntimeError(f"user {user} was not found in the benchmark's version")
        except BaseException as err:  # re-raised by the process below
            errors.append(err)
            start.abort()

    workers = [threading.Thread(target=read, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return np.array([latency for result in results for latency in result])
