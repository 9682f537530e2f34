"""make bench's Redis Cluster pairs: a version's keys published to three masters against
one server, and the read client's latency against ``redis-benchmark --cluster``.

Both sides run Debian's ``redis-server``, started by the benchmark on loopback
under its scratch folder with the same persistence (append-only file, no
snapshots) and stopped afterwards: one server as the embedded one is started
(:class:`~jobs.platform.services.redis.EmbeddedRedis`), and a
:class:`~jobs.platform.services.redis_cluster.LocalRedisCluster` of three
masters with a replica each, stopped by the process ids its nodes wrote.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobs.bench.pairs import REDIS_REPEATS, RedisBench, reader_pairs
from jobs.bench.results import Pair
from jobs.bench.servers import Servers
from jobs.platform.names import Names
from jobs.platform.services.debian import require_redis_server
from jobs.platform.services.redis import EmbeddedRedis
from jobs.platform.services.redis_cluster import LocalRedisCluster

logger = logging.getLogger(__name__)

CLUSTER_MASTERS = 3
CLUSTER_REPLICAS = 1
# Publishing to the cluster at no less than 0.8x the users per second of one server.
CLUSTER_PUBLISH_TARGET = 0.8


@contextmanager
def one_server_and_cluster(work: Path) -> Iterator[tuple[Servers, Servers]]:
    """One Debian ``redis-server`` and a cluster of :data:`CLUSTER_MASTERS` masters with
    :data:`CLUSTER_REPLICAS` replica(s) each, under ``work``, for as long as the block
    runs; their administrators' URLs."""
    executable = require_redis_server()
    one = EmbeddedRedis(work / "redis-one", work, executable=executable)
    cluster = LocalRedisCluster(work / "redis-cluster", work, executable=executable,
                                masters=CLUSTER_MASTERS, replicas=CLUSTER_REPLICAS)
    try:
        one_url = one.ensure_running(Names(), "admin")
        cluster.start()
        yield (Servers.redis_only(one_url, "one Debian redis-server on loopback"),
               Servers.redis_only(cluster.admin_url(),
                                  f"a Redis Cluster of {CLUSTER_MASTERS} masters with "
                                  f"{CLUSTER_REPLICAS} replica(s) each on loopback"))
    finally:
        cluster.stop()
        one.stop()


def cluster_pairs(work: Path, recommendations: Path, reader_requests: int
                  ) -> tuple[list[Pair], dict[str, Any]]:
    """The same version's keys published by :class:`~jobs.publish.redis.RedisPublisher` to
    the cluster and to one server, :data:`~jobs.bench.pairs.REDIS_REPEATS` loads each
    taking turns, medians compared; then the read client on the cluster against
    ``redis-benchmark --cluster`` (:func:`~jobs.bench.pairs.reader_pairs`)."""
    with one_server_and_cluster(work) as (one_server, cluster):
        one = RedisBench(one_server, recommendations, work)
        spread = RedisBench(cluster, recommendations, work)
        one_runs, cluster_runs = [], []
        for _ in range(REDIS_REPEATS):
            seconds, users = one.load()
            one_runs.append(seconds)
            seconds, users = spread.load()
            cluster_runs.append(seconds)
        logger.info("publish: one server %s s, cluster %s s", one_runs, cluster_runs)
        reader = reader_pairs(spread, users, reader_requests, name="cluster reader latency")
    one_seconds, cluster_seconds = statistics.median(one_runs), statistics.median(cluster_runs)
    publish = Pair.of(
        "cluster publish vs one server", users / cluster_seconds, users / one_seconds,
        "users/s", higher_is_better=True, peer_name="the same publish to one redis-server",
        target=CLUSTER_PUBLISH_TARGET,
        note=f"{users:,} users, median of {REDIS_REPEATS} loads each taken in turns; "
             f"cluster {cluster_seconds:.2f}s ({CLUSTER_MASTERS} masters in parallel, each "
             f"block confirmed by their replicas), one server {one_seconds:.2f}s; Debian's "
             "redis-server on loopback, append-only file on both")
    return [publish, *reader], {"cluster_publish_seconds": {"one_server": one_runs,
                                                            "cluster": cluster_runs}}
