"""Tuning before training: a search on the validation window records every trial,
stops poor ALS trials early, keeps the best by validation value, and what it chose
is trained, judged and registered as any version is; within its budget."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest

from jobs.data import history
from jobs.data.generate import GenerateConfig, generate_and_load
from jobs.lifecycle import registry
from jobs.training.train import TrainConfig, holdout_start, read_training_set, run
from jobs.training.tune import TUNED_MAX_ITER, TuneConfig, search, validation_window

pytestmark = pytest.mark.spark

AS_OF = date(2026, 11, 20)


@pytest.fixture
def config(engine, endpoints, tmp_path: Path) -> TrainConfig:
    generate_and_load(engine, GenerateConfig(users=300, items=80, days=30, seed=3,
                                             end_date=AS_OF))
    return TrainConfig(database_url=endpoints.database_url, home=tmp_path / "home",
                       as_of=AS_OF, spark_master=None)


def test_a_search_records_its_trials_prunes_keeps_the_best_and_registers_it(
        config, engine, spark) -> None:
    tuned = replace(config, tuning=TuneConfig(budget_minutes=5, family="all", max_trials=3))
    version = run(tuned, spark)

    report = version.reports["tuning"]
    assert report["validation"]["end"] == (AS_OF - timedelta(days=7)).isoformat()
    assert report["validation"]["start"] == (AS_OF - timedelta(days=14)).isoformat()
    trials = report["trials"]
    als = [trial for trial in trials if trial["family"] == "als"]
    ease = [trial for trial in trials if trial["family"] == "ease"]
    assert [trial["number"] for trial in als] == [0, 1, 2]
    assert [trial["number"] for trial in ease] == [0, 1, 2]
    # The current parameters come first.
    assert als[0]["params"] == {"rank": 32, "reg_param": 1.0, "alpha": 2.0}
    assert ease[0]["params"] == {"l2": 200.0}
    assert not any(trial.get("stopped_by") for trial in trials)
    # Successive halving stopped at least one ALS trial after its first rungs.
    pruned = [trial for trial in als if trial["state"] == "pruned"]
    assert pruned, [(trial["state"], trial["values"]) for trial in als]
    for trial in pruned:
        assert trial["value"] is None and set(trial["values"]) <= {"2", "4"}
    for trial in (trial for trial in als if trial["state"] == "complete"):
        assert list(trial["values"]) == ["2", "4", str(TUNED_MAX_ITER)]
        assert trial["value"] == trial["values"][str(TUNED_MAX_ITER)]
    assert all(trial["state"] == "complete" for trial in ease)

    complete = [trial for trial in trials if trial["state"] == "complete"]
    best = max(complete, key=lambda trial: trial["value"])
    assert report["best"] == {key: best[key] for key in ("family", "number", "params", "value")}
    # What was chosen is what was trained, judged by the gates and recorded as params.
    assert version.kind == best["family"]
    assert {name: version.params[name] for name in best["params"]} == best["params"]
    if best["family"] == "als":
        assert version.params["max_iter"] == TUNED_MAX_ITER
    assert version.gates["checks"] and version.status == (
        "serving" if version.gates["passed"] else "rejected")
    assert registry.get(engine, version.version).reports["tuning"] == report


def test_a_search_ends_within_its_budget(config, engine, spark, tmp_path: Path) -> None:
    root = history.root(engine, None, config.home)
    history.sync(engine, root)
    training = tmp_path / "training.parquet"
    assert history.write_snapshot(root, AS_OF, training) > 0
    interactions = read_training_set(spark, training).cache()
    budget_minutes = 0.5
    started = time.monotonic()
    validation = validation_window(interactions, holdout_start(config), config.holdout_days)
    tuned = search(validation, config.eval_k,
                   TuneConfig(budget_minutes=budget_minutes, family="als"), "ndcg_at_k",
                   {"als": config.als, "ease": config.ease}, config.ease_max_items, tmp_path)
    elapsed = time.monotonic() - started
    validation.release()
    interactions.unpersist()
    trials = tuned.report["trials"]
    assert trials and tuned.report["best"] is not None
    # Unbounded in trials: only the budget ended the search.
    assert len(trials) > 1
    # The budget and at most one trial's time more: a bound, not a benchmark.
    assert elapsed <= budget_minutes * 60 + max(trial["seconds"] for trial in trials), (
        elapsed, trials)
