"""The ``batchscore`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobs.bench.cli import add_arguments as add_bench_arguments
from jobs.platform import services
from jobs.platform.config import ConfigError, Settings

logger = logging.getLogger(__name__)

SAMPLE = {"users": 3000, "items": 800, "days": 60, "seed": 7}


class CommandError(RuntimeError):
    """A command cannot go on; the message tells the user what to do."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # yoyo logs each statement of a migration at INFO; upgrade() names each migration.
    for noisy in ("py4j", "pyspark", "great_expectations", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env()
        return int(args.handler(settings, args) or 0)
    except EXPECTED_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchscore",
        description="Nightly per-user recommendations, published to Postgres and Redis.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Callable[..., int | None], help_text: str,
                parent: Any = commands) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    svc = commands.add_parser("services", help="the embedded PostgreSQL and Redis")
    svc_commands = svc.add_subparsers(title="commands", metavar="COMMAND", required=True)
    command("start", cmd_services_start, "start the embedded servers", svc_commands)
    command("stop", cmd_services_stop, "stop the embedded servers", svc_commands)

    db = commands.add_parser("db", help="the batchscore database")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND", required=True)
    command("upgrade", cmd_db_upgrade, "apply the migrations in sql/", db_commands)
    command("url", cmd_db_url, "print the URL of the database in use", db_commands)

    data = commands.add_parser("data", help="interactions in")
    data_commands = data.add_subparsers(title="commands", metavar="COMMAND", required=True)
    gen = command("generate", cmd_data_generate, "generate synthetic interactions and load them",
                  data_commands)
    gen.add_argument("--users", type=int, required=True)
    gen.add_argument("--items", type=int, required=True)
    gen.add_argument("--days", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--end-date", type=parse_date, default=None,
                     help="last day of events (default: today, UTC)")
    gen.add_argument("--replace", action="store_true", help="empty the table first")
    load = command("load", cmd_data_load, "load an interactions file", data_commands)
    load.add_argument("path", type=Path)
    load.add_argument("--format", choices=["movielens", "csv"], required=True,
                      help="movielens: u.data (tab-separated user, item, rating, unix time); "
                           "csv: a header naming the columns")
    load.add_argument("--user-col", default="user_id")
    load.add_argument("--item-col", default="item_id")
    load.add_argument("--rating-col", default="rating")
    load.add_argument("--timestamp-col", default="timestamp",
                      help="unix seconds or ISO 8601 (UTC unless an offset is given)")
    load.add_argument("--delimiter", default=",")
    load.add_argument("--replace", action="store_true", help="empty the table first")

    train = command("train", cmd_train, "train ALS and register a model version")
    train.add_argument("--as-of", type=parse_date, default=None,
                       help="train on events up to this date (default: the newest event's)")
    for option, kind in (("--holdout-days", int), ("--rank", int), ("--reg-param", float),
                         ("--alpha", float), ("--max-iter", int)):
        train.add_argument(option, type=kind, default=None,
                           help="see `spark-submit jobs/training/train.py --help` for the default")

    nightly = command("nightly", cmd_nightly, "score every active user and publish")
    nightly.add_argument("--run-date", type=parse_date, default=None,
                         help="score as of this date (default: the newest event's)")
    nightly.add_argument("--k", type=int, default=None, help="items per user (default 50)")
    nightly.add_argument("--input", type=Path, default=None,
                         help="the day's new interactions to validate and load first "
                              "(default: validate the run date's events already in the table)")
    nightly.add_argument("--input-format", choices=["csv", "movielens"], default="csv",
                         help="csv: header user_id,item_id,rating,timestamp; movielens: u.data")
    nightly.add_argument("--model-version", type=int, default=None,
                         help="pin a model version (default: the one serving as of the date)")
    nightly.add_argument("--serve-older-date", action="store_true",
                         help="serve this date even if a later date is being served")
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

    reconcile = command("reconcile", cmd_reconcile,
                        "repair both stores after a crash: point Redis at what PostgreSQL "
                        "serves, expire orphaned versions, fail runs whose process is gone, "
                        "drop stale staged tables and folders")
    reconcile.add_argument("--json", action="store_true")

    validate = command("validate", cmd_validate,
                       "run the data contracts by hand; nothing is loaded or published")
    what = validate.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", nargs="?", const="", type=str, metavar="FILE",
                      help="the input contract, on FILE or (no FILE) on the run date's events")
    what.add_argument("--predictions", nargs="?", const=-1, type=int, metavar="PUBLISH_ID",
                      help="the prediction contract, on a published version (default: served)")
    validate.add_argument("--run-date", type=parse_date, default=None,
                          help="for --input (default: the newest event's date)")
    validate.add_argument("--input-format", choices=["csv", "movielens"], default="csv")

    status = command("status", cmd_status, "what is served and where")
    status.add_argument("--json", action="store_true")
    runs_parser = commands.add_parser("runs", help="the run history")
    runs_commands = runs_parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    runs_list = command("list", cmd_runs_list, "list recent runs", runs_commands)
    runs_list.add_argument("--json", action="store_true")
    runs_list.add_argument("--limit", type=int, default=20)
    models = commands.add_parser("models", help="the model registry")
    models_commands = models.add_subparsers(title="commands", metavar="COMMAND", required=True)
    models_list = command("list", cmd_models_list, "list model versions", models_commands)
    models_list.add_argument("--json", action="store_true")
    models_show = command("show", cmd_models_show,
                          "one version: metrics, gates, fairness, artifacts, status history",
                          models_commands)
    models_show.add_argument("version", type=int)
    models_show.add_argument("--json", action="store_true")
    models_promote = command("promote", cmd_models_promote,
                             "serve a version from the next nightly run, if its gates allow",
                             models_commands)
    models_promote.add_argument("version", type=int)
    models_promote.add_argument("--reason", default=None, help="why (recorded)")
    models_promote.add_argument("--force", action="store_true",
                                help="promote even when the gates refuse (needs --reason)")

    rollback = command("rollback", cmd_rollback,
                       "serve the previously served version again, in Postgres and Redis")
    rollback.add_argument("--reason", required=True, help="why (recorded with who did it)")
    rollback.add_argument("--to", type=int, default=None, metavar="PUBLISH_ID",
                          help="a kept published version instead of the previous one")

    recs = command("recs", cmd_recs, "one user's recommendations, read from Redis")
    recs.add_argument("user_id", type=int)
    recs.add_argument("-k", type=int, default=10)
    recs.add_argument("--json", action="store_true")

    quickstart = command("quickstart", cmd_quickstart,
                         "sample data -> train -> one nightly through Airflow, reusing what is "
                         "already there")
    quickstart.add_argument("--without-airflow", action="store_true",
                            help="run the nightly in this process instead of through Airflow")

    airflow = commands.add_parser("airflow", help="a local Airflow with batchscore's DAGs")
    airflow_commands = airflow.add_subparsers(title="commands", metavar="COMMAND",
                                              required=True)
    airflow_start = command("start", cmd_airflow_start,
                            "airflow standalone on 127.0.0.1, wired to batchscore's servers",
                            airflow_commands)
    airflow_start.add_argument("--port", type=int, default=8080)
    airflow_nightly = command("nightly", cmd_airflow_nightly,
                              "run the nightly DAG once for a date (airflow dags test)",
                              airflow_commands)
    airflow_nightly.add_argument("--run-date", type=parse_date, default=None)

    bundle = commands.add_parser("bundle", help="MLeap bundles, scored without Spark")
    bundle_commands = bundle.add_subparsers(title="commands", metavar="COMMAND", required=True)
    bundle_score = command("score", cmd_bundle_score,
                           "score a LeapFrame JSON file with an MLeap bundle and print the "
                           "transformed LeapFrame as JSON", bundle_commands)
    bundle_score.add_argument("bundle", type=Path, help="a bundle: zip file or directory")
    bundle_score.add_argument("--frame", type=Path, required=True,
                              help="rows in MLeap's LeapFrame JSON (schema + rows)")

    add_bench_arguments(command(
        "bench", cmd_bench,
        "benchmark scoring and publishing side by side with recommendForAllUsers, Spark's "
        "JDBC writer, psql \\copy and redis-cli --pipe; print the ratios"))
    return parser


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-20") from None


