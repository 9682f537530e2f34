"""Hyperparameter tuning for the training job: each family's parameters searched on a
validation split within a time budget.

**Where.** The gates judge a candidate on the last ``holdout_days`` before the
as-of date; tuning on those days would choose the parameters on the very events
they are then judged on. So the search never sees the holdout: its validation
window (:func:`validation_window`) is the ``holdout_days`` days before the holdout
starts, split the same way (:func:`jobs.scoring.transforms.time_split`), and each
trial is fitted on the events before that window. A caller that judges models on
another kind of split (the quality benchmark holds out each user's latest events)
validates on the same kind, carved from its own training part
(:func:`validation_from`). The chosen parameters then go through the ordinary
training run (fitted before the holdout, judged against popularity and the
serving model, refitted on everything, registered through the gates).

**How.** `Optuna <https://optuna.org>`_ in memory: a TPE sampler with a fixed
seed, the family's current parameters as its first trial (so the search starts
from, and can only improve on, the defaults on validation), and a
successive-halving pruner. An ALS trial is fitted at :data:`ALS_RUNGS` iterations
first, reports the validation metric after each and is stopped when it is not in
the better half of the trials that reached that rung; only the survivors are
fitted with :data:`TUNED_MAX_ITER` iterations (Spark's ALS cannot resume, so each
rung is a fit of its own, counted in the trial's time). An EASE trial is one
solve of the validation Gram matrix, computed once per search, so it needs no
pruning; its one parameter needs few trials (:data:`EASE_MAX_TRIALS`).

**Budget.** The search for one family stops starting trials when its time is up
(Optuna's ``timeout``), and a trial does not start a fit that the fits so far
say would end after it (it is recorded as pruned, ``stopped_by: budget``): the
search ends within the budget plus at most one fit's misjudged time. Tuning
``all`` gives EASE at most :data:`EASE_BUDGET_SHARE` of the budget and ALS the
rest, and keeps the family whose best trial scores higher.

The metric is the gate metric (``promotion.gate_metric``), computed on the
driver by the scorer's own block code (:func:`jobs.scoring.transforms.score_arrow_block`)
on at most :data:`jobs.training.holdout.MAX_EVAL_USERS` validation users.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from jobs.data.load import InputError
from jobs.data.store import day_end
from jobs.platform.progress import progress, spark_progress
from jobs.scoring.model import ALS, EASE, FAMILIES, item_matrix
from jobs.training.als import DEFAULT_MAX_ITER, AlsParams, fit_als
from jobs.training.ease import CatalogTooLargeError, EaseParams, gram_matrix, solve
from jobs.training.holdout import MAX_EVAL_USERS, Holdout
from jobs.training.metrics import evaluate as ranking_metrics

if TYPE_CHECKING:
    import optuna
    from pyspark.sql import DataFrame

    from jobs.scoring.transforms import ItemCatalog

logger = logging.getLogger(__name__)

# Tuning both families and keeping the better one.
ALL = "all"
TUNED_FAMILIES = (*FAMILIES, ALL)
# Fits a tuning run and a nightly training in a nightly window on two cores at the
# sample size (3,000 users x 800 items x 60 days; README, "Tuning").
DEFAULT_BUDGET_MINUTES = 15.0
# The iterations at which an ALS trial reports and may be stopped, and those it
# ends with (the untuned default, so a tuned model costs what an untuned one does).
ALS_RUNGS = (2, 4)
TUNED_MAX_ITER = DEFAULT_MAX_ITER
# Successive halving keeps the better 1 / REDUCTION_FACTOR at each rung.
REDUCTION_FACTOR = 2
# EASE has one parameter: a score of trials maps it well.
EASE_MAX_TRIALS = 20
# With ``all``, EASE's part of the budget at most; ALS gets the rest.
EASE_BUDGET_SHARE = 0.25
# The search spaces, as recorded with a tuned version. ALS's alpha reaches down to
# near-uniform confidence: on MovieLens 100K split per user (make bench-quality's
# split), regParam 0.03-0.1 with alpha 0.1-0.3 scored NDCG@10 0.195-0.206, EASE's level
# (0.199), where alpha 0.5 and more scored less (0.187 at regParam 0.03).
ALS_SPACE = {"rank": [16, 128, "log"], "reg_param": [0.01, 10.0, "log"],
             "alpha": [0.03, 40.0, "log"]}
EASE_SPACE = {"l2": [1.0, 5000.0, "log"]}


@dataclass(frozen=True)
class TuneConfig:
    """What a tuning run may do: which families, for how long, how many trials at
    most per family (None: as many as the budget allows), the sampler's seed."""

    budget_minutes: float = DEFAULT_BUDGET_MINUTES
    family: str = ALL
    max_trials: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if not self.budget_minutes > 0:
            raise ValueError(f"--budget-minutes must be positive, got {self.budget_minutes}")
        if self.family not in TUNED_FAMILIES:
            raise ValueError(f"--family must be one of {', '.join(TUNED_FAMILIES)}, got "
                             f"{self.family!r}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ValueError(f"at least one trial per family, got {self.max_trials}")

    @property
    def families(self) -> tuple[str, ...]:
        # EASE first under ``all``: its trials are cheap, ALS takes what it leaves.
        return (EASE, ALS) if self.family == ALL else (self.family,)


@dataclass(frozen=True)
class Validation:
    """What trials are judged on: the events they are fitted on, and what the validation
    users did after them (their truth and what they had seen)."""

    fit_events: DataFrame
    holdout: Holdout
    # One row per validation user: ``user_id`` and ``seen`` (in ``fit_events``).
    users_seen: pa.RecordBatch
    # How the validation part was split off, for a person (``label``) and the report.
    label: str
    split: dict[str, Any]

    def score(self, lists: dict[int, list[int]], k: int, metric: str) -> float:
        return ranking_metrics(lists, self.holdout.truth, k, self.holdout.catalog,
                               self.holdout.item_popularity)[metric]

    def to_json(self) -> dict[str, Any]:
        return {**self.split, "users": len(self.holdout.truth)}

    def release(self) -> None:
        """Drop the cached fit events (the validation is not used after)."""
        self.fit_events.unpersist()


@dataclass(frozen=True)
class Tuned:
    """A search's outcome: the family and parameters chosen (None when no trial
    completed in time), and the record kept with the version."""

    family: str | None
    params: AlsParams | EaseParams | None
    report: dict[str, Any]


@dataclass
class Budget:
    """A deadline on the monotonic clock, and what each kind of fit took so far."""

    deadline: float
    # (family, iterations) -> the longest such fit and its scoring, in seconds (of any
    # rank: a larger rank than seen so far may take longer, the slack the README states).
    seen: dict[tuple[str, int], float] = field(default_factory=dict)

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, kind: str, iterations: int, seconds: float) -> None:
        key = (kind, iterations)
        self.seen[key] = max(seconds, self.seen.get(key, 0.0))

    def expected(self, kind: str, iterations: int) -> float:
        """A fit's likely seconds: the longest of its kind with as many iterations or
        more, else the one with the most iterations scaled up (the fixed cost of a fit
        scaled too, which errs long); 0 before the first."""
        times = [(its, seconds) for (name, its), seconds in self.seen.items() if name == kind]
        longer = [seconds for its, seconds in times if its >= iterations]
        if longer:
            return max(longer)
        if not times:
            return 0.0
        its, seconds = max(times)
        return seconds * iterations / its

    def allows(self, kind: str, iterations: int) -> bool:
        return self.expected(kind, iterations) <= self.left


