"""The prediction contract's suites on hand-made check frames (no Spark, no database)."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.predictions import PredictionSummary, check_predictions, check_summary


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> Validator:
    return Validator(tmp_path_factory.mktemp("gx-home"))


def users(**changes: list) -> pd.DataFrame:
    frame = pd.DataFrame({
        "user_id": [1, 2, 3, 4],
        "n_items": [3, 3, 3, 3],
        "n_wanted": [3, 3, 3, 3],
        "n_distinct": [3, 3, 3, 3],
        "n_seen": [0, 0, 0, 0],
        "scores_finite": [True, True, True, True],
        "scores_sorted": [True, True, True, True],
    })
    for column, values in changes.items():
        frame[column] = values
    return frame


# 4 users with 3 items each from a catalogue of 20: coverage must reach 1.5 x 3/20,
# the top item may reach 0.95 + 3/20 (every user), the spread min(2, 1 + 0.5 x (12/3 - 1)).
SUMMARY = PredictionSummary(model_version=7, active_users=4, k=3, catalog_items=20,
                            scored_users=4, listed_items=12, catalog_coverage=0.5,
                            top_item_share=0.5, exposure_spread=3.0, history_users=4,
                            history_recall=0.8, baseline_history_recall=0.5)


def test_clean_predictions_pass_and_write_data_docs(validator: Validator) -> None:
    reports = check_predictions(validator, users(), SUMMARY, requested_model_version=7)
    assert [report.success for report in reports] == [True, True]
    assert all(Path(r.docs_url.removeprefix("file://")).exists() for r in reports)


@pytest.mark.parametrize(
    ("frame", "summary", "message"),
    [
        (users(n_items=[3, 2, 3, 3], n_distinct=[3, 2, 3, 3]), SUMMARY,
         "expect_column_pair_values_to_be_equal(n_items/n_wanted): every scored user has K "
         "items, or every catalogue item they have not seen when that is fewer — 1 of 4 rows "
         "fail; e.g. user 2: user_id=2, n_items=2, n_wanted=3"),
        (users(n_items=[3, 4, 3, 3], n_wanted=[3, 4, 3, 3], n_distinct=[3, 4, 3, 3]), SUMMARY,
         "no scored user has more than K items (expected 0 to 3) — 1 of 4 rows fail"),
        (users(n_distinct=[3, 3, 2, 3]), SUMMARY, "a user's items are distinct"),
        (users(n_seen=[0, 0, 0, 1]), SUMMARY,
         "no item the user already interacted with — 1 of 4 rows fail; e.g. user 4"),
        (users(scores_finite=[True, False, True, True]), SUMMARY, "scores are finite"),
        (users(scores_sorted=[False, True, True, True]), SUMMARY, "scores are sorted best first"),
        (users().iloc[:2], SUMMARY,
         "the users scored match the active users within tolerance (expected 3 to 4) — observed 2"),
        (users(), replace(SUMMARY, catalog_coverage=0.2),
         "enough of the catalogue is recommended"),
        (users(), replace(SUMMARY, exposure_spread=1.0), "not one list for everyone"),
        (users(), replace(SUMMARY, history_recall=0.5), "more often than the popularity baseline"),
        (users(), replace(SUMMARY, model_version=6),
         "the run used the model version it asked for"),
    ],
)
def test_each_broken_property_is_named(validator: Validator, frame: pd.DataFrame,
                                       summary: PredictionSummary, message: str) -> None:
    with pytest.raises(ContractError) as caught:
        check_predictions(validator, frame, summary, requested_model_version=7, label="test")
    assert str(caught.value).startswith("prediction contract failed for test")
    assert message in str(caught.value)


def test_a_short_list_passes_when_the_user_has_no_more_unseen_items(validator) -> None:
    frame = users(n_items=[3, 2, 3, 0], n_distinct=[3, 2, 3, 0], n_wanted=[3, 2, 3, 0])
    assert all(r.success for r in check_predictions(validator, frame, SUMMARY, 7))


# Each whole-run bound, computed for the run by hand from schemas/contracts.json, with
# a value just inside (passes) and just outside (fails): (summary, column, bound, inside,
# outside). LARGE is 1,000 users x 10 items from 5,000; SMALL 400 x 50 from 100;
# FEW 2 users x 10 from 1,000.
LARGE = replace(SUMMARY, k=10, catalog_items=5000, scored_users=1000, active_users=1000,
                listed_items=10_000, catalog_coverage=0.5, top_item_share=0.5)
SMALL = replace(SUMMARY, k=50, catalog_items=100, scored_users=400, active_users=400,
                listed_items=20_000, catalog_coverage=1.0, top_item_share=1.0)
FEW = replace(SUMMARY, k=10, catalog_items=1000, scored_users=2, active_users=2,
              listed_items=20, catalog_coverage=0.02, top_item_share=0.5)
BOUNDS = [
    # min_coverage_per_k x K/C = 1.5 x 10/5000
    (LARGE, "catalog_coverage", "expected 0.003 to 1", 0.0031, 0.0029),
    # min_coverage_cap x min(C, T)/C = 0.5 x 20/1000, below 1.5 x 10/1000
    (FEW, "catalog_coverage", "expected 0.01 to 1", 0.0101, 0.0099),
    # max_top_item_share + K/C = 0.95 + 10/5000
    (LARGE, "top_item_share", "expected at most 0.952", 0.9519, 0.9521),
    # exposure_spread_target, below 1 + 0.5 x (5000/10 - 1)
    (LARGE, "exposure_spread", "expected at least 2", 2.001, 1.999),
    # 1 + exposure_spread_fraction x (min(C, T)/L - 1) = 1 + 0.5 x (100/50 - 1)
    (SMALL, "exposure_spread", "expected at least 1.5", 1.501, 1.499),
    # min_history_gain: (recall - 0.5) / (1 - 0.5) against 0.1
    (LARGE, "history_recall", "expected at least 0.1", 0.551, 0.549),
]


@pytest.mark.parametrize(("summary", "field", "bound", "inside", "outside"), BOUNDS,
                         ids=[f"{field}-{bound.split()[-1]}" for _, field, bound, _, _ in BOUNDS])
def test_each_summary_bound_holds_just_inside_and_fails_just_outside(
        validator: Validator, summary: PredictionSummary, field: str, bound: str,
        inside: float, outside: float) -> None:
    assert check_summary(validator, replace(summary, **{field: inside}), 7).success
    with pytest.raises(ContractError) as caught:
        check_summary(validator, replace(summary, **{field: outside}), 7, label="test")
    column = "history_gain" if field == "history_recall" else field
    failed = [line for line in str(caught.value).splitlines() if line.startswith("  - ")]
    assert len(failed) == 1 and f"expect_column_values_to_be_between({column})" in failed[0]
    assert f"({bound})" in failed[0], failed[0]


def test_the_choice_checks_are_skipped_when_every_list_is_forced(validator) -> None:
    # K at or above what every user has left: the lists are the unseen items, whatever
    # the model, so neither the spread nor the history gain can be judged.
    forced = replace(SMALL, k=100, history_users=0, history_recall=0.0,
                     baseline_history_recall=0.0, exposure_spread=1.0)
    assert check_summary(validator, forced, 7).success
    with pytest.raises(ContractError, match="not one list for everyone"):
        check_summary(validator, replace(forced, history_users=1), 7)
