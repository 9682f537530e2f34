"""The training job: a model of one family on interactions up to a date.

``main(argv)`` is what ``spark-submit jobs/training/train.py`` and ``batchscore train``
run: extract the interactions, fit the family's model (implicit-feedback ALS, or
the EASE item-item model of :mod:`jobs.training.ease`) on all but the last
``holdout_days``, evaluate it and a popularity baseline on those days, refit on
everything, save the model with its portable artifact and register the version
with its family, metrics and provenance.

The interactions are read once from the interaction history
(:mod:`jobs.data.history`, the days up to the as-of date) into a Parquet
training set that training reads and that is kept in the model's folder;
``--reproduce VERSION`` trains again on a version's kept training set with its
recorded parameters.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.bundles.export import export_als
from jobs.data import history
from jobs.data.load import MAX_ID, InputError
from jobs.data.store import day_end
from jobs.lifecycle.registry import ModelVersion, NewModel, get, register, serving_or_none
from jobs.platform.artifacts import artifact_path, artifact_record, sha256_of
from jobs.platform.config import DEFAULT_EASE_MAX_ITEMS, Settings
from jobs.platform.db import engine_for, ensure_schema, statement
from jobs.platform.names import Names
from jobs.platform.progress import spark_progress
from jobs.platform.provenance import code_version, current_user
from jobs.scoring import item_item
from jobs.scoring.model import ALS, EASE, FAMILIES, MODEL_METADATA_FILE, ScoringModel
from jobs.training.als import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_ITER,
    DEFAULT_RANK,
    DEFAULT_REG_PARAM,
    AlsParams,
    fit_als,
)
from jobs.training.ease import EaseParams, fit_ease
from jobs.training.gates import GateConfig, judge
from jobs.training.holdout import CANDIDATE, candidate_metrics, summary
from jobs.training.tune import (
    ALL,
    DEFAULT_BUDGET_MINUTES,
    TUNED_FAMILIES,
    TuneConfig,
    Tuned,
    search,
    validation_window,
)

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame, SparkSession
    from sqlalchemy.engine import Engine

    from jobs.training.differential import Differential

logger = logging.getLogger(__name__)

DEFAULT_HOLDOUT_DAYS = 7
DEFAULT_EVAL_K = 10

# The artifact kind of the interactions a version was trained on, and its file, kept in
# the Spark model's folder so that it goes when the model's artifacts go.
TRAINING_SET = "training_set"
TRAINING_SET_FILE = "training_set.parquet"


class TrainingSetError(InputError):
    """A version's kept training set is missing or not the one recorded: no reproduction."""


@dataclass(frozen=True)
class TrainConfig:
    database_url: str
    home: Path
    as_of: date
    spark_master: str | None
    als: AlsParams = field(default_factory=AlsParams)
    # Which family to train (jobs.scoring.model.FAMILIES); ``als`` uses ``als``, ``ease``
    # uses ``ease`` and the catalogue limit.
    family: str = ALS
    ease: EaseParams = field(default_factory=EaseParams)
    ease_max_items: int = DEFAULT_EASE_MAX_ITEMS
    holdout_days: int = DEFAULT_HOLDOUT_DAYS
    eval_k: int = DEFAULT_EVAL_K
    promote_if_first: bool = True
    # The version whose kept training set this run trains on again, if any.
    reproduces: int | None = None
    # The deployment's schema names (jobs.platform.names).
    names: Names = field(default_factory=Names)
    # The interaction history's root (jobs.data.history); None: under home.
    history_uri: str | None = None
    # Search the parameters first (jobs.training.tune): ``family`` and the family's
    # parameters are then the search's starting point, replaced by what it chooses.
    tuning: TuneConfig | None = None

    def __post_init__(self) -> None:
        for name, value in (("rank", self.als.rank), ("max-iter", self.als.max_iter),
                            ("holdout-days", self.holdout_days), ("eval-k", self.eval_k)):
            if value < 1:
                raise ValueError(f"--{name} must be at least 1, got {value}")
        if self.als.alpha <= 0 or self.als.reg_param < 0:
            raise ValueError("--alpha must be positive and --reg-param not negative")
        if self.family not in FAMILIES:
            raise ValueError(f"--family must be one of {', '.join(FAMILIES)}, got "
                             f"{self.family!r}")

    @property
    def model_params(self) -> AlsParams | EaseParams:
        return self.ease if self.family == EASE else self.als

    def params(self) -> dict[str, Any]:
        """The version's recorded parameters: its family's, and the evaluation's."""
        chosen = ({**asdict(self.als), "implicit_prefs": True} if self.family == ALS
                  else asdict(self.ease))
        return {"family": self.family, **chosen, "holdout_days": self.holdout_days,
                "eval_k": self.eval_k}

    @classmethod
    def reproducing(cls, version: ModelVersion, database_url: str, home: Path,
                    spark_master: str | None, names: Names | None = None,
                    history_uri: str | None = None) -> TrainConfig:
        """Train ``version`` again as it was trained: on its kept training set, with its
        family, as-of date, holdout days, K and parameters (the seed too); never
        promoted."""
        params = version.params
        chosen = family_params(params)
        return cls(database_url=database_url, home=home, as_of=version.trained_as_of,
                   spark_master=spark_master, family=params.get("family", ALS),
                   **({"ease": chosen} if isinstance(chosen, EaseParams) else {"als": chosen}),
                   holdout_days=params["holdout_days"], eval_k=params["eval_k"],
                   promote_if_first=False, reproduces=version.version, names=names or Names(),
                   history_uri=history_uri)