def validation_window(interactions: DataFrame, holdout_start: date, days: int,
                      ) -> Validation:
    """The ``days`` days before ``holdout_start`` as a validation window over
    ``interactions``, split as the holdout is; the holdout's days never enter it."""
    from jobs.scoring.transforms import events_before, time_split

    start = holdout_start - timedelta(days=days)
    before_holdout = events_before(interactions, int(day_end(holdout_start).timestamp()))
    fit_events, pairs = time_split(before_holdout, int(day_end(start).timestamp()))
    return validation_from(
        fit_events, pairs, f"the validation window {start} .. {holdout_start}",
        {"start": start.isoformat(), "end": holdout_start.isoformat(), "days": days},
        hint="tune on more days of data or a smaller --holdout-days")


def validation_from(fit_events: DataFrame, pairs: DataFrame, label: str,
                    split: dict[str, Any], hint: str = "") -> Validation:
    """A validation of trials fitted on ``fit_events`` and judged on ``pairs`` (the
    (user_id, item_id) pairs to find; users and items the fit events know, not already
    seen in them), however they were split; ``label`` and ``split`` describe how."""
    from pyspark.sql import functions as F

    from jobs.scoring.transforms import item_popularity, seen_items

    fit_events = fit_events.cache()
    spark = fit_events.sparkSession
    with spark_progress(spark, "validation split"):
        rows = (pairs.groupBy("user_id").agg(F.collect_set("item_id").alias("items"))
                .orderBy("user_id").limit(MAX_EVAL_USERS).collect())
        if not rows:
            fit_events.unpersist()
            raise InputError(f"{label} is empty: no known user has a new event in it"
                             + (f"; {hint}" if hint else ""))
        truth = {int(row["user_id"]): {int(item) for item in row["items"]} for row in rows}
        users = spark.createDataFrame([(user,) for user in truth], "user_id long")
        seen = (seen_items(fit_events).join(users, "user_id", "left_semi")
                .orderBy("user_id").toPandas())
        activity = {int(row["user_id"]): int(row["events"]) for row in
                    fit_events.join(users, "user_id", "left_semi").groupBy("user_id")
                    .agg(F.count("*").alias("events")).collect()}
        popularity = item_popularity(fit_events).toPandas()
    holdout = Holdout(truth=truth, activity=activity,
                      item_popularity=dict(zip(popularity["item_id"].astype(int),
                                               popularity["score"].astype(int), strict=True)))
    users_seen = pa.RecordBatch.from_arrays(
        [pa.array(seen["user_id"].to_numpy(dtype=np.int64)),
         pa.array([list(items) for items in seen["seen"]], pa.list_(pa.int64()))],
        names=["user_id", "seen"])
    return Validation(fit_events=fit_events, holdout=holdout, users_seen=users_seen,
                      label=label, split=split)


