"""The prediction contract on real ALS output, through the CLI's nightly run.

The issue's case: a few hundred users and a catalogue of about 200 items,
scored with K=50, a quarter of the catalogue. A clean history must publish,
and the by-hand check must compute the same summary from PostgreSQL; a model
fitted to events whose item ids were shuffled must be refused by name.
"""

from __future__ import annotations

import io
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.contracts.predictions import served_checks
from jobs.data import history
from jobs.data.store import copy_interactions, rows_to_csv
from jobs.lifecycle import registry
from jobs.orchestration.model_choice import model_path
from jobs.scoring import score
from tests.e2e.conftest import cli_world

pytestmark = pytest.mark.spark

RUN_DATE = "2026-11-20"
K = 50


@pytest.fixture(scope="module")
def world(spark, settings, endpoints):
    """300 users x 200 items, a model trained on them and one nightly at K=50."""
    with cli_world(settings, endpoints) as (engine, client):
        assert main(["data", "generate", "--users", "300", "--items", "200", "--days", "20",
                     "--seed", "13", "--end-date", RUN_DATE]) == 0
        assert main(["train", "--as-of", RUN_DATE]) == 0
        # At this size ALS may not beat popularity on the holdout; the promotion gates
        # are not what is tested here.
        main(["models", "promote", "1", "--force", "--reason", "contract test"])
        with engine.connect() as conn:
            assert conn.execute(sa.text(
                "SELECT status FROM batchscore.model_versions WHERE version = 1")
            ).scalar_one() == "serving"
        yield engine, client


def succeeded_run_stats(engine) -> dict:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT stats FROM batchscore.runs WHERE status = 'succeeded'"
            " ORDER BY started_at DESC LIMIT 1")).scalar_one()


def test_a_clean_small_catalogue_at_k_50_publishes(world, settings, capsys) -> None:
    engine, _ = world
    assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K)]) == 0
    stats = succeeded_run_stats(engine)
    with engine.connect() as conn:
        catalogue = conn.execute(sa.text(
            "SELECT count(DISTINCT item_id) FROM batchscore.interactions")).scalar_one()
    assert 190 <= catalogue <= 200  # the generator may never draw a few items
    assert stats["predictions_k"] == K and stats["predictions_catalog_items"] == catalogue
    # A popular item may rightly reach nearly every list at K/C = 0.25; the history
    # check sees a model that knows its users.
    assert stats["predictions_history_users"] > 250
    assert stats["predictions_history_recall"] > stats["predictions_baseline_history_recall"]
    print({key: value for key, value in stats.items() if key.startswith("predictions_")})
    capsys.readouterr()
    assert main(["validate", "--predictions"]) == 0
    assert "prediction contract passed for the served version" in capsys.readouterr().out

    # The by-hand check recomputes the summary in SQL: the same figures as the run's.
    _, summary, _ = served_checks(engine)
    for field in ("catalog_items", "scored_users", "listed_items", "history_users"):
        assert getattr(summary, field) == stats[f"predictions_{field}"], field
    for field in ("catalog_coverage", "top_item_share", "exposure_spread"):
        assert getattr(summary, field) == pytest.approx(stats[f"predictions_{field}"]), field


def test_a_model_fitted_to_shuffled_events_is_refused_by_name(world, capsys) -> None:
    engine, _ = world
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
            " FROM batchscore.interactions ORDER BY user_id, event_at, item_id")).all()
    users, items, ratings, times = (np.array(column) for column in zip(*rows, strict=True))
    shuffled = np.random.default_rng(3).permutation(items)
    load(engine, users, shuffled, ratings, times)
    try:
        assert main(["train", "--as-of", RUN_DATE]) == 0
    finally:
        load(engine, users, items, ratings, times)
    with engine.connect() as conn:
        version = conn.execute(sa.text(
            "SELECT max(version) FROM batchscore.model_versions")).scalar_one()
        served_before = conn.execute(sa.text("SELECT publish_id FROM batchscore.serving")
                                     ).scalar()
    capsys.readouterr()
    assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K), "--model-version",
                 str(version), "--force", "--reason", "contract test"]) == 1
    error = capsys.readouterr().err
    assert f"prediction contract failed for {RUN_DATE}" in error and f"(K={K}, " in error, error
    assert "expect_column_values_to_be_between(history_gain)" in error, error
    assert "min_history_gain" in error
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT publish_id FROM batchscore.serving")
                            ).scalar() == served_before


def load(engine, users, items, ratings, times) -> None:
    staged = io.StringIO()
    rows_to_csv(zip(users.tolist(), items.tolist(), ratings.tolist(), times.tolist(),
                    strict=True), staged)
    staged.seek(0)
    copy_interactions(engine, staged, replace=True, rows=len(users))


def test_a_model_of_many_users_is_scored_in_more_tasks_to_the_same_lists(
        world, settings, spark, tmp_path, monkeypatch) -> None:
    engine, _ = world
    asked = {"interactions": history.root(engine, settings.history_uri, settings.home),
             "run_date": date.fromisoformat(RUN_DATE), "k": K,
             "model_path": Path(model_path(registry.get(engine, 1).artifact_uri))}
    # The tests' Spark has one core: one task, until the model has more users than a
    # task is given.
    whole = score.run(score.ScoreConfig(output=tmp_path / "whole", **asked), spark)
    monkeypatch.setattr(score, "USERS_PER_TASK", 100)
    split = score.run(score.ScoreConfig(output=tmp_path / "split", **asked), spark)
    assert 200 < whole.scored_users <= 300  # three tasks of at most 100 users

    def lists(output: Path) -> tuple[list[str], list[dict]]:
        folder = output / score.RECOMMENDATIONS_DIR
        table = ds.dataset(str(folder), format="parquet").to_table().sort_by("user_id")
        return sorted(path.name for path in folder.iterdir()), table.to_pylist()

    whole_files, whole_lists = lists(tmp_path / "whole")
    split_files, split_lists = lists(tmp_path / "split")
    assert whole_files == ["part-model-00000.parquet"]
    assert split_files == [f"part-model-0000{task}.parquet" for task in range(3)]
    assert split_lists == whole_lists and len(whole_lists) == whole.scored_users
    for name, value in asdict(whole).items():
        if isinstance(value, dict):  # sums over tasks, added in another order
            assert asdict(split)[name] == pytest.approx(value), name
        else:
            assert asdict(split)[name] == value, name