def parse_args(argv: list[str]) -> TrainConfig:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", type=date.fromisoformat, default=None,
                        help="train on interactions up to the end of this date (YYYY-MM-DD)")
    parser.add_argument("--reproduce", type=int, default=None, metavar="VERSION",
                        help="train again on VERSION's kept training set, with its parameters "
                             "(instead of --as-of and the ALS options)")
    parser.add_argument("--database-url",
                        default=settings.writer_database_url or settings.database_url,
                        help="default: BATCHSCORE_WRITER_DATABASE_URL, else "
                             "BATCHSCORE_DATABASE_URL (keeps it off the command line)")
    parser.add_argument("--home", type=Path, default=settings.home,
                        help="state folder; the model is saved under HOME/models")
    parser.add_argument("--spark-master", default=None,
                        help="Spark master (ignored under spark-submit, which sets it)")
    parser.add_argument("--family", choices=TUNED_FAMILIES, default=ALS,
                        help="als (factor model) or ease (item-item model); with --tune, "
                             "also all (tune both, keep the better)")
    parser.add_argument("--tune", nargs="?", type=yes_or_no, const=True, default=False,
                        metavar="yes|no",
                        help="search the family's parameters on a validation window before "
                             "the holdout first (README, Tuning); --tune=no: do not")
    parser.add_argument("--budget-minutes", type=float, default=DEFAULT_BUDGET_MINUTES,
                        help="with --tune: the search's time budget")
    parser.add_argument("--l2", type=float, default=EaseParams().l2,
                        help="EASE's L2 regularisation")
    parser.add_argument("--rank", type=int, default=DEFAULT_RANK)
    parser.add_argument("--reg-param", type=float, default=DEFAULT_REG_PARAM)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA)
    parser.add_argument("--max-iter", type=int, default=DEFAULT_MAX_ITER)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout-days", type=int, default=DEFAULT_HOLDOUT_DAYS)
    parser.add_argument("--eval-k", type=int, default=DEFAULT_EVAL_K)
    parser.add_argument("--no-promote", action="store_true",
                        help="register as a candidate even when no version serves")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("give --database-url or set BATCHSCORE_DATABASE_URL")
    if args.reproduce is not None:
        given = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
                 if name not in ("reproduce", "database_url", "home", "spark_master")
                 and value != parser.get_default(name)]
        if given:
            parser.error(f"--reproduce uses the version's recorded as-of date and parameters; "
                         f"drop {', '.join(given)}")
        return TrainConfig.reproducing(get(engine_for(args.database_url, settings.names),
                                           args.reproduce),
                                       args.database_url, args.home.absolute(),
                                       args.spark_master, settings.names,
                                       settings.history_uri)
    if args.as_of is None:
        parser.error("give --as-of DATE (or --reproduce VERSION)")
    if args.tune:
        given = [f"--{name.replace('_', '-')}" for name in TUNED_OPTIONS
                 if getattr(args, name) != parser.get_default(name)]
        if given:
            parser.error(f"--tune searches the family's parameters; drop {', '.join(given)}")
    elif args.family == ALL:
        parser.error("--family all needs --tune: it tunes both families and trains the "
                     "better")
    elif args.budget_minutes != DEFAULT_BUDGET_MINUTES:
        parser.error("--budget-minutes needs --tune")
    try:
        return TrainConfig(
            database_url=args.database_url,
            home=args.home.absolute(),
            as_of=args.as_of,
            spark_master=args.spark_master,
            family=ALS if args.family == ALL else args.family,
            tuning=(TuneConfig(budget_minutes=args.budget_minutes, family=args.family,
                               seed=args.seed) if args.tune else None),
            als=AlsParams(rank=args.rank, reg_param=args.reg_param, alpha=args.alpha,
                          max_iter=args.max_iter, seed=args.seed),
            ease=EaseParams(l2=args.l2),
            ease_max_items=settings.ease_max_items,
            holdout_days=args.holdout_days,
            eval_k=args.eval_k,
            promote_if_first=not args.no_promote,
            names=settings.names,
            history_uri=settings.history_uri,
        )
    except ValueError as err:
        parser.error(str(err))


