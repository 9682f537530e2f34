"""`batchscore recs`, `bundle score`, `airflow ...`, `quickstart` and `bench`: reading
what is served, MLeap bundles, a local Airflow, the quick start and the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.cli.common import (
    CommandError,
    Commands,
    command_name,
    database,
    parse_date,
    print_json,
    run_date_or_newest,
)
from jobs.platform import services
from jobs.platform.config import Settings


def add_commands(commands: Commands) -> None:
    from jobs.bench.cli import add_arguments as add_bench_arguments
    from jobs.orchestration.local_airflow import DEFAULT_PORT

    recs = commands.add("recs", cmd_recs, "one user's recommendations, read from Redis")
    recs.add_argument("user_id", type=int)
    recs.add_argument("-k", type=int, default=10, help="items at most")
    recs.add_argument("--json", action="store_true")

    quickstart = commands.add("quickstart", cmd_quickstart,
                              "sample data -> train -> one nightly through Airflow, reusing "
                              "what is already there")
    quickstart.add_argument("--without-airflow", action="store_true",
                            help="run the nightly in this process instead of through Airflow")

    airflow = commands.subgroup("airflow", "a local Airflow with batchscore's DAGs")
    airflow_start = airflow.add("start", cmd_airflow_start,
                                "airflow standalone on 127.0.0.1, wired to batchscore's servers")
    airflow_start.add_argument("--port", type=int, default=DEFAULT_PORT,
                               help="the UI's port")
    airflow_nightly = airflow.add("nightly", cmd_airflow_nightly,
                                  "run the nightly DAG once for a date (airflow dags test)")
    airflow_nightly.add_argument("--run-date", type=parse_date, default=None,
                                 help="the day to score (default: the newest event's)")

    bundle = commands.subgroup("bundle", "MLeap bundles, scored without Spark")
    bundle_score = bundle.add("score", cmd_bundle_score,
                              "score a LeapFrame JSON file with an MLeap bundle and print the "
                              "transformed LeapFrame as JSON")
    bundle_score.add_argument("bundle", type=Path, help="a bundle: zip file or directory")
    bundle_score.add_argument("--frame", type=Path, required=True,
                              help="rows in MLeap's LeapFrame JSON (schema + rows)")
    bundle_score.add_argument("--runtime", choices=("python", "jvm"), default="python",
                              help="python: batchscore's reader (default); jvm: MLeap's own "
                                   "runtime 0.20.0 in a JVM started for the call (make install "
                                   "builds it)")

    add_bench_arguments(commands.add(
        "bench", cmd_bench,
        "benchmark scoring and publishing side by side with recommendForAllUsers, Spark's "
        "JDBC writer, psql \\copy and redis-cli --pipe; print the ratios"))


def cmd_recs(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.client import RecommendationClient

    if args.k < 1:
        raise CommandError(f"-k must be at least 1, got {args.k}")
    recs = RecommendationClient.from_url(services.redis_url(settings, "reader"),
                                         settings.names.redis_prefix
                                         ).get_recommendations(args.user_id, args.k)
    if args.json:
        print_json(recs.to_json())
        return 0
    print(f"user {recs.user_id}: {recs.source} from run {recs.run_id} "
          f"(model {recs.model_version})")
    for rank, item in enumerate(recs.items, start=1):
        print(f"  {rank:>3}. item {item.item_id:<8} score {item.score:.4f}")
    return 0


def cmd_quickstart(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.cli.runs import print_status
    from jobs.orchestration.quickstart import quickstart
    from jobs.orchestration.status import status

    result = quickstart(settings, through_airflow=not args.without_airflow,
                        say=lambda line: print(line, flush=True))
    print()
    print_status(status(settings))
    program = command_name()
    query = (f"SELECT * FROM {settings.names.bi_schema}.recommendations"
             f" WHERE user_id = {result.sample_user} "
             "ORDER BY rank LIMIT 10")
    print("\nRead one user's recommendations (from Redis):")
    print(f"  {program} recs {result.sample_user}")
    print("Query what BI sees (PostgreSQL):")
    print(f'  psql "$({program} db url)" -c "{query}"')
    return 0


def cmd_airflow_start(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.orchestration import local_airflow

    database(settings)
    return local_airflow.start(settings, args.port)


def cmd_airflow_nightly(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.orchestration import local_airflow

    run_date = run_date_or_newest(database(settings), args.run_date)
    done = local_airflow.run_nightly(settings, run_date)
    print(f"run {done.run_id} (Airflow): published version {done.publish_id} for {run_date}; "
          f"log: {done.log}")
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.bench.cli import run

    return run(args)


def cmd_bundle_score(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.bundles import mleap_runtime, reader
    from jobs.bundles.format import BundleError
    from jobs.bundles.leapframe import frame_to_text

    score_file = mleap_runtime.score_file if args.runtime == "jvm" else reader.score_file
    try:
        scored = score_file(args.bundle, args.frame)
    except (BundleError, mleap_runtime.MleapRuntimeError) as err:
        raise CommandError(str(err)) from None
    print(frame_to_text(scored))
    return 0
