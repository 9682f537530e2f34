"""The EASE family: the closed form worked by hand, the Gram matrix from Spark's tasks,
the portable artifact, and the Spark scorer against the artifact's plain reader."""

from pathlib import Path

import numpy as np
import pytest

from jobs.scoring import item_item
from jobs.scoring.model import from_item_item, load_model
from jobs.scoring.transforms import seen_items
from jobs.training.ease import CatalogTooLargeError, EaseParams, fit_ease, solve

pytestmark = pytest.mark.spark


def interactions(spark, pairs: list[tuple[int, int]]):
    return spark.createDataFrame([(user, item, 1.0, 0) for user, item in pairs],
                                 "user_id long, item_id long, rating double, event_at long")


def test_two_items_give_the_weights_worked_by_hand(spark, tmp_path: Path) -> None:
    # Users 1 and 2 touched items 10 and 20, user 3 item 10 only (twice: counted once).
    # G = [[3, 2], [2, 2]]; with l2 = 1, P = inverse([[4, 2], [2, 3]]) = [[3, -2], [-2, 4]] / 8
    # B[10, 20] = -P[0, 1] / P[1, 1] = (2/8) / (4/8) = 0.5
    # B[20, 10] = -P[1, 0] / P[0, 0] = (2/8) / (3/8) = 2/3
    events = interactions(spark, [(1, 10), (1, 20), (2, 10), (2, 20), (3, 10), (3, 10)])
    model = fit_ease(events, EaseParams(l2=1.0), max_items=10, work=tmp_path)
    assert model.item_ids.tolist() == [10, 20]
    assert model.weights == pytest.approx(np.array([[0.0, 0.5], [2 / 3, 0.0]]))
    # User 3 has seen item 10: item 20 scores B[10, 20].
    assert item_item.top_k(model, [10], 5) == [(20, pytest.approx(0.5))]
    assert not list(tmp_path.iterdir()), "the partial Gram matrices are removed"


@pytest.mark.parametrize("rows_per_step", [2, 3, 7])
def test_the_solve_matches_a_plain_inverse(rows_per_step: int) -> None:
    rng = np.random.default_rng(3)
    x = (rng.random((40, 7)) < 0.3).astype(np.float64)
    gram = x.T @ x
    p = np.linalg.inv(gram + 5.0 * np.eye(7))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    weights = solve(gram.copy(), 5.0, rows_per_step)
    assert weights == pytest.approx(expected.astype(np.float32), abs=1e-6)


def test_a_catalogue_over_the_limit_is_refused_by_name(spark, tmp_path: Path) -> None:
    events = interactions(spark, [(1, item) for item in range(1, 6)])
    with pytest.raises(CatalogTooLargeError,
                       match=r"5 items .* the limit is 4 items \(BATCHSCORE_EASE_MAX_ITEMS"):
        fit_ease(events, EaseParams(), max_items=4, work=tmp_path)


def test_l2_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--l2 must be positive, got 0"):
        EaseParams(l2=0.0)


def test_the_artifact_round_trips_and_refuses_what_it_is_not(tmp_path: Path) -> None:
    model = item_item.ItemItemModel(
        family="ease", item_ids=np.array([3, 5, 9]),
        weights=np.array([[0, 1, 2], [3, 0, 4], [5, 6, 0]], dtype=np.float32),
        params={"l2": 7.0})
    item_item.save(model, tmp_path / "m")
    loaded = item_item.load(tmp_path / "m")
    assert loaded.item_ids.tolist() == [3, 5, 9] and loaded.params == {"l2": 7.0}
    assert loaded.weights.tolist() == model.weights.tolist()
    # Touched 3 and 5: item 9 scores 2 + 4 = 6; both touched ones are left out.
    assert item_item.top_k(loaded, [3, 5, 42], 10) == [(9, 6.0)]
    assert item_item.top_k(loaded, [42], 10) == []
    metadata = tmp_path / "m" / item_item.METADATA_FILE
    metadata.write_text(metadata.read_text().replace('"format_version": 1',
                                                     '"format_version": 2'))
    with pytest.raises(item_item.ItemItemFormatError,
                       match=r"version 2; this reader reads .* version 1"):
        item_item.load(tmp_path / "m")
    with pytest.raises(item_item.ItemItemFormatError, match="needs 2 x 2 weights, got 2 x 3"):
        item_item.ItemItemModel(family="ease", item_ids=np.array([1, 2]),
                                weights=np.zeros((2, 3), np.float32), params={})


def test_spark_scoring_agrees_with_the_artifacts_reader(spark, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    pairs = [(int(user), int(item)) for user in range(1, 61)
             for item in rng.choice(np.arange(100, 130), size=int(rng.integers(1, 9)),
                                    replace=False)]
    pairs.append((61, 999))  # a user who touched only an item the model will not know
    events = interactions(spark, [pair for pair in pairs if pair[1] != 999])
    fitted = fit_ease(events, EaseParams(l2=3.0), max_items=100, work=tmp_path / "work")
    item_item.save(fitted, tmp_path / "model")
    model = load_model(tmp_path / "model")
    assert model.item_item and model.family == "ease"
    seen = seen_items(interactions(spark, pairs))
    lists = {row["user_id"]: list(zip(row["items"], row["scores"], strict=True))
             for row in model.ranked_lists(seen, 5).collect()}
    assert 61 not in lists, "a user the model knows nothing of is not scored"
    assert len(lists) == 60
    touched: dict[int, list[int]] = {}
    for user, item in pairs:
        touched.setdefault(user, []).append(item)
    for user, got in lists.items():
        expected = item_item.top_k(fitted, touched[user], 5)
        assert [score for _, score in got] == pytest.approx(
            [score for _, score in expected], abs=1e-5)
        assert {item for item, _ in got}.isdisjoint(touched[user])
    assert from_item_item(fitted).item_ids.tolist() == fitted.item_ids.tolist()


def test_the_documented_worked_example(tmp_path: Path) -> None:
    # schemas/item-item-model.md, "Worked example".
    model = item_item.ItemItemModel(
        family="ease", item_ids=np.array([10, 20, 30]),
        weights=np.array([[0, 0.5, 0.1], [0.6, 0, 0.3], [0.2, 0.4, 0]], dtype=np.float32),
        params={"l2": 200.0})
    assert item_item.top_k(model, [10, 30], 2) == [(20, pytest.approx(0.9))]
    assert item_item.top_k(model, [20], 2) == [(10, pytest.approx(0.6)),
                                               (30, pytest.approx(0.3))]
    assert item_item.top_k(model, [99], 2) == []