# The parameters a search chooses: not to be given with --tune.
TUNED_OPTIONS = ("rank", "reg_param", "alpha", "max_iter", "l2")


def yes_or_no(text: str) -> bool:
    if text.lower() not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")
    return text.lower() == "yes"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_args(sys.argv[1:] if argv is None else argv)
    version = run(config)
    print(f"registered model version {version.version} ({version.status})")
    return 0


def run(config: TrainConfig, spark: SparkSession | None = None) -> ModelVersion:
    """Train, evaluate, gate, save, export and register one model version.

    With ``config.reproduces``, the training set is that version's kept one,
    checked against its recorded SHA-256 and content hash before anything is
    fitted (:class:`TrainingSetError` otherwise); the new version records which
    version it reproduces and how far its holdout metrics are from the original's.
    """
    from jobs.platform.spark import spark_session

    engine = engine_for(config.database_url, config.names)
    ensure_schema(engine)
    run_id = f"{config.as_of.isoformat()}-{uuid.uuid4().hex[:8]}"
    work_dir = config.home / "staging" / f"train-{run_id}"
    training_set = work_dir / TRAINING_SET_FILE
    # Extract
    original = get(engine, config.reproduces) if config.reproduces is not None else None
    try:
        if original is not None:
            stage_training_set(original, training_set)
        else:
            root = history.root(engine, config.history_uri, config.home)
            history.sync(engine, root)
            training_set.parent.mkdir(parents=True, exist_ok=True)
            if history.write_snapshot(root, config.as_of, training_set) == 0:
                raise InputError(f"no interactions up to {config.as_of}; load or generate "
                                 "data first")
        serving = serving_or_none(engine)
        gate_config = GateConfig.load()
        spark = spark or spark_session("batchscore-train", config.spark_master)
        interactions = read_training_set(spark, training_set).cache()
        with spark_progress(spark, "reading interactions"):
            snapshot = data_snapshot(interactions)
        if original is not None:
            check_content_hash(original, snapshot)
        check_als_ids(snapshot)
        serving_model = load_serving(serving) if serving is not None else None
        # Transform
        tuning = None
        if config.tuning is not None:
            validation = validation_window(interactions, holdout_start(config),
                                           config.holdout_days)
            try:
                tuned = search(validation, config.eval_k, config.tuning,
                               gate_config.gate_metric, {ALS: config.als, EASE: config.ease},
                               config.ease_max_items, work_dir)
            finally:
                validation.release()
            config, tuning = with_tuned(config, tuned), tuned.report
        name = f"{config.family}-{run_id}"
        metrics, fairness = evaluate(engine, interactions, config, serving, serving_model,
                                     work_dir)
        logger.info("holdout NDCG@%d: %s %.4f, popularity %.4f", config.eval_k,
                    config.family, candidate_metrics(metrics)["ndcg_at_k"],
                    metrics["popularity"]["ndcg_at_k"])
        logger.info("refitting %s on all %d interactions up to %s", config.family,
                    snapshot["rows"], config.as_of)
        model = fit(interactions, config.model_params, work_dir, config.ease_max_items,
                    f"{config.family} fit (all events)")
        differential = None
        if serving_model is not None:
            with spark_progress(spark, "comparison with serving"):
                differential = compare_with_serving(model.scoring, serving_model, interactions,
                                                    config.eval_k,
                                                    gate_config.differential.sample_users)
        # Load
        artifact = config.home / "models" / name
        with spark_progress(spark, "saving the model"):
            artifacts = model.save(artifact)
        interactions.unpersist()
        kept = Path(shutil.move(training_set, artifact / TRAINING_SET_FILE))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    gates = judge(metrics, differential, serving.version if serving else None, gate_config)
    logger.info("gates: %s", gates["reason"])
    reports: dict[str, Any] = {"fairness": fairness}
    if tuning is not None:
        reports["tuning"] = tuning
    if original is not None:
        reports["reproduction"] = reproduction_report(original, metrics, snapshot)
    new_model = NewModel(
        created_by=current_user(),
        trained_as_of=config.as_of,
        kind=config.family,
        params=config.params(),
        metrics=metrics,
        data_snapshot=snapshot,
        code_version=code_version(),
        artifact_uri=artifact.as_uri(),
        artifacts=[*artifacts,
                   {**artifact_record(TRAINING_SET, kept), "rows": snapshot["rows"]}],
        gates=gates,
        reports=reports,
    )
    version = register(engine, new_model, promote_if_first=config.promote_if_first)
    (artifact / MODEL_METADATA_FILE).write_text(json.dumps({"model_version": version.version}))
    return version