# ---------------------------------------------------------------- plumbing


def database(settings: Settings) -> sa.engine.Engine:
    """The engine for the database in use; the embedded one is migrated on first use."""
    from jobs.platform.db import engine_for, ensure_schema, upgrade

    engine = engine_for(services.database_url(settings))
    if settings.database_url is None:
        upgrade(engine)
    else:
        ensure_schema(engine)
    return engine


def newest_event_date(engine: sa.engine.Engine) -> date:
    with engine.connect() as conn:
        newest = conn.execute(sa.text(
            "SELECT max(event_at) FROM batchscore.interactions"
        )).scalar()
    if newest is None:
        raise CommandError("there are no interactions; run `batchscore data generate` "
                           "or `batchscore data load` first")
    return newest.astimezone(UTC).date()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


# ---------------------------------------------------------------- commands


def cmd_services_start(settings: Settings, args: argparse.Namespace) -> int:
    endpoints = services.resolve(settings)
    print(f"postgres: {redacted(endpoints.database_url)}")
    print(f"redis:    {redacted(endpoints.redis_url)}")
    return 0


def cmd_services_stop(settings: Settings, args: argparse.Namespace) -> int:
    stopped = services.stop_embedded(settings)
    for name, was_running in stopped.items():
        print(f"{name}: {'stopped' if was_running else 'was not running'}")
    return 0


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.platform.db import engine_for, upgrade

    applied = upgrade(engine_for(services.database_url(settings)))
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    return 0


