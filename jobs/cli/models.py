"""`batchscore train` and `batchscore models ...`: training and the model registry."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs.cli.common import (
    CommandError,
    Commands,
    database,
    parse_date,
    print_json,
    run_date_or_newest,
)
from jobs.lifecycle import registry
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.provenance import current_user
from jobs.scoring.model import ALS
from jobs.training import train, tune
from jobs.training.ease import EaseParams
from jobs.training.holdout import CANDIDATE, LEGACY_CANDIDATE, candidate_metrics

# Training options of `batchscore train`: option, default, help.
TRAIN_OPTIONS = (
    ("--holdout-days", train.DEFAULT_HOLDOUT_DAYS, "the last days held out to evaluate on"),
    ("--rank", train.DEFAULT_RANK, "ALS latent factors"),
    ("--reg-param", train.DEFAULT_REG_PARAM, "ALS regularisation"),
    ("--alpha", train.DEFAULT_ALPHA, "ALS implicit-feedback confidence"),
    ("--max-iter", train.DEFAULT_MAX_ITER, "ALS iterations"),
    ("--l2", EaseParams().l2, "EASE's L2 regularisation"),
)
# Those a search chooses (jobs.training.tune): not to be given with --tune.
TUNED_OPTIONS = ("--rank", "--reg-param", "--alpha", "--max-iter", "--l2")


def add_commands(commands: Commands) -> None:
    trainer = commands.add("train", cmd_train, "train a model and register its version")
    trainer.add_argument("--as-of", type=parse_date, default=None,
                         help="train on events up to this date (default: the newest event's)")
    trainer.add_argument("--family", choices=tune.TUNED_FAMILIES, default=None,
                         help=f"als (a factor model) or ease (an item-item model; its catalogue "
                              f"is bounded by BATCHSCORE_EASE_MAX_ITEMS), or with --tune all "
                              f"(tune both, train the better) (default: {ALS})")
    trainer.add_argument("--tune", action="store_true",
                         help="search the family's parameters on a validation window before "
                              "the holdout, within a time budget, and train with the best")
    trainer.add_argument("--budget-minutes", type=float, default=None,
                         help=f"with --tune: the search's time budget "
                              f"(default: {tune.DEFAULT_BUDGET_MINUTES:g})")
    # No defaults here: --reproduce refuses any of them given, the version's own are used.
    for option, default, text in TRAIN_OPTIONS:
        trainer.add_argument(option, type=type(default), default=None,
                             help=f"{text} (default: {default})")
    trainer.add_argument("--reproduce", type=int, default=None, metavar="VERSION",
                         help="train again on VERSION's kept training set with its as-of date "
                              "and parameters; registered as a candidate that says so")
    models = commands.subgroup("models", "the model registry")
    models_list = models.add("list", cmd_models_list, "list model versions")
    models_list.add_argument("--json", action="store_true")
    models_show = models.add("show", cmd_models_show,
                             "one version: metrics, gates, fairness, artifacts, status history")
    models_show.add_argument("version", type=int)
    models_show.add_argument("--json", action="store_true")
    promote = models.add("promote", cmd_models_promote,
                         "serve a version from the next nightly run, if its gates allow")
    promote.add_argument("version", type=int)
    promote.add_argument("--reason", default=None, help="why (recorded)")
    promote.add_argument("--force", action="store_true",
                         help="promote even when the gates refuse (needs --reason)")


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    refuse_conflicting_options(args)
    engine = database(settings)
    if args.reproduce is not None:
        original = registry.get(engine, args.reproduce)
        config = train.TrainConfig.reproducing(
            original, services.database_url(settings, services.WRITER), settings.home,
            settings.spark_master, settings.names, settings.history_uri)
        reproduced = train.run(config)
        describe_model(reproduced)
        describe_reproduction(original, reproduced)
        return 0
    chosen = {dest(option): default if getattr(args, dest(option)) is None
              else getattr(args, dest(option)) for option, default, _ in TRAIN_OPTIONS}
    try:
        config = train.TrainConfig(
            database_url=services.database_url(settings, services.WRITER), home=settings.home,
            as_of=run_date_or_newest(engine, args.as_of), spark_master=settings.spark_master,
            family=ALS if args.family in (None, tune.ALL) else args.family,
            tuning=tune.TuneConfig(
                budget_minutes=args.budget_minutes or tune.DEFAULT_BUDGET_MINUTES,
                family=args.family or ALS) if args.tune else None,
            als=train.AlsParams(rank=chosen["rank"], reg_param=chosen["reg_param"],
                                alpha=chosen["alpha"], max_iter=chosen["max_iter"]),
            ease=EaseParams(l2=chosen["l2"]), ease_max_items=settings.ease_max_items,
            holdout_days=chosen["holdout_days"], names=settings.names,
            history_uri=settings.history_uri)
    except ValueError as err:
        raise CommandError(str(err)) from None
    describe_model(train.run(config))
    return 0


def refuse_conflicting_options(args: argparse.Namespace) -> None:
    """Options that cannot go together, refused before anything is opened."""
    if args.reproduce is not None:
        given = [option for option, _, _ in (*TRAIN_OPTIONS, ("--family", None, ""),
                                             ("--budget-minutes", None, ""))
                 if getattr(args, dest(option)) is not None]
        if args.tune:
            given.insert(0, "--tune")
        if args.as_of is not None:
            given.insert(0, "--as-of")
        if given:
            raise CommandError(f"--reproduce uses version {args.reproduce}'s recorded as-of "
                               f"date and parameters; drop {', '.join(given)}")
    elif args.tune:
        given = [option for option in TUNED_OPTIONS if getattr(args, dest(option)) is not None]
        if given:
            raise CommandError(f"--tune searches the family's parameters; drop "
                               f"{', '.join(given)}")
    elif args.family == tune.ALL:
        raise CommandError("--family all needs --tune: it tunes both families and trains "
                           "the better")
    elif args.budget_minutes is not None:
        raise CommandError("--budget-minutes needs --tune")


def dest(option: str) -> str:
    return option.removeprefix("--").replace("-", "_")


def describe_reproduction(original: Any, reproduced: Any) -> None:
    """The reproduction's data hash and holdout metrics next to the original's."""
    report = reproduced.reports["reproduction"]
    print(f"  reproduces version {original.version}: data hash {report['content_hash']} "
          f"(v{original.version}: {report['original_content_hash']})")
    print(f"  holdout @{reproduced.params['eval_k']}:     precision  recall  ndcg    map     "
          "coverage")
    for model in (CANDIDATE, "popularity"):
        for label, version in ((f"v{original.version}", original),
                               (f"v{reproduced.version}", reproduced)):
            metrics = (candidate_metrics(version.metrics) if model == CANDIDATE
                       else version.metrics[model])
            print(f"  {label + ' ' + model:<14} {metrics['precision_at_k']:.4f}     "
                  f"{metrics['recall_at_k']:.4f}  {metrics['ndcg_at_k']:.4f}  "
                  f"{metrics.get('map_at_k', float('nan')):.4f}  {metrics['catalog_coverage']:.3f}")
    print(f"  largest difference in a holdout metric: {report['largest_metric_difference']:.2g}")


# The debiased holdout metrics (jobs.training.metrics), as models show titles them.
DEBIASED_COLUMNS = (("ips_ndcg_at_k", "ips ndcg"), ("ips_recall_at_k", "ips recall"),
                    ("novelty", "novelty"))


def debiased_cell(value: float | None, title: str) -> str:
    return f"{'-' if value is None else f'{value:.4f}':<{len(title)}}"


def describe_model(version: Any) -> None:
    k = version.params.get("eval_k", "K")
    print(f"model version {version.version} ({version.status}, {version.kind}), trained as of "
          f"{version.trained_as_of} on {version.data_snapshot['rows']} interactions")
    rows = [("this model", candidate_metrics(version.metrics)),
            ("popularity", version.metrics["popularity"])]
    if "serving" in version.metrics:
        serving = version.metrics["serving"]
        rows.append((f"serving v{serving['version']}", serving))
    # Versions trained before the debiased metrics have none: their columns are left out.
    debiased = any(name in metrics for _, metrics in rows for name, _ in DEBIASED_COLUMNS)
    print(f"  holdout @{k}:     precision  recall  ndcg    map     coverage"
          + ("".join(f"  {title}" for _, title in DEBIASED_COLUMNS) if debiased else ""))
    for label, metrics in rows:
        line = (f"  {label:<14} {metrics['precision_at_k']:.4f}     {metrics['recall_at_k']:.4f}"
                f"  {metrics['ndcg_at_k']:.4f}  {metrics.get('map_at_k', float('nan')):.4f}"
                f"  {metrics['catalog_coverage']:<8.3f}")
        if debiased:
            line += "".join(f"  {debiased_cell(metrics.get(name), title)}"
                            for name, title in DEBIASED_COLUMNS)
        print(line.rstrip())
    if version.gates:
        print(f"  gates {'passed' if version.gates['passed'] else 'FAILED'}:")
        for check in version.gates["checks"]:
            print(f"    {'ok  ' if check['passed'] else 'FAIL'} {check['name']}: {check['detail']}")


def cmd_models_list(settings: Settings, args: argparse.Namespace) -> int:
    versions = registry.list_versions(database(settings))
    if args.json:
        print_json([version.to_json() for version in versions])
        return 0
    for version in versions:
        metrics = candidate_metrics(version.metrics)
        gates = ("gates passed" if version.gates.get("passed") else
                 "gates failed" if version.gates else "no gates")
        print(f"v{version.version:<4} {version.status:<11} {version.kind:<4} "
              f"as of {version.trained_as_of}  "
              f"ndcg@{version.params.get('eval_k', 'K')} {metrics['ndcg_at_k']:.4f}  {gates:<12}  "
              f"by {version.created_by} at {version.created_at:%Y-%m-%d %H:%M}")
    return 0


def cmd_models_show(settings: Settings, args: argparse.Namespace) -> int:
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
    reproduction = version.reports.get("reproduction")
    if reproduction:
        print(f"  reproduces version {reproduction['of_version']} on its kept training set; "
              f"largest difference in a holdout metric "
              f"{reproduction['largest_metric_difference']:.2g}")
    tuning = version.reports.get("tuning")
    if tuning:
        describe_tuning(tuning)
    fairness = version.reports.get("fairness")
    if fairness:
        print(f"  quality by segment (NDCG@{fairness['k']}):")
        for dimension, rows in fairness["quality"].items():
            for row in rows:
                scores = "  ".join(f"{model} {row[model]['ndcg_at_k']:.4f}"
                                   for model in (CANDIDATE, LEGACY_CANDIDATE, "popularity",
                                                 "serving") if model in row)
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


def describe_tuning(tuning: dict[str, Any]) -> None:
    """A tuned version's search: how, on which window, and every trial."""
    window = tuning["validation"]
    best = tuning["best"]
    print(f"  tuned with {tuning['library']} in {tuning['seconds']:.0f} s of a "
          f"{tuning['budget_minutes']:g}-minute budget: {tuning['method']}; validation "
          f"{window['start']} .. {window['end']} ({window['users']} users), "
          f"{tuning['metric']}@{tuning['k']}; "
          + (f"best {best['family']} trial {best['number']} {best['value']:.4f}" if best
             else "no trial completed"))
    print("    family trial state     seconds  value   params (values by iterations)")
    for trial in tuning["trials"]:
        value = "-" if trial["value"] is None else f"{trial['value']:.4f}"
        state = trial["state"] + ("*" if trial.get("stopped_by") == "budget" else "")
        params = " ".join(f"{name} {value:.4g}" for name, value in trial["params"].items())
        steps = (" (" + ", ".join(f"{step}: {value:.4f}" for step, value in
                                  trial["values"].items()) + ")"
                 if len(trial["values"]) > 1 or trial["state"] == "pruned" else "")
        seconds = "-" if trial["seconds"] is None else f"{trial['seconds']:.1f}"
        print(f"    {trial['family']:<6} {trial['number']:>5} {state:<9} {seconds:>7}  "
              f"{value:<6}  {params}{steps}".rstrip())
    if any(trial.get("stopped_by") == "budget" for trial in tuning["trials"]):
        print("    * stopped: its next fit would have ended after the budget")


def cmd_models_promote(settings: Settings, args: argparse.Namespace) -> int:
    promoted = registry.promote_by_hand(database(settings), args.version, current_user(),
                                        args.reason, force=args.force)
    print(f"model version {promoted.version} now serving; the next nightly run uses it")
    return 0