def with_tuned(config: TrainConfig, tuned: Tuned) -> TrainConfig:
    """``config`` with the family and parameters a search chose; as it is when no trial
    completed in time."""
    if isinstance(tuned.params, EaseParams):
        return replace(config, family=EASE, ease=tuned.params)
    if isinstance(tuned.params, AlsParams):
        return replace(config, family=ALS, als=tuned.params)
    return config


def read_training_set(spark: SparkSession, path: Path) -> DataFrame:
    """The training set as Spark reads it, with the columns of the interaction history."""
    from jobs.scoring.transforms import INTERACTIONS_SCHEMA

    return spark.read.schema(INTERACTIONS_SCHEMA).parquet(str(path))


def stage_training_set(original: ModelVersion, target: Path) -> None:
    """Put ``original``'s kept training set at ``target``, refusing when it is gone or its
    SHA-256 is not the recorded one."""
    record = original.artifact(TRAINING_SET)
    if record is None:
        raise TrainingSetError(
            f"model version {original.version} has no kept training set (it was trained "
            "before training sets were kept), so it cannot be reproduced")
    path = artifact_path(record["uri"])
    if not path.is_file():
        raise TrainingSetError(
            f"the training set of model version {original.version} is missing: {path} is "
            "gone (removed with the version's artifacts?), so it cannot be reproduced")
    found = sha256_of(path)
    if found != record["sha256"]:
        raise TrainingSetError(
            f"the training set of model version {original.version} was changed: {path} has "
            f"SHA-256 {found}, the registry recorded {record['sha256']}; not reproducing")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The same bytes under both versions, without a second copy on disk.
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)


def check_content_hash(original: ModelVersion, snapshot: dict[str, Any]) -> None:
    """Refuse a training set whose rows are not the ones ``original`` was trained on."""
    recorded = original.data_snapshot["content_hash"]
    if snapshot["content_hash"] != recorded:
        raise TrainingSetError(
            f"the training set of model version {original.version} hashes to "
            f"{snapshot['content_hash']} ({snapshot['rows']} rows), but the version was "
            f"trained on {recorded} ({original.data_snapshot['rows']} rows); not reproducing")


# The holdout metrics a reproduction is compared on, for the model and the baseline.
COMPARED_METRICS = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k",
                    "catalog_coverage")


def reproduction_report(original: ModelVersion, metrics: dict[str, Any],
                        snapshot: dict[str, Any]) -> dict[str, Any]:
    """What a reproduction records: the version reproduced, both data hashes, and the
    largest difference between its holdout metrics and the original's."""
    pairs = [(metrics[CANDIDATE], candidate_metrics(original.metrics)),
             (metrics["popularity"], original.metrics["popularity"])]
    differences = [abs(ours[name] - theirs[name]) for ours, theirs in pairs
                   for name in COMPARED_METRICS if name in theirs]
    return {"of_version": original.version,
            "original_content_hash": original.data_snapshot["content_hash"],
            "content_hash": snapshot["content_hash"],
            "largest_metric_difference": max(differences, default=0.0)}