def cmd_db_url(settings: Settings, args: argparse.Namespace) -> int:
    print(services.database_url(settings))
    return 0


def cmd_data_generate(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.data.generate import GenerateConfig, generate, write_generated
    from jobs.data.store import copy_interactions

    try:
        config = GenerateConfig(users=args.users, items=args.items, days=args.days,
                                seed=args.seed,
                                end_date=args.end_date or datetime.now(UTC).date())
    except ValueError as err:
        raise CommandError(str(err)) from None
    engine = database(settings)
    interactions = generate(config)
    logger.info("generated %d interactions for %d users x %d items over %d days",
                len(interactions), config.users, config.items, config.days)
    with write_generated(interactions) as rows_csv:
        count = copy_interactions(engine, rows_csv, replace=args.replace)
    print(f"loaded {count} interactions ({config.users} users, {config.items} items, "
          f"{config.days} days up to {config.end_date})")
    return 0


def cmd_data_load(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.data.load import CsvLayout, load_file

    layout = CsvLayout(user_col=args.user_col, item_col=args.item_col,
                       rating_col=args.rating_col, timestamp_col=args.timestamp_col,
                       delimiter=args.delimiter)
    count = load_file(database(settings), args.path, file_format=args.format, layout=layout,
                      replace=args.replace)
    print(f"loaded {count} interactions from {args.path}")
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.training import train

    engine = database(settings)
    as_of = args.as_of or newest_event_date(engine)
    argv = ["--as-of", as_of.isoformat(), "--database-url", services.database_url(settings),
            "--home", str(settings.home), "--spark-master", settings.spark_master]
    for name in ("holdout_days", "rank", "reg_param", "alpha", "max_iter"):
        value = getattr(args, name, None)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    version = train.run(train.parse_args(argv))
    describe_model(version)
    return 0


def describe_model(version: Any) -> None:
    k = version.params.get("eval_k", "K")
    print(f"model version {version.version} ({version.status}), trained as of "
          f"{version.trained_as_of} on {version.data_snapshot['rows']} interactions")
    print(f"  holdout @{k}:     precision  recall  ndcg    map     coverage")
    rows = [("this model", version.metrics["als"]),
            ("popularity", version.metrics["popularity"])]
    if "serving" in version.metrics:
        serving = version.metrics["serving"]
        rows.append((f"serving v{serving['version']}", serving))
    for label, metrics in rows:
        print(f"  {label:<14} {metrics['precision_at_k']:.4f}     {metrics['recall_at_k']:.4f}"
              f"  {metrics['ndcg_at_k']:.4f}  {metrics.get('map_at_k', float('nan')):.4f}"
              f"  {metrics['catalog_coverage']:.3f}")
    if version.gates:
        print(f"  gates {'passed' if version.gates['passed'] else 'FAILED'}:")
        for check in version.gates["checks"]:
            print(f"    {'ok  ' if check['passed'] else 'FAIL'} {check['name']}: {check['detail']}")


def cmd_nightly(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.orchestration import nightly

    engine = database(settings)
    run_date = args.run_date or newest_event_date(engine)
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
    result = nightly.run(nightly.NightlyConfig(
        run_date=run_date, database_url=services.database_url(settings),
        redis_url=services.redis_url(settings), home=settings.home, k=k,
        spark_master=settings.spark_master,
        input_path=getattr(args, "input", None),
        input_format=getattr(args, "input_format", "csv"),
        model_version=getattr(args, "model_version", None),
        serve_older_date=getattr(args, "serve_older_date", False),
        shadow_version=getattr(args, "shadow", None),
        canary_version=getattr(args, "canary", None),
        canary_fraction=getattr(args, "canary_fraction", None),
        force=args.force, reason=args.reason,
    ))
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
              f"user id hash; bi.canary_users, publish_id = {result.publish_id})")
    if result.input_rejected:
        print(f"  {result.input_rejected} input rows failed the contract and were quarantined "
              f"(bi.rejects, run_id = '{result.run_id}')")
    for suite, url in result.data_docs.items():
        print(f"  {suite} validation: {url}")
    return 0


def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.engine import Validator

    engine = database(settings)
    validator = Validator(settings.home)
    if args.input is not None:
        from jobs.contracts.inputs import check_input, read_input_file, table_batch

        run_date = args.run_date or newest_event_date(engine)
        batch = (read_input_file(Path(args.input), args.input_format) if args.input
                 else table_batch(engine, run_date))
        outcome = check_input(validator, engine, run_date, batch)
        print(f"input contract passed for {run_date} ({batch.source}): "
              f"{outcome.report.row_count} rows, {len(outcome.rejected)} would be quarantined")
        for index, reasons in sorted(outcome.rejected.items())[:20]:
            print(f"  {batch.row_label} {index}: {'; '.join(reasons)}")
        print(f"  Data Docs: {outcome.report.docs_url}")
        return 0
    from jobs.contracts.predictions import check_predictions, served_checks

    publish_id = None if args.predictions == -1 else args.predictions
    try:
        users, summary, model_version = served_checks(engine, publish_id)
    except LookupError as err:
        raise CommandError(str(err)) from None
    label = "the served version" if publish_id is None else f"version {publish_id}"
    reports = check_predictions(validator, users, summary, model_version, label=label)
    print(f"prediction contract passed for {label}: {len(users)} users, "
          f"coverage {summary.catalog_coverage:.3f}, top item share {summary.top_item_share:.3f}")
    for report in reports:
        print(f"  Data Docs ({report.suite}): {report.docs_url}")
    return 0


def status_record(settings: Settings) -> dict[str, Any]:
    from jobs.contracts.redis import decode_meta, meta_key, pointer_key
    from jobs.lifecycle import registry
    from jobs.platform import runs
    from jobs.platform.db import applied_migrations, migrations

    endpoints = services.resolve(settings)
    engine = database(settings)
    applied = applied_migrations(engine)
    record: dict[str, Any] = {
        "home": str(settings.home),
        "embedded": {"postgres": settings.database_url is None,
                     "redis": settings.redis_url is None},
        "database_url": redacted(endpoints.database_url),
        "redis_url": redacted(endpoints.redis_url),
        "migrations": {"applied": applied,
                       "pending": [m.version for m in migrations() if m.version not in applied]},
    }
    try:
        record["serving_model"] = registry.serving(engine).version
    except registry.NoServingModelError:
        record["serving_model"] = None
    with engine.connect() as conn:
        served = conn.execute(sa.text(
            "SELECT publish_id, run_id, model_version, logical_date, users, rows, published_at"
            " FROM bi.prediction_versions WHERE is_serving"
        )).mappings().first()
        record["interactions"] = conn.execute(
            sa.text("SELECT count(*) FROM batchscore.interactions")).scalar_one()
    record["postgres_served"] = dict(served) if served else None
    import redis

    client = redis.Redis.from_url(endpoints.redis_url)
    pointer = client.get(pointer_key())
    record["redis_served"] = None
    if pointer is not None:
        meta = client.get(meta_key(int(pointer)))
        record["redis_served"] = {"publish_id": int(pointer),
                                  **(decode_meta(meta) if meta else {})}
    last = runs.list_runs(engine, limit=1)
    record["last_run"] = last[0].to_json() if last else None
    from jobs.publish.reconcile import disagreement

    record["stores_disagree"] = disagreement(engine, client)
    return record


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    record = status_record(settings)
    if args.json:
        print_json(record)
        return 0
    print(f"home:      {record['home']}")
    print(f"postgres:  {record['database_url']}"
          f"{' (embedded)' if record['embedded']['postgres'] else ''}")
    print(f"redis:     {record['redis_url']}{' (embedded)' if record['embedded']['redis'] else ''}")
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
    return 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.orchestration import nightly

    report = nightly.reconcile(database(settings), services.redis_url(settings), settings.home)
    if args.json:
        print_json(report.to_json())
        return 0
    for line in report.lines() or [f"both stores agree on version {report.postgres_serves}; "
                                   "nothing to do"]:
        print(line)
    return 0


def cmd_runs_list(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.platform import runs

    records = [run.to_json() for run in runs.list_runs(database(settings), limit=args.limit)]
    if args.json:
        print_json(records)
        return 0
    for run in records:
        print(f"{run['run_id']:<40} {run['status']:<10} model {run['model_version'] or '-':<4}"
              f" {run['error'] or ''}")
    return 0


def cmd_models_list(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.lifecycle import registry

    versions = registry.list_versions(database(settings))
    if args.json:
        print_json([version.to_json() for version in versions])
        return 0
    for version in versions:
        als = version.metrics["als"]
        gates = ("gates passed" if version.gates.get("passed") else
                 "gates failed" if version.gates else "no gates")
        print(f"v{version.version:<4} {version.status:<11} as of {version.trained_as_of}  "
              f"ndcg@{version.params.get('eval_k', 'K')} {als['ndcg_at_k']:.4f}  {gates:<12}  "
              f"by {version.created_by} at {version.created_at:%Y-%m-%d %H:%M}")
    return 0


def cmd_models_show(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.lifecycle import registry

    engine = database(settings)
    version = registry.get(engine, args.version)
    history = registry.status_history(engine, args.version)
    if args.json:
        print_json({**version.to_json(), "status_history": [h.to_json() for h in history]})
        return 0
    describe_model(version)
    print(f"  created by {version.created_by} at {version.created_at:%Y-%m-%d %H:%M:%S %Z}, "
          f"code {version.code_version}")
    print(f"  params: {json.dumps(version.params, sort_keys=True)}")
    snapshot = version.data_snapshot
    print(f"  data: {snapshot['rows']} rows, {snapshot['users']} users, {snapshot['items']} "
          f"items, {snapshot['first_event']} .. {snapshot['last_event']}, "
          f"{snapshot['content_hash']}")
    for artifact in version.artifacts or [{"kind": "model", "uri": version.artifact_uri}]:
        print(f"  artifact {artifact['kind']}: {artifact['uri']}"
              + (f" sha256 {artifact['sha256']}" if "sha256" in artifact else ""))
    fairness = version.reports.get("fairness")
    if fairness:
        print(f"  quality by segment (NDCG@{fairness['k']}):")
        for dimension, rows in fairness["quality"].items():
            for row in rows:
                scores = "  ".join(f"{model} {row[model]['ndcg_at_k']:.4f}"
                                   for model in ("als", "popularity", "serving") if model in row)
                print(f"    {dimension} {row['segment']:<24} {row['users']:>6} users  {scores}")
        print("  exposure by item popularity band (share of slots):")
        for row in fairness["exposure"]:
            shares = "  ".join(f"{key.removesuffix('_slot_share')} {value:.3f}"
                               for key, value in row.items() if key.endswith("_slot_share"))
            print(f"    {row['band']:<6} {row['items']:>6} items, {row['interaction_share']:.3f} "
                  f"of interactions; {shares}")
    print("  status history:")
    for change in history:
        print(f"    {change.changed_at:%Y-%m-%d %H:%M:%S} {change.status:<11} by "
              f"{change.changed_by}: {change.reason}")
    return 0


def cmd_models_promote(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.lifecycle import registry
    from jobs.platform.provenance import current_user

    engine = database(settings)
    candidate = registry.get(engine, args.version)
    decision = registry.promotion_decision(engine, candidate)
    if not decision.promote and not args.force:
        raise CommandError(f"version {args.version} not promoted: {decision.reason} "
                           "(--force promotes it anyway, with --reason)")
    reason = args.reason or decision.reason
    if not decision.promote:
        reason = f"forced by hand over the gates ({decision.reason}): {args.reason}"
    promoted = registry.promote(engine, args.version, current_user(), reason)
    print(f"model version {promoted.version} now serving; the next nightly run uses it")
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    import redis

    from jobs.orchestration.rollback import roll_back
    from jobs.platform.provenance import current_user

    engine = database(settings)
    client = redis.Redis.from_url(services.redis_url(settings))
    if not args.reason.strip():
        raise CommandError("--reason must say why; it is recorded")
    done = roll_back(engine, client, current_user(), args.reason, to=args.to)
    print(f"rolled back version {done.rolled_back}; version {done.restored} (model "
          f"{done.restored_model}) is served again in postgres and redis")
    for model in done.rolled_back_models:
        print(f"  model version {model} marked rolled back: it will not be promoted "
              "automatically again")
    return 0


def cmd_recs(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.client import RecommendationClient

    if args.k < 1:
        raise CommandError(f"-k must be at least 1, got {args.k}")
    recs = RecommendationClient.from_url(services.redis_url(settings)).get_recommendations(
        args.user_id, args.k)
    if args.json:
        print_json(recs.to_json())
        return 0
    print(f"user {recs.user_id}: {recs.source} from run {recs.run_id} "
          f"(model {recs.model_version})")
    for rank, item in enumerate(recs.items, start=1):
        print(f"  {rank:>3}. item {item.item_id:<8} score {item.score:.4f}")
    return 0


def cmd_quickstart(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.lifecycle import registry

    engine = database(settings)
    with engine.connect() as conn:
        have_data = conn.execute(
            sa.text("SELECT exists(SELECT 1 FROM batchscore.interactions)")).scalar_one()
    if not have_data:
        print(f"1/3 generating a sample data set: {SAMPLE['users']} users x "
              f"{SAMPLE['items']} items over {SAMPLE['days']} days")
        cmd_data_generate(settings, argparse.Namespace(**SAMPLE, end_date=None, replace=False))
    else:
        print("1/3 interactions already loaded: reusing them")
    try:
        model = registry.serving(engine)
        print(f"2/3 model version {model.version} already serving: reusing it")
    except registry.NoServingModelError:
        print("2/3 training a model (Spark ALS)")
        cmd_train(settings, argparse.Namespace(as_of=None))
    run_date = newest_event_date(engine)
    with engine.connect() as conn:
        published = conn.execute(sa.text(
            "SELECT publish_id FROM batchscore.prediction_versions"
            " WHERE status = 'published' AND logical_date = :d"), {"d": run_date}).scalar()
    if published is None and getattr(args, "without_airflow", False):
        print(f"3/3 nightly run for {run_date}")
        cmd_nightly(settings, build_parser().parse_args(
            ["nightly", "--run-date", run_date.isoformat()]))
    elif published is None:
        print(f"3/3 nightly run for {run_date} through Airflow (the batchscore_nightly DAG)")
        cmd_airflow_nightly(settings, argparse.Namespace(run_date=run_date))
    else:
        print(f"3/3 {run_date} already published (version {published}): reusing it")
    with engine.connect() as conn:
        user_id = conn.execute(sa.text(
            "SELECT user_id FROM bi.recommendations ORDER BY user_id LIMIT 1")).scalar()
    print()
    cmd_status(settings, argparse.Namespace(json=False))
    program = command_name()
    query = f"SELECT * FROM bi.recommendations WHERE user_id = {user_id} ORDER BY rank LIMIT 10"
    print("\nRead one user's recommendations (from Redis):")
    print(f"  {program} recs {user_id}")
    print("Query what BI sees (PostgreSQL):")
    print(f'  psql "$({program} db url)" -c "{query}"')
    return 0


def cmd_airflow_start(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.orchestration import local_airflow

    database(settings)
    return local_airflow.start(settings, args.port)


def cmd_airflow_nightly(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.orchestration import local_airflow

    engine = database(settings)
    run_date = args.run_date or newest_event_date(engine)
    log = local_airflow.run_nightly(settings, run_date)
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT run_id, status, stats->>'publish_id' FROM batchscore.runs"
            " WHERE kind = 'nightly' AND logical_date = :d ORDER BY started_at DESC LIMIT 1"),
            {"d": run_date}).first()
    if row is None or row.status != "succeeded":
        raise CommandError(f"the nightly DAG did not publish {run_date}; see {log}")
    print(f"run {row.run_id} (Airflow): published version {row[2]} for {run_date}; log: {log}")
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.bench.cli import run

    return run(args)


def cmd_bundle_score(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.bundles.format import BundleError
    from jobs.bundles.leapframe import frame_to_text
    from jobs.bundles.reader import score_file

    try:
        scored = score_file(args.bundle, args.frame)
    except BundleError as err:
        raise CommandError(str(err)) from None
    print(frame_to_text(scored))
    return 0


def command_name() -> str:
    """How the person at the terminal can call this program again."""
    invoked = Path(sys.argv[0])
    on_path = shutil.which("batchscore")
    if on_path and Path(on_path).resolve() == invoked.resolve():
        return "batchscore"
    if invoked.name == "batchscore":
        return os.path.relpath(invoked)
    return "python -m jobs"


def _expected_errors() -> tuple[type[BaseException], ...]:
    from jobs.client import NoPublishedVersionError
    from jobs.contracts.engine import ContractError
    from jobs.data.load import InputError
    from jobs.lifecycle.registry import NoServingModelError, UnknownVersionError
    from jobs.orchestration.local_airflow import AirflowError
    from jobs.orchestration.nightly import RunRequestError, StoreUnavailableError
    from jobs.platform.db import LockWaitError, MigrationError
    from jobs.publish.postgres import LockTimeoutError, RollbackError, VersionStateError
    from jobs.publish.redis import MissingVersionError, PointerMovedError

    return (CommandError, ConfigError, InputError, MigrationError, NoServingModelError,
            NoPublishedVersionError, ContractError, FileNotFoundError, AirflowError,
            RollbackError, MissingVersionError, UnknownVersionError, RunRequestError,
            LockWaitError, LockTimeoutError, VersionStateError, PointerMovedError,
            StoreUnavailableError)


EXPECTED_ERRORS = _expected_errors()

if __name__ == "__main__":
    sys.exit(main())
