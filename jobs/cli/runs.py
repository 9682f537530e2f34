"""`batchscore nightly`, `status`, `runs list`, `runs show`, `versions list`, `reconcile` and
`rollback`: running the nightly, and what it served."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
from jobs.platform.config import DEFAULT_TOP_K, Settings


def add_commands(commands: Commands) -> None:
    nightly = commands.add("nightly", cmd_nightly, "score every active user and publish")
    nightly.add_argument("--run-date", type=parse_date, default=None,
                         help="score as of this date (default: the newest event's)")
    nightly.add_argument("--k", type=int, default=None,
                         help=f"items per user (default: BATCHSCORE_TOP_K, else {DEFAULT_TOP_K})")
    nightly.add_argument("--input", type=Path, default=None,
                         help="the day's new interactions to validate and load first "
                              "(default: validate the run date's events already in the table)")
    nightly.add_argument("--input-format", choices=["csv", "movielens", "parquet"],
                         default=None,
                         help="csv: header user_id,item_id,rating,timestamp; movielens: u.data; "
                              "parquet: the csv columns (default: parquet for a .parquet "
                              "file, else csv)")
    nightly.add_argument("--model-version", type=int, default=None,
                         help="pin a model version (default: the one serving as of the date)")
    nightly.add_argument("--serve-older-date", action="store_true",
                         help="serve this date even if a later date is being served")
    nightly.add_argument("--allow-future-date", action="store_true",
                         help="run a date after today (UTC), which is refused otherwise: it "
                              "would take over serving; its events count as on time up to "
                              "the end of the date")
    trial = nightly.add_mutually_exclusive_group()
    trial.add_argument("--shadow", type=int, default=None, metavar="VERSION",
                       help="score this model version and store it beside the served one "
                            "without serving it; report how it differs")
    trial.add_argument("--canary", type=int, default=None, metavar="VERSION",
                       help="serve this model version to --canary-fraction of the users "
                            "(stable hash of the user id), the serving model to the rest")
    nightly.add_argument("--canary-fraction", type=float, default=None, metavar="F",
                         help="share of users for --canary (default: canary.default_fraction "
                              "in schemas/contracts.json)")
    nightly.add_argument("--force", action="store_true",
                         help="serve a rejected or rolled-back model given by --model-version "
                              "or --canary (needs --reason)")
    nightly.add_argument("--reason", default=None,
                         help="why --force: recorded in the model's status history")

    reconcile = commands.add("reconcile", cmd_reconcile,
                             "repair both stores after a crash: point Redis at what PostgreSQL "
                             "serves, remove versions Redis no longer holds, fail runs whose "
                             "process is gone, drop stale staged tables and folders")
    reconcile.add_argument("--json", action="store_true")
    status = commands.add("status", cmd_status, "what is served and where")
    status.add_argument("--json", action="store_true")
    runs = commands.subgroup("runs", "the run history")
    runs_list = runs.add("list", cmd_runs_list, "list recent runs")
    runs_list.add_argument("--json", action="store_true")
    runs_list.add_argument("--limit", type=int, default=20, help="runs at most")
    runs_show = runs.add("show", cmd_runs_show,
                         "one run's record and its monitoring metrics (bi.run_metrics), the "
                         "levels they cross marked")
    runs_show.add_argument("run_id", metavar="RUN_ID")
    runs_show.add_argument("--json", action="store_true")
    versions = commands.subgroup("versions", "published versions of the predictions")
    versions_list = versions.add("list", cmd_versions_list,
                                 "published versions, newest first: the ids rollback --to and "
                                 "validate --predictions take")
    versions_list.add_argument("--json", action="store_true")
    versions_list.add_argument("--limit", type=int, default=20, help="versions at most")
    rollback = commands.add("rollback", cmd_rollback,
                            "serve the previously served version again, in Postgres and Redis")
    rollback.add_argument("--reason", required=True, help="why (recorded with who did it)")
    rollback.add_argument("--to", type=int, default=None, metavar="PUBLISH_ID",
                          help="a kept published version instead of the previous one "
                               "(`batchscore versions list`)")


def cmd_nightly(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.inputs import NothingToScoreError
    from jobs.orchestration import nightly
    from jobs.orchestration.run_state import NightlyConfig

    engine = database(settings)
    run_date = run_date_or_newest(engine, args.run_date)
    k = settings.top_k if args.k is None else args.k
    if k < 1:
        raise CommandError(f"--k must be at least 1, got {k}")
    if args.canary_fraction is not None and args.canary is None:
        raise CommandError("--canary-fraction goes with --canary VERSION")
    if args.canary_fraction is not None:
        from jobs.contracts.canary import check_fraction

        try:
            check_fraction(args.canary_fraction)
        except ValueError as err:
            raise CommandError(f"--canary-fraction: {err}") from None
    if args.shadow is not None and (args.input is not None or args.model_version is not None):
        raise CommandError("a shadow run scores the interactions already loaded with the "
                           "version given; drop --input and --model-version")
    if args.force and not (args.reason or "").strip():
        raise CommandError("--force needs --reason: why the model serves despite its gates "
                           "is recorded")
    try:
        result = nightly.run(NightlyConfig(
            run_date=run_date, database_url=services.database_url(settings, services.WRITER),
            redis_url=services.redis_url(settings, "writer"), home=settings.home, k=k,
            spark_master=settings.spark_master,
            input_path=args.input, input_format=args.input_format,
            model_version=args.model_version, serve_older_date=args.serve_older_date,
            allow_future_date=args.allow_future_date,
            shadow_version=args.shadow, canary_version=args.canary,
            canary_fraction=args.canary_fraction,
            force=args.force, reason=args.reason, names=settings.names,
            alerts=settings.alerts, prometheus=settings.prometheus,
            history_uri=settings.history_uri, keep_versions=settings.keep_versions,
            empty_day=settings.empty_day,
        ))
    except NothingToScoreError as nothing:
        # BATCHSCORE_EMPTY_DAY=skip: the run is recorded as skipped, an alert is raised,
        # and the served version stays.
        print(f"{nothing}\nan empty-day alert was raised; the run is recorded as skipped "
              "(BATCHSCORE_EMPTY_DAY=fail fails it instead)")
        return 0
    if result.shadow is not None:
        differential = result.shadow.get("differential")
        print(f"run {result.run_id}: shadow version {result.publish_id} of model "
              f"{result.model_version} for {run_date} stored beside the served one, not served "
              f"({result.stats.scored_users} users, {result.rows} rows)")
        if differential:
            print(f"  vs served version {result.shadow['compared_with']} on "
                  f"{differential['users']} users: overlap@{differential['k']} "
                  f"{differential['overlap_at_k']:.3f}, rank correlation "
                  f"{differential['rank_correlation']:.3f}, score shift (KS) "
                  f"{differential['score_ks']:.3f}")
        else:
            print("  nothing served to compare with")
        print_report(result.report)
        return 0
    print(f"run {result.run_id}: published version {result.publish_id} for {run_date} "
          f"(model {result.model_version}): {result.stats.scored_users} users, "
          f"{result.rows} rows{'' if result.served else '; not served, a later date is'}")
    if result.stats.users_without_factors:
        print(f"  {result.stats.users_without_factors} active users are unknown to the model "
              "and get the popularity list")
    if result.canary:
        print(f"  canary: model {result.canary['model_version']} serves "
              f"{result.canary.get('users', 0)} users ({result.canary['fraction']:.0%} by "
              f"user id hash; {settings.names.bi_schema}.canary_users, "
              f"publish_id = {result.publish_id})")
    if result.input_rejected:
        print(f"  {result.input_rejected} input rows failed the contract and were quarantined "
              f"({settings.names.bi_schema}.rejects, run_id = '{result.run_id}')")
    for suite, url in result.data_docs.items():
        print(f"  {suite} validation: {url}")
    print_monitoring(result.run_id, result.monitoring)
    print_report(result.report)
    return 0


def print_report(path: str | None) -> None:
    print(f"  report: {path}" if path else "  report: not written (see the log); "
          f"`{command_name()} report` tries again")


def print_monitoring(run_id: str, monitoring: dict[str, Any] | None) -> None:
    """The monitor step's outcome for a person: what failed, or the levels crossed."""
    from jobs.monitoring.thresholds import Crossing

    if not monitoring:
        return
    if monitoring.get("error"):
        print(f"  monitoring failed, the version stays published: {monitoring['error']}")
        return
    for crossing in monitoring["crossings"]:
        print(f"  {crossing['level'].upper()}: {Crossing(**crossing).describe()}")
    print(f"  metrics: `{command_name()} runs show {run_id}`"
          + ("; a retrain level is crossed" if monitoring["retrain"] else ""))


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.redis import Keyspace
    from jobs.orchestration import nightly

    report = nightly.reconcile(database(settings), services.redis_url(settings, "writer"),
                               Keyspace(settings.names.redis_prefix), settings.home)
    if args.json:
        print_json(report.to_json())
        return 0
    for line in report.lines() or [f"both stores agree on version {report.postgres_serves}; "
                                   "nothing to do"]:
        print(line)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.orchestration.status import status

    record = status(settings)
    if args.json:
        print_json(record)
        return 0
    print_status(record)
    return 0