def holdout_start(config: TrainConfig) -> date:
    return config.as_of - timedelta(days=config.holdout_days)


def evaluate(engine: Engine, interactions: DataFrame, config: TrainConfig,
             serving: ModelVersion | None, serving_model: ScoringModel | None, work: Path
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit on the events before the holdout and rank it: the metrics and the fairness report.

    The serving model ranks the same holdout. When it was trained on part of
    the holdout (it is newer than the holdout's start), its own parameters are
    fitted again on the candidate's training events instead, so that neither
    side has seen the events it is judged on.
    """
    from jobs.scoring.transforms import time_split
    from jobs.training import holdout
    from jobs.training.fairness import fairness_report

    cutoff = int(day_end(holdout_start(config)).timestamp())
    train, holdout_pairs = time_split(interactions, cutoff)
    logger.info("fitting %s on events before the %d-day holdout", config.family,
                config.holdout_days)
    reference, compared_as = serving_model, "artifact"
    if serving is not None and serving.trained_as_of > holdout_start(config):
        logger.info("serving version %d was trained on part of the holdout: refitting its "
                    "parameters on the candidate's training events", serving.version)
        reference = fit(train, family_params(serving.params), work, config.ease_max_items,
                        f"{serving.params.get('family', ALS)} refit (serving)").scoring
        compared_as = "its parameters refitted on the candidate's training events"
    candidate = fit(train, config.model_params, work, config.ease_max_items,
                    f"{config.family} fit (candidate)").scoring
    with spark_progress(train.sparkSession, "holdout evaluation"):
        evaluation = holdout.evaluate(train, holdout_pairs, candidate, config.eval_k, reference)
    metrics = summary(evaluation)
    if serving is not None:
        metrics["serving"].update({"version": serving.version, "compared_as": compared_as})
    report = fairness_report(
        evaluation.recommendations, evaluation.holdout.truth, evaluation.holdout.activity,
        evaluation.holdout.item_popularity, config.eval_k,
        attributes=user_attributes(engine, list(evaluation.holdout.truth)),
    )
    return metrics, report


def compare_with_serving(model: ScoringModel, serving_model: ScoringModel,
                         interactions: DataFrame, k: int, sample_size: int) -> Differential:
    """The candidate's and the serving model's top-K on a fixed sample of users."""
    from jobs.contracts.canary import fixed_sample
    from jobs.scoring.transforms import seen_items
    from jobs.training.differential import compare
    from jobs.training.holdout import lists_with_scores

    users = np.array([row["user_id"] for row in
                      interactions.select("user_id").distinct().collect()], dtype=np.int64)
    sample = fixed_sample(users, sample_size)
    spark = interactions.sparkSession
    chosen = spark.createDataFrame([(int(user),) for user in sample], "user_id long")
    seen = seen_items(interactions.join(chosen, "user_id", "left_semi")).cache()
    try:
        return compare(lists_with_scores(model.ranked_lists(seen, k)),
                       lists_with_scores(serving_model.ranked_lists(seen, k)), k,
                       same_family=model.family == serving_model.family)
    finally:
        seen.unpersist()


def load_serving(version: ModelVersion) -> ScoringModel:
    from jobs.scoring.model import load_model

    return load_model(artifact_path(version.artifact_uri))


def family_params(params: dict[str, Any]) -> AlsParams | EaseParams:
    """A recorded version's ``params`` as its family's parameters (ALS before families
    were recorded)."""
    if params.get("family", ALS) == EASE:
        return EaseParams(l2=params["l2"])
    return AlsParams(**{name: params[name] for name in AlsParams.__dataclass_fields__})


@dataclass(frozen=True)
class FittedModel:
    """A model just fitted: what scores with it, and the family's own object to save."""

    scoring: ScoringModel
    spark_model: ALSModel | None = None
    item_item_model: item_item.ItemItemModel | None = None

    def save(self, folder: Path) -> list[dict[str, Any]]:
        """Save the model into ``folder`` with its portable artifact; their records.

        ALS: the Spark model, and an MLeap bundle beside it that must score like
        Spark (nothing is kept otherwise). EASE: the portable item-item files
        (:mod:`jobs.scoring.item_item`), the artifact the nightly scores with,
        since MLeap has no op for an item-item model.
        """
        if self.item_item_model is not None:
            item_item.save(self.item_item_model, folder)
            return [{**artifact_record(ITEM_ITEM_MODEL, folder),
                     "format": f"{item_item.FORMAT} {item_item.FORMAT_VERSION}",
                     "mleap": "MLeap has no op for an item-item model: saved in the "
                              "portable format of schemas/item-item-model.md instead"}]
        assert self.spark_model is not None
        self.spark_model.save(str(folder))
        # Spark's files only: the training set and the metadata file join them later.
        record = artifact_record("spark_als_model", folder)
        try:
            # Raises when the bundle does not score like Spark: nothing is registered.
            bundle = export_als(self.spark_model, folder.with_name(folder.name + ".mleap"))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return [record, {"kind": "mleap_bundle", "uri": bundle.path.absolute().as_uri(),
                         **bundle.to_json()}]


# The artifact kind of an EASE version's model folder.
ITEM_ITEM_MODEL = "item_item_model"


def fit(interactions: DataFrame, params: AlsParams | EaseParams, work: Path,
        max_items: int = DEFAULT_EASE_MAX_ITEMS, description: str = "fit") -> FittedModel:
    """The family of ``params`` fitted on ``interactions``; EASE keeps its partial Gram
    matrices under ``work`` and refuses a catalogue of more than ``max_items``."""
    from jobs.scoring.model import from_als, from_item_item

    if isinstance(params, EaseParams):
        model = fit_ease(interactions, params, max_items, work, description)
        return FittedModel(scoring=from_item_item(model), item_item_model=model)
    spark_model = fit_als(interactions, params, description)
    return FittedModel(scoring=from_als(spark_model), spark_model=spark_model)


def user_attributes(engine: Engine, users: list[int]) -> dict[int, dict[str, Any]]:
    """Attributes of ``users`` from ``batchscore.users`` (most users may have none)."""

    with engine.connect() as conn:
        rows = conn.execute(statement(conn,
            "SELECT user_id, attributes FROM {schema}.users WHERE user_id = ANY(:ids)"),
            {"ids": users}).all()
    return {int(user): dict(attributes) for user, attributes in rows}


def data_snapshot(interactions: DataFrame) -> dict[str, Any]:
    """Row count, id ranges, date range, an order-independent content hash, and the days
    with events and the median rows and active users of such a day."""
    from pyspark.sql import functions as F

    row = interactions.agg(
        F.count("*").alias("rows"),
        F.countDistinct("user_id").alias("users"),
        F.countDistinct("item_id").alias("items"),
        F.max("user_id").alias("max_user_id"),
        F.max("item_id").alias("max_item_id"),
        F.min("event_at").alias("first_event"),
        F.max("event_at").alias("last_event"),
        # Summing per-row hashes makes the digest independent of row order.
        F.sum(F.xxhash64("user_id", "item_id", "rating", "event_at").cast("decimal(38,0)"))
        .alias("hash_sum"),
    ).first()
    # The typical day (UTC), the volume gate's baseline on a night with no earlier runs.
    daily = interactions.groupBy(F.floor(F.col("event_at") / 86_400)).agg(
        F.count("*").alias("rows"), F.countDistinct("user_id").alias("users"),
    ).agg(F.count("*").alias("days"), F.median("rows").alias("rows"),
          F.median("users").alias("users")).first()
    return {
        "rows": int(row["rows"]),
        "users": int(row["users"]),
        "items": int(row["items"]),
        "max_user_id": int(row["max_user_id"]),
        "max_item_id": int(row["max_item_id"]),
        "first_event": datetime.fromtimestamp(row["first_event"], UTC).isoformat(),
        "last_event": datetime.fromtimestamp(row["last_event"], UTC).isoformat(),
        "content_hash": f"xxhash64-sum:{int(row['hash_sum']) % 2**64:016x}",
        "days": int(daily["days"]),
        "median_daily_rows": float(daily["rows"]),
        "median_daily_users": float(daily["users"]),
    }


def check_als_ids(snapshot: dict[str, Any]) -> None:
    for kind in ("user", "item"):
        largest = snapshot[f"max_{kind}_id"]
        if largest > MAX_ID:
            raise InputError(
                f"{kind} id {largest} is too large for ALS, which needs ids up to {MAX_ID}"
            )


if __name__ == "__main__":
    sys.exit(main())
