"""``python -m jobs.bench`` / ``batchscore bench``: run the pairs, print the table, write JSON."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.bench.servers import bench_spark
from jobs.platform.config import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Size:
    users: int
    items: int
    rank: int
    k: int
    publish_users: int
    reader_requests: int
    # Events in PostgreSQL for the pair that reads a nightly's interactions.
    history_events: int


SIZES = {
    "small": Size(users=2_000, items=500, rank=8, k=10, publish_users=3_000,
                  reader_requests=1_000, history_events=50_000),
    "default": Size(users=200_000, items=20_000, rank=32, k=50, publish_users=300_000,
                    reader_requests=20_000, history_events=10_000_000),
    "large": Size(users=400_000, items=20_000, rank=32, k=50, publish_users=1_000_000,
                  reader_requests=100_000, history_events=100_000_000),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchscore bench",
        description="Benchmark scoring and publishing side by side with what users would "
                    "otherwise run, and print the ratios.")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=sorted(SIZES), default="default",
                        help="default finishes in a few minutes; large scores twice the users "
                             "and publishes 1,000,000; small is a quick check of the harness")
    parser.add_argument("--cluster-only", action="store_true",
                        help="instead: only the Redis Cluster pairs (publishing to three "
                             "masters vs one server, the read client vs redis-benchmark "
                             "--cluster), at --size; no Spark, no PostgreSQL")
    parser.add_argument("--history-events", type=int, default=None, metavar="N",
                        help="instead: only the interactions pair (the history vs a CSV "
                             "export and parse) at N events, e.g. 100000000; no Redis")
    parser.add_argument("--scale", action="store_true",
                        help="instead: the nightly steps end to end at 1,000,000 users x "
                             "20,000 items, rank 32, top 50 (heavy: about 15 minutes)")
    parser.add_argument("--layouts", action="store_true",
                        help="instead: PostgreSQL's row-per-rank and row-per-user layouts side "
                             "by side (load, index, size per version, BI queries), at "
                             "--layout-users users x K = 50 (default 1,000,000: about 10 "
                             "minutes)")
    parser.add_argument("--layout-users", type=int, default=1_000_000,
                        help="users per version for --layouts")
    parser.add_argument("--scale-users", type=int, default=1_000_000,
                        help="users of the --scale run (make bench-scale USERS=...)")
    parser.add_argument("--scale-items", type=int, default=20_000,
                        help="items of the --scale run (make bench-scale ITEMS=...)")
    parser.add_argument("--scale-turns", type=int, default=3,
                        help="turns of the nightly and of each floor in the --scale run, "
                             "taken in turn; each figure is their median (make bench-scale "
                             "TURNS=...)")
    parser.add_argument("--scale-servers", choices=("debian", "found"), default="debian",
                        help="the --scale run's servers: Debian's PostgreSQL 15 and Redis 7 "
                             "started under the scratch space for the run (the default), or "
                             "those the other benchmarks find: the system ones on 127.0.0.1 "
                             "when both answer, else the embedded ones (make bench-scale "
                             "SERVERS=found)")
    parser.add_argument("--rewrite-copies", action="store_true",
                        help="instead: what Redis copies while it rewrites its append-only "
                             "file during each publish step, Debian's Redis 7 and the "
                             "embedded one, at --rewrite-keys keys a version")
    parser.add_argument("--rewrite-keys", type=int, default=3_000_000,
                        help="users a version for --rewrite-copies")
    parser.add_argument("--quality", action="store_true",
                        help="instead: every family at its defaults and tuned, and the "
                             "popularity baseline, on the synthetic sample and on a real data "
                             "set (--dataset), then EASE's cost at --ease-items items")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="MovieLens 100K's ml-100k.inter for --quality (default: fetched "
                             "from PyPI's recbole 1.2.1 wheel into the home's bench/datasets)")
    parser.add_argument("--budget-minutes", type=float, default=5.0,
                        help="each data set's tuning budget for --quality (split between the "
                             "families)")
    parser.add_argument("--ease-items", type=int, default=20_000,
                        help="catalogue size of --quality's EASE cost measurement (0 skips it)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="scratch space (default: a temporary folder, removed after)")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(build_parser().parse_args(sys.argv[1:] if argv is None else argv))


def run(args: argparse.Namespace) -> int:
    from jobs.bench.servers import PEER_TOOLS, require_tool

    settings = Settings.from_env()
    if not (args.scale or args.quality or args.rewrite_copies
            or args.history_events is not None):
        # Before minutes of work, not after.
        for tool in ("redis-benchmark",) if args.cluster_only else PEER_TOOLS:
            require_tool(tool)
    work = Path(tempfile.mkdtemp(prefix="batchscore-bench-", dir=args.work_dir))
    try:
        if args.layouts:
            from jobs.bench.layouts import compare_layouts, print_layouts
            from jobs.bench.servers import resolve

            servers = resolve(settings)
            print(f"PostgreSQL layouts against the {servers.where}", flush=True)
            report = compare_layouts(servers.database_url, args.layout_users, 20_000, 50)
            print_layouts(report, args.layout_users, 50)
            out = settings.home / "bench" / "layouts.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
            print(f"written to {out}")
        elif args.rewrite_copies:
            from jobs.bench.rewrite import rewrite_copies

            copies = rewrite_copies(work, args.rewrite_keys)
            out = settings.home / "bench" / "rewrite.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"keys": args.rewrite_keys, "mib_copied": copies},
                                      indent=2) + "\n")
            print(f"written to {out}")
        elif args.quality:
            from jobs.bench.quality import run_quality

            run_quality(work, settings.home / "bench" / "datasets", args.dataset,
                        args.budget_minutes, args.ease_items)
        elif args.scale:
            from jobs.bench.scale import run_scale

            run_scale(settings, work, users=args.scale_users, items=args.scale_items,
                      turns=args.scale_turns, debian=args.scale_servers == "debian")
        elif args.history_events is not None:
            run_history_pair(settings, work, args.history_events)
        elif args.cluster_only:
            run_cluster_pairs(settings, work, SIZES[args.size], args.size)
        else:
            run_pairs(settings, work, SIZES[args.size], args.size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_pairs(settings: Settings, work: Path, size: Size, size_name: str) -> None:
    from jobs.bench import servers as bench_servers
    from jobs.bench.cluster_pairs import cluster_pairs
    from jobs.bench.history import history_pair
    from jobs.bench.pairs import (
        PostgresBench,
        RedisBench,
        postgres_pairs,
        redis_pairs,
        scorer_pair,
        top_k_pair,
    )
    from jobs.bench.results import table, write_json
    from jobs.bench.synthetic import synthetic_model, synthetic_recommendations
    from jobs.platform.db import engine_for

    servers = bench_servers.resolve(settings)
    print(f"benchmarking on this machine against the {servers.where}; size {size_name}",
          flush=True)
    spark = bench_spark("batchscore-bench")
    pairs = []
    details: dict = {"size": size_name, "servers": servers.where}
    try:
        model = synthetic_model(spark, work / "model", size.users, size.items, size.rank)
        print("1/6 scoring vs recommendForAllUsers", flush=True)
        pairs.append(scorer_pair(spark, model, size.users, size.items, size.k))
        print("2/6 top-k vs matrix multiply on one block", flush=True)
        pairs.append(top_k_pair(spark, model, size.k))
        recommendations = synthetic_recommendations(work / "recommendations",
                                                    size.publish_users, size.k, size.items)
        engine = engine_for(servers.database_url)
        print("3/6 PostgreSQL: ours, Spark JDBC, psql \\copy", flush=True)
        pairs.extend(postgres_pairs(spark, PostgresBench(engine, servers, recommendations,
                                                         work)))
        print(f"4/6 a nightly's interactions: the history vs CSV export and parse, "
              f"{size.history_events:,} events", flush=True)
        pairs.append(history_pair(spark, engine, work, size.history_events))
        engine.dispose()
        print("5/6 Redis: ours, redis-cli --pipe, reader latency", flush=True)
        redis_results, redis_details = redis_pairs(
            RedisBench(servers, recommendations, work), size.reader_requests)
        pairs.extend(redis_results)
        details.update(redis_details)
    finally:
        spark.stop()
    print(CLUSTER_STEP.format(step="6/6 "), flush=True)
    cluster, cluster_details = cluster_pairs(work, recommendations, size.reader_requests)
    details.update(cluster_details)
    print()
    print(table(pairs))
    print_cluster(cluster)
    out = settings.home / "bench" / "latest.json"
    write_json(pairs + cluster, out, details)
    print(f"\nwritten to {out}")


def run_history_pair(settings: Settings, work: Path, events: int) -> None:
    """The interactions pair alone (``--history-events``): printed, and written to the
    home's ``bench/history.json``."""
    from jobs.bench import servers as bench_servers
    from jobs.bench.history import history_pair
    from jobs.bench.results import table, write_json
    from jobs.platform.db import engine_for

    if events < 1:
        raise SystemExit(f"--history-events must be at least 1, got {events}")
    servers = bench_servers.resolve(settings)
    print(f"a nightly's interactions: the history vs CSV export and parse, {events:,} "
          f"events, against the {servers.where}", flush=True)
    spark = bench_spark("batchscore-bench-history")
    engine = engine_for(servers.database_url)
    try:
        pair = history_pair(spark, engine, work, events)
    finally:
        engine.dispose()
        spark.stop()
    print()
    print(table([pair]))
    out = settings.home / "bench" / "history.json"
    write_json([pair], out, {"events": events, "servers": servers.where})
    print(f"\nwritten to {out}")


CLUSTER_STEP = ("{step}Redis Cluster (3 masters, a replica each) vs one server: publish, "
                "reader latency vs redis-benchmark --cluster")


def print_cluster(pairs: list) -> None:
    from jobs.bench.results import table

    print("\nRedis Cluster (3 masters, a replica each; Debian's redis-server on both sides)")
    print(table(pairs))


def run_cluster_pairs(settings: Settings, work: Path, size: Size, size_name: str) -> None:
    """The Redis Cluster pairs alone (``--cluster-only``): printed, and written to the
    home's ``bench/cluster.json``."""
    from jobs.bench.cluster_pairs import cluster_pairs
    from jobs.bench.results import write_json
    from jobs.bench.synthetic import synthetic_recommendations

    print(CLUSTER_STEP.format(step="") + f"; size {size_name}", flush=True)
    recommendations = synthetic_recommendations(work / "recommendations",
                                                size.publish_users, size.k, size.items)
    pairs, details = cluster_pairs(work, recommendations, size.reader_requests)
    print_cluster(pairs)
    out = settings.home / "bench" / "cluster.json"
    write_json(pairs, out, {"size": size_name, **details})
    print(f"\nwritten to {out}")
