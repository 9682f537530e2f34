"""The prediction contract's suites on hand-made check frames (no Spark, no database)."""

from pathlib import Path

import pandas as pd
import pytest

from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.predictions import PredictionSummary, check_predictions


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> Validator:
    return Validator(tmp_path_factory.mktemp("gx-home"))


def users(**changes: list) -> pd.DataFrame:
    frame = pd.DataFrame({
        "user_id": [1, 2, 3, 4],
        "n_items": [3, 3, 3, 3],
        "n_distinct": [3, 3, 3, 3],
        "n_seen": [0, 0, 0, 0],
        "scores_finite": [True, True, True, True],
        "scores_sorted": [True, True, True, True],
    })
    for column, values in changes.items():
        frame[column] = values
    return frame


SUMMARY = PredictionSummary(catalog_coverage=0.5, top_item_share=0.5, model_version=7,
                            active_users=4, k=3)


def test_clean_predictions_pass_and_write_data_docs(validator: Validator) -> None:
    reports = check_predictions(validator, users(), SUMMARY, requested_model_version=7)
    assert [report.success for report in reports] == [True, True]
    assert all(Path(r.docs_url.removeprefix("file://")).exists() for r in reports)


@pytest.mark.parametrize(
    ("frame", "summary", "message"),
    [
        (users(n_items=[3, 2, 3, 3], n_distinct=[3, 2, 3, 3]), SUMMARY,
         "expect_column_values_to_be_between(n_items): every scored user has exactly K items "
         "(expected 3 to 3) — 1 of 4 rows fail; e.g. user 2: user_id=2, n_items=2"),
        (users(n_distinct=[3, 3, 2, 3]), SUMMARY, "a user's items are distinct"),
        (users(n_seen=[0, 0, 0, 1]), SUMMARY,
         "no item the user already interacted with — 1 of 4 rows fail; e.g. user 4"),
        (users(scores_finite=[True, False, True, True]), SUMMARY, "scores are finite"),
        (users(scores_sorted=[False, True, True, True]), SUMMARY, "scores are sorted best first"),
        (users().iloc[:2], SUMMARY,
         "the users scored match the active users within tolerance (expected 3 to 4) — observed 2"),
        (users(), PredictionSummary(0.001, 0.5, 7, 4, 3), "enough of the catalogue is recommended"),
        (users(), PredictionSummary(0.5, 1.0, 7, 4, 3), "no single item floods every list"),
        (users(), PredictionSummary(0.5, 0.5, 6, 4, 3),
         "the run used the model version it asked for"),
    ],
)
def test_each_broken_property_is_named(validator: Validator, frame: pd.DataFrame,
                                       summary: PredictionSummary, message: str) -> None:
    with pytest.raises(ContractError) as caught:
        check_predictions(validator, frame, summary, requested_model_version=7, label="test")
    assert str(caught.value).startswith("prediction contract failed for test")
    assert message in str(caught.value)