def ranked(catalog: ItemCatalog, batch: pa.RecordBatch, k: int) -> dict[int, list[int]]:
    """Each user's top-``k`` unseen items, scored by the nightly scorer's block code."""
    from jobs.scoring.transforms import score_arrow_block, with_known_history

    if catalog.item_item:
        batch = with_known_history(batch, catalog)
    out = score_arrow_block(batch, catalog, k)
    return dict(zip(out.column("user_id").to_pylist(), out.column("items").to_pylist(),
                    strict=True))


def als_lists(validation: Validation, params: AlsParams, k: int, description: str
              ) -> dict[int, list[int]]:
    """ALS fitted on the validation's fit events, ranking its users (those it has
    factors for)."""
    from jobs.scoring.transforms import ItemCatalog

    model = fit_als(validation.fit_events, params, description)
    item_ids, factors = item_matrix(model)
    frame = model.userFactors.toPandas()
    features = dict(zip(frame["id"].astype(int), frame["features"], strict=True))
    batch = validation.users_seen
    known = np.array([user in features for user in batch.column("user_id").to_pylist()],
                     dtype=bool)
    batch = batch.filter(pa.array(known))
    users = batch.column("user_id").to_pylist()
    with_features = pa.RecordBatch.from_arrays(
        [batch.column("user_id"),
         pa.array([list(features[user]) for user in users], pa.list_(pa.float32())),
         batch.column("seen")], names=["user_id", "features", "seen"])
    return ranked(ItemCatalog.build(item_ids, factors, k), with_features, k)