def print_status(record: dict[str, Any]) -> None:
    """The status record for a person."""
    print(f"home:      {record['home']}")
    print(f"postgres:  {record['database_url']}"
          f"{' (embedded)' if record['embedded']['postgres'] else ''}")
    print(f"redis:     {record['redis_url']}{' (embedded)' if record['embedded']['redis'] else ''}"
          f", key prefix {record['redis_prefix']!r}")
    print(f"data:      {record['interactions']} interactions")
    print(f"model:     {record['serving_model'] or 'none serving'}")
    served = record["postgres_served"]
    if served:
        print(f"served:    version {served['publish_id']} for {served['logical_date']} "
              f"(run {served['run_id']}, {served['users']} users)")
    else:
        print("served:    nothing published yet")
    if record["stores_disagree"]:
        print(f"WARNING:   the stores disagree: {record['stores_disagree']}; run "
              f"`{command_name()} reconcile`")


def cmd_runs_list(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.platform import runs

    if args.limit < 1:
        raise CommandError(f"--limit must be at least 1, got {args.limit}")
    records = [run.to_json() for run in runs.list_runs(database(settings), limit=args.limit)]
    if args.json:
        print_json(records)
        return 0
    for run in records:
        empty = runs.empty_day_note(run["stats"])
        print(f"{run['run_id']:<40} {run['status']:<10} model {run['model_version'] or '-':<4}"
              f" {f'[{empty}] ' if empty else ''}{run['error'] or ''}")
    return 0


def cmd_runs_show(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.monitoring.monitor import MonitorError, run_record
    from jobs.platform import runs

    try:
        record = run_record(database(settings), args.run_id)
    except MonitorError as err:
        raise CommandError(str(err)) from None
    if args.json:
        print_json(record)
        return 0
    run = record["run"]
    print(f"run:       {run['run_id']} ({run['status']})")
    print(f"date:      {run['logical_date']}, model {run['model_version'] or '-'}")
    print(f"started:   {run['started_at']} by {run['started_by']}")
    print(f"finished:  {run['finished_at'] or '-'}")
    if run["error"]:
        print(f"error:     {run['error']}")
    empty = runs.empty_day_note(run["stats"])
    if empty:
        print(f"input:     {empty} (BATCHSCORE_EMPTY_DAY={run['stats']['empty_day']['policy']})")
    if run["stats"].get("monitoring_error"):
        print(f"monitoring failed: {run['stats']['monitoring_error']}")
    if not record["metrics"]:
        print("metrics:   none stored (only a succeeded run is monitored)")
        return 0
    width = max(len(row["metric"]) for row in record["metrics"])
    segment_width = max(len(row["segment"]) for row in record["metrics"])
    print("metrics:")
    for row in record["metrics"]:
        mark = (f"  <- {row['level'].upper()} ({row['direction']} {row['threshold']:g})"
                if row["level"] else "")
        print(f"  {row['metric']:<{width}}  {row['segment']:<{segment_width}}"
              f"  {row['value']:>12.6g}{mark}")
    if record["retrain"]:
        print("a retrain level is crossed: the serving model should be retrained")
    return 0


def cmd_versions_list(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.publish.postgres import list_versions

    if args.limit < 1:
        raise CommandError(f"--limit must be at least 1, got {args.limit}")
    versions = list_versions(database(settings), limit=args.limit)
    if args.json:
        print_json(versions)
        return 0
    if not versions:
        print("nothing published yet")
    for version in versions:
        served = "  <- served" if version["is_serving"] else ""
        print(f"{version['publish_id']:>6}  {version['logical_date']}  {version['status']:<11}"
              f" model {version['model_version']:<4} {version['users'] or 0:>9} users"
              f"  run {version['run_id']}{served}")
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.redis import Keyspace
    from jobs.orchestration.rollback import roll_back
    from jobs.platform.provenance import current_user
    from jobs.platform.redis_client import connect

    if not args.reason.strip():
        raise CommandError("--reason must say why; it is recorded")
    done = roll_back(database(settings), connect(services.redis_url(settings, "writer")),
                     Keyspace(settings.names.redis_prefix), current_user(), args.reason,
                     to=args.to)
    print(f"rolled back version {done.rolled_back}; version {done.restored} (model "
          f"{done.restored_model}) is served again in postgres and redis")
    for model in done.rolled_back_models:
        print(f"  model version {model} marked rolled back: it will not be promoted "
              "automatically again")
    return 0
