"""`batchscore data ...`, `batchscore validate` and `batchscore rejects list`: interactions,
items and users in, and the contracts run by hand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.cli.common import (
    CommandError,
    Commands,
    database,
    parse_date,
    print_json,
    run_date_or_newest,
)
from jobs.platform.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def add_commands(commands: Commands) -> None:
    data = commands.subgroup("data", "interactions, items and users in")
    gen = data.add("generate", cmd_data_generate, "generate synthetic interactions and load them")
    gen.add_argument("--users", type=int, required=True)
    gen.add_argument("--items", type=int, required=True)
    gen.add_argument("--days", type=int, required=True)
    gen.add_argument("--seed", type=int, default=0, help="the same seed, the same data")
    gen.add_argument("--end-date", type=parse_date, default=None,
                     help="last day of events (default: yesterday, UTC: the last whole day, "
                          "so that no event is stamped after now)")
    gen.add_argument("--replace", action="store_true", help="empty the table first")
    load = data.add("load", cmd_data_load, "load an interactions file")
    load.add_argument("path", type=Path)
    load.add_argument("--format", choices=["movielens", "csv", "parquet"], default=None,
                      help="movielens: u.data (tab-separated user, item, rating, unix time); "
                           "csv: a header naming the columns; parquet: the same columns "
                           "(default: from the extension, .csv or .parquet)")
    load.add_argument("--user-col", default="user_id", help="csv, parquet: the user id column")
    load.add_argument("--item-col", default="item_id", help="csv, parquet: the item id column")
    load.add_argument("--rating-col", default="rating", help="csv, parquet: the rating column")
    load.add_argument("--timestamp-col", default="timestamp",
                      help="csv, parquet: unix seconds or ISO 8601 (UTC unless an offset is "
                           "given), or a Parquet timestamp")
    load.add_argument("--delimiter", default=",", help="csv: the field separator")
    load.add_argument("--replace", action="store_true", help="empty the table first")
    for table, what, columns in (("items", "an item", "item_id, optional title"),
                                 ("users", "a user", "user_id")):
        meta = data.add(f"load-{table}", cmd_data_load_metadata,
                        f"check {what} metadata file against its contract and upsert it")
        meta.add_argument("path", type=Path)
        meta.add_argument("--format", choices=["csv", "parquet"], default=None,
                          help=f"columns {columns}, then attributes as one JSON-object column "
                               "`attributes` or as extra columns (default: from the extension, "
                               ".csv or .parquet)")
        meta.add_argument("--replace", action="store_true",
                          help=f"empty batchscore.{table} first, in the same transaction")
        meta.set_defaults(table=table)

    validate = commands.add("validate", cmd_validate,
                            "run the data contracts by hand; nothing is loaded or published")
    what = validate.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", nargs="?", const="", type=str, metavar="FILE",
                      help="the input contract, on FILE or (no FILE) on the run date's events")
    what.add_argument("--predictions", nargs="?", const=-1, type=int, metavar="PUBLISH_ID",
                      help="the prediction contract, on a published version (default: served; "
                           "`batchscore versions list` shows the ids)")
    validate.add_argument("--run-date", type=parse_date, default=None,
                          help="for --input (default: the newest event's date)")
    validate.add_argument("--input-format", choices=["csv", "movielens", "parquet"],
                          default=None,
                          help="for --input FILE (default: parquet for a .parquet file, else csv)")

    rejects = commands.subgroup("rejects", "input rows the contract quarantined")
    rejects_list = rejects.add("list", cmd_rejects_list,
                               "quarantined rows with their reasons, newest first")
    rejects_list.add_argument("--run", default=None, metavar="RUN_ID",
                              help="only this run's (default: every run's)")
    rejects_list.add_argument("--limit", type=int, default=100, help="rows at most")
    rejects_list.add_argument("--json", action="store_true")


def cmd_data_generate(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.data.generate import GenerateConfig, generate_and_load, last_whole_day

    try:
        config = GenerateConfig(users=args.users, items=args.items, days=args.days,
                                seed=args.seed,
                                end_date=args.end_date or last_whole_day())
    except ValueError as err:
        raise CommandError(str(err)) from None
    engine = database(settings)
    count = generate_and_load(engine, config, replace=args.replace)
    print(f"loaded {count} interactions ({config.users} users, {config.items} items, "
          f"{config.days} days up to {config.end_date})")
    write_history(settings, engine)
    return 0


def cmd_data_load(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.inputs import load_file
    from jobs.data.load import CsvLayout

    layout = CsvLayout(user_col=args.user_col, item_col=args.item_col,
                       rating_col=args.rating_col, timestamp_col=args.timestamp_col,
                       delimiter=args.delimiter)
    engine = database(settings)
    outcome = load_file(engine, settings.home, args.path, file_format=args.format,
                        layout=layout, replace=args.replace)
    print(f"loaded {outcome.loaded} interactions from {args.path}"
          + (f"; {outcome.rejected} quarantined by the input contract (`batchscore rejects "
             f"list --run {outcome.run_id}`)" if outcome.rejected else "")
          + f" (run {outcome.run_id})")
    write_history(settings, engine)
    return 0


def write_history(settings: Settings, engine: Engine) -> None:
    """Write the days a load changed to the interaction history (jobs.data.history)."""
    from jobs.data import history

    where = history.root(engine, settings.history_uri, settings.home)
    written = history.sync(engine, where)
    print(f"interaction history at {where}: {written.days_written} day(s) written, "
          f"{written.days_removed} removed")


def cmd_data_load_metadata(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.engine import Validator
    from jobs.contracts.metadata import load_metadata_file

    load = load_metadata_file(Validator(settings.home), database(settings), args.table,
                              args.path, file_format=args.format, replace=args.replace)
    replaced = f"; batchscore.{load.table} replaced" if load.replaced else ""
    print(f"loaded {load.rows} {load.table} from {args.path}: {load.inserted} new, "
          f"{load.updated} updated{replaced}")
    return 0


def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.engine import Validator

    engine = database(settings)
    validator = Validator(settings.home)
    if args.input is not None:
        from jobs.contracts.inputs import NothingToScoreError, validate_by_hand

        run_date = run_date_or_newest(engine, args.run_date)
        try:
            batch, outcome = validate_by_hand(validator, engine, run_date,
                                              Path(args.input) if args.input else None,
                                              args.input_format)
        except NothingToScoreError as nothing:
            print(nothing)
            return 0
        print(f"input contract passed for {run_date} ({batch.source}): "
              f"{outcome.report.row_count} rows, {len(outcome.rejected)} would be quarantined")
        for index, reasons in sorted(outcome.rejected.items())[:20]:
            print(f"  {batch.row_label} {index}: {'; '.join(reasons)}")
        print(f"  Data Docs: {outcome.report.docs_url}")
        return 0
    from jobs.contracts.predictions import validate_published

    try:
        checked = validate_published(validator, engine,
                                     None if args.predictions == -1 else args.predictions)
    except LookupError as err:
        raise CommandError(str(err)) from None
    print(f"prediction contract passed for {checked.label}: {checked.users} users, "
          f"coverage {checked.summary.catalog_coverage:.3f}, top item share "
          f"{checked.summary.top_item_share:.3f}, exposure spread "
          f"{checked.summary.exposure_spread:.2f}, history gain "
          f"{checked.summary.history_gain:.2f}")
    for report in checked.reports:
        print(f"  Data Docs ({report.suite}): {report.docs_url}")
    return 0


def cmd_rejects_list(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.contracts.inputs import list_rejects

    if args.limit < 1:
        raise CommandError(f"--limit must be at least 1, got {args.limit}")
    rows = list_rejects(database(settings), run_id=args.run, limit=args.limit)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no quarantined rows" + (f" for run {args.run}" if args.run else ""))
    for row in rows:
        print(f"{row['run_id']}  {row['source']} row {row['row_number']}: "
              f"{'; '.join(row['reasons'])}")
    return 0