def search(validation: Validation, k: int, tuning: TuneConfig, metric: str,
           starting_points: dict[str, AlsParams | EaseParams], max_items: int, work: Path
           ) -> Tuned:
    """Search ``tuning.families`` on ``validation`` (:func:`validation_window` for
    training); the best trial by ``metric`` over all of them, with every trial's record.

    ``starting_points`` holds each family's first trial (its current parameters);
    ``max_items`` bounds an EASE catalogue (a larger one skips EASE under ``all``).
    The caller releases ``validation`` after.
    """
    import optuna

    started = time.monotonic()
    deadline = started + tuning.budget_minutes * 60
    logger.info("tuning %s for %.1f minutes on %s (%d users), by validation %s@%d",
                ", ".join(tuning.families), tuning.budget_minutes, validation.label,
                len(validation.holdout.truth), metric, k)
    verbosity = optuna.logging.get_verbosity()
    # Each trial is logged below, once; Optuna's own lines would repeat them.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    try:
        for family in tuning.families:
            share = (EASE_BUDGET_SHARE if family == EASE and tuning.family == ALL else 1.0)
            budget = Budget(deadline=min(deadline, time.monotonic()
                                         + share * (deadline - time.monotonic())))
            try:
                study = study_for(family, validation, tuning, metric, k, budget,
                                  starting_points[family], max_items, work)
            except CatalogTooLargeError as err:
                if tuning.family != ALL:
                    raise
                logger.warning("tuning: EASE skipped: %s", err)
                skipped[family] = str(err)
                continue
            trials += [trial_record(family, trial) for trial in study.trials]
    finally:
        optuna.logging.set_verbosity(verbosity)
    complete = [trial for trial in trials if trial["state"] == "complete"]
    best = max(complete, key=lambda trial: trial["value"], default=None)
    report = {
        "method": f"TPE sampler (seed {tuning.seed}) with successive halving "
                  f"(reduction factor {REDUCTION_FACTOR}) on ALS iterations "
                  f"{', '.join(map(str, ALS_RUNGS))} of {TUNED_MAX_ITER}",
        "library": f"optuna {optuna.__version__}",
        "families": list(tuning.families),
        "budget_minutes": tuning.budget_minutes,
        "seconds": round(time.monotonic() - started, 1),
        "metric": metric,
        "k": k,
        "validation": validation.to_json(),
        "spaces": {ALS: {**ALS_SPACE, "max_iter": TUNED_MAX_ITER}, EASE: EASE_SPACE},
        "trials": trials,
        "best": best and {key: best[key] for key in ("family", "number", "params", "value")},
        **({"skipped": skipped} if skipped else {}),
    }
    if best is None:
        logger.warning("tuning: no trial completed within %.1f minutes; training with the "
                       "current parameters", tuning.budget_minutes)
        return Tuned(family=None, params=None, report=report)
    logger.info("tuning chose %s %s: validation %s %.4f (%d trials, %.0f s)", best["family"],
                best["params"], metric, best["value"], len(trials), report["seconds"])
    chosen = (EaseParams(**best["params"]) if best["family"] == EASE
              else AlsParams(**best["params"], max_iter=TUNED_MAX_ITER, seed=tuning.seed))
    return Tuned(family=best["family"], params=chosen, report=report)


def study_for(family: str, validation: Validation, tuning: TuneConfig, metric: str, k: int,
              budget: Budget, start: AlsParams | EaseParams, max_items: int, work: Path
              ) -> optuna.Study:
    """One family's study, run until its budget or trial limit."""
    import optuna

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=tuning.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=ALS_RUNGS[0], reduction_factor=REDUCTION_FACTOR))
    if family == EASE:
        assert isinstance(start, EaseParams)
        objective = ease_objective(validation, metric, k, budget, max_items, work)
        study.enqueue_trial({"l2": start.l2})
        limit = min(tuning.max_trials or EASE_MAX_TRIALS, EASE_MAX_TRIALS)
    else:
        assert isinstance(start, AlsParams)
        objective = als_objective(validation, metric, k, budget, tuning.seed)
        study.enqueue_trial({"rank": start.rank, "reg_param": start.reg_param,
                             "alpha": start.alpha})
        limit = tuning.max_trials
    seconds = int(max(1.0, budget.left))
    with progress(f"tuning {family}", total=seconds, unit="s",
                  verb="of the budget used") as shown:
        began = time.monotonic()

        def logged(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            log_trial(family, trial, metric)
            shown(min(seconds, int(time.monotonic() - began)))

        if budget.left > 0:
            study.optimize(objective, n_trials=limit, timeout=budget.left, callbacks=[logged])
    return study


def als_objective(validation: Validation, metric: str, k: int, budget: Budget, seed: int
                  ) -> Callable[[optuna.Trial], float]:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        low, high, _ = ALS_SPACE["rank"]
        params = AlsParams(
            rank=trial.suggest_int("rank", low, high, log=True),
            reg_param=trial.suggest_float("reg_param", *ALS_SPACE["reg_param"][:2], log=True),
            alpha=trial.suggest_float("alpha", *ALS_SPACE["alpha"][:2], log=True),
            max_iter=TUNED_MAX_ITER, seed=seed)
        for iterations in (*ALS_RUNGS, TUNED_MAX_ITER):
            stop_when_spent(trial, budget, ALS, iterations)
            began = time.monotonic()
            lists = als_lists(validation, replace(params, max_iter=iterations), k,
                              f"als trial {trial.number}, {iterations} iterations")
            value = validation.score(lists, k, metric)
            budget.record(ALS, iterations, time.monotonic() - began)
            if iterations == TUNED_MAX_ITER:
                return value
            trial.report(value, iterations)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric} {value:.4f} after {iterations} iterations")
        raise AssertionError("unreachable: the last rung returns")

    return objective


def ease_objective(validation: Validation, metric: str, k: int, budget: Budget,
                   max_items: int, work: Path) -> Callable[[optuna.Trial], float]:
    """EASE trials over one Gram matrix of the validation's fit events, computed here."""
    from pyspark.sql import functions as F

    from jobs.scoring.transforms import ItemCatalog

    events = validation.fit_events
    spark = events.sparkSession
    with spark_progress(spark, "tuning ease: Gram matrix"):
        item_ids = np.sort(np.array([row[0] for row in events.select("item_id").distinct()
                                     .collect()], dtype=np.int64))
        if len(item_ids) > max_items:
            raise CatalogTooLargeError(
                f"{len(item_ids):,} items, more than BATCHSCORE_EASE_MAX_ITEMS ({max_items:,})")
        seen = events.groupBy("user_id").agg(
            F.array_distinct(F.collect_list("item_id")).alias("seen"))
        folder = work / f"tuning-gram-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        try:
            gram = gram_matrix(seen, item_ids, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def objective(trial: optuna.Trial) -> float:
        l2 = trial.suggest_float("l2", *EASE_SPACE["l2"][:2], log=True)
        stop_when_spent(trial, budget, EASE, 1)
        began = time.monotonic()
        # solve() overwrites its input: the matrix serves every trial.
        catalog = ItemCatalog.build(item_ids, solve(gram.copy(), l2), k, item_item=True)
        value = validation.score(ranked(catalog, validation.users_seen, k), k, metric)
        budget.record(EASE, 1, time.monotonic() - began)
        return value

    return objective


def stop_when_spent(trial: optuna.Trial, budget: Budget, kind: str, iterations: int) -> None:
    """Stop the study, and prune ``trial``, when its next fit would end after the budget."""
    import optuna

    if budget.allows(kind, iterations):
        return
    trial.set_user_attr("stopped_by", "budget")
    trial.study.stop()
    raise optuna.TrialPruned(f"{budget.left:.0f} s left, a fit of {iterations} iterations "
                             f"takes about {budget.expected(kind, iterations):.0f} s")


def trial_record(family: str, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial as the version records it: values per step (ALS iterations)."""
    import optuna

    complete = trial.state == optuna.trial.TrialState.COMPLETE
    values = {str(step): value for step, value in sorted(trial.intermediate_values.items())}
    if complete and family == ALS:
        values[str(TUNED_MAX_ITER)] = trial.value
    return {
        "family": family,
        "number": trial.number,
        "params": {name: (int(value) if name == "rank" else float(value))
                   for name, value in trial.params.items()},
        "values": values,
        # Optuna gives a pruned trial its last reported value: only a complete one counts.
        "value": trial.value if complete else None,
        "state": trial.state.name.lower(),
        "seconds": round(trial.duration.total_seconds(), 2) if trial.duration else None,
        **({"stopped_by": trial.user_attrs["stopped_by"]}
           if "stopped_by" in trial.user_attrs else {}),
    }


def log_trial(family: str, trial: optuna.trial.FrozenTrial, metric: str) -> None:
    record = trial_record(family, trial)
    params = ", ".join(f"{name} {value:.4g}" for name, value in record["params"].items())
    if record["state"] == "complete":
        outcome = f"complete, {metric} {record['value']:.4f}"
    elif record.get("stopped_by") == "budget":
        outcome = "stopped: the budget is spent"
    elif record["values"]:
        step, value = list(record["values"].items())[-1]
        outcome = f"pruned after {step} iterations, {metric} {value:.4f}"
    else:
        outcome = record["state"]
    logger.info("tuning %s: trial %d (%s) %s in %.1f s", family, trial.number, params,
                outcome, record["seconds"] or 0.0)
