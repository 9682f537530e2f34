"""The prediction contract's whole-run bounds across catalogue sizes and K.

Synthetic interactions (``jobs.data.generate``: popularity plus taste) are
scored by the real block scorer with models fitted here without Spark: a
truncated SVD of the events stands in for ALS (clean), the same fit on events
whose item ids were shuffled across events, one popularity list for everyone,
and a constant score. Clean runs must pass at every size; each degenerate kind
must fail, naming the expectation and the setting it broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds

from jobs.contracts.engine import ContractError, Validator
from jobs.contracts.predictions import (
    ExposureTotals,
    HistoryTotals,
    PredictionSummary,
    check_predictions,
    check_summary,
    history_columns,
    popularity_ranking,
    summarize,
)
from jobs.data.generate import GenerateConfig, generate
from jobs.scoring.transforms import ItemCatalog, score_arrow_block

MODEL_VERSION = 3
RANK = 24
BLOCK_USERS = 512


@pytest.fixture(scope="module")
def validator(tmp_path_factory) -> Validator:
    return Validator(tmp_path_factory.mktemp("gx-home"))


@dataclass(frozen=True)
class World:
    """One synthetic data set: its events, each user's seen items, the catalogue."""

    events: pd.DataFrame
    seen: pd.DataFrame       # user_id, seen (array of item ids)
    item_ids: np.ndarray     # the catalogue, sorted

    @classmethod
    def make(cls, users: int, items: int, seed: int = 5) -> World:
        drawn = generate(GenerateConfig(users=users, items=items, days=10, seed=seed,
                                        end_date=date(2026, 11, 19)))
        events = pd.DataFrame({"user_id": drawn.user_id, "item_id": drawn.item_id})
        seen = (events.groupby("user_id")["item_id"].agg(lambda ids: np.unique(ids.to_numpy()))
                .rename("seen").reset_index())
        return cls(events=events, seen=seen, item_ids=np.unique(events["item_id"].to_numpy()))


def svd_factors(events: pd.DataFrame, item_ids: np.ndarray, users: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of a truncated SVD of the binary user x item matrix."""
    rows = np.searchsorted(users, events["user_id"].to_numpy())
    columns = np.searchsorted(item_ids, events["item_id"].to_numpy())
    matrix = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)),
                        shape=(len(users), len(item_ids)))
    rank = min(RANK, min(matrix.shape) - 1)
    left, singular, right = svds(matrix, k=rank, random_state=0)
    return (left * singular).astype(np.float32), right.T.astype(np.float32)


def factors(world: World, kind: str) -> tuple[np.ndarray, np.ndarray]:
    users = world.seen["user_id"].to_numpy()
    if kind == "clean":
        return svd_factors(world.events, world.item_ids, users)
    if kind == "shuffled":
        shuffled = world.events.assign(item_id=np.random.default_rng(1).permutation(
            world.events["item_id"].to_numpy()))
        return svd_factors(shuffled, world.item_ids, users)
    if kind == "same_list":
        popularity = (world.events.groupby("item_id")["user_id"].nunique()
                      .reindex(world.item_ids).to_numpy(dtype=np.float32))
        return np.ones((len(users), 1), np.float32), popularity[:, None]
    if kind == "constant":
        return np.zeros((len(users), 1), np.float32), np.zeros((len(world.item_ids), 1),
                                                               np.float32)
    raise AssertionError(kind)


def score(world: World, kind: str, k: int) -> pd.DataFrame:
    """The scoring job's lists and history counts, from the real block scorer."""
    user_factors, item_factors = factors(world, kind)
    catalog = ItemCatalog.build(world.item_ids, item_factors, k)
    schema = pa.schema([("user_id", pa.int64()), ("features", pa.list_(pa.float32())),
                        ("seen", pa.list_(pa.int64()))])
    blocks = []
    for start in range(0, len(world.seen), BLOCK_USERS):
        part = world.seen.iloc[start:start + BLOCK_USERS]
        batch = pa.RecordBatch.from_arrays([
            pa.array(part["user_id"].to_numpy(), pa.int64()),
            pa.array(list(user_factors[start:start + BLOCK_USERS]), pa.list_(pa.float32())),
            pa.array(part["seen"].tolist(), pa.list_(pa.int64()))], schema=schema)
        blocks.append(score_arrow_block(batch, catalog, k, history=True).to_pandas())
    return pd.concat(blocks, ignore_index=True)


def run_checks(world: World, scored: pd.DataFrame, k: int
               ) -> tuple[pd.DataFrame, PredictionSummary]:
    """The per-user checks and the summary, as the scoring job computes them."""
    catalog_size = len(world.item_ids)
    popularity = world.events.groupby("item_id")["user_id"].nunique().rename("users")
    baseline = history_columns(world.seen, popularity_ranking(popularity.reset_index()), k)
    frame = scored.merge(world.seen, on="user_id").merge(
        baseline.drop(columns="n_seen_known"), on="user_id")
    users = pd.DataFrame({
        "user_id": frame["user_id"],
        "n_items": frame["items"].map(len),
        "n_wanted": np.minimum(k, catalog_size - frame["n_seen_known"]),
        "n_distinct": frame["items"].map(lambda items: len(set(items))),
        "n_seen": [len(np.intersect1d(items, seen)) for items, seen in
                   zip(frame["items"], frame["seen"], strict=True)],
        "scores_finite": frame["scores"].map(lambda scores: bool(np.isfinite(scores).all())),
        "scores_sorted": frame["scores"].map(lambda scores: bool(np.all(np.diff(scores) <= 0))),
        "n_seen_known": frame["n_seen_known"],
        "n_seen_above": frame["n_seen_above"],
        "baseline_seen_above": frame["baseline_seen_above"],
    })
    exposure = pd.Series(np.concatenate(frame["items"].to_numpy())).value_counts()
    summary = summarize(ExposureTotals.of(exposure), HistoryTotals.of(users, catalog_size, k),
                        model_version=MODEL_VERSION, active_users=len(users),
                        scored_users=len(users), catalog_items=catalog_size, k=k)
    return users, summary


# Catalogues and the users scored against them (enough to fill a small catalogue,
# few enough to keep the sweep quick at 20,000 items).
WORLDS = {100: 400, 1_000: 1_000, 20_000: 1_000}
KS = (10, 50, 100)


@pytest.fixture(scope="module")
def worlds() -> dict[int, World]:
    return {items: World.make(users, items) for items, users in WORLDS.items()}


# What each degenerate kind must break, at every catalogue and K where the users
# have a choice: (the expectation's column, the setting named in its message).
BROKEN = {
    "shuffled": [("history_gain", "min_history_gain")],
    "same_list": [("history_gain", "min_history_gain"),
                  ("exposure_spread", "exposure_spread_target")],
    "constant": [("history_gain", "min_history_gain"),
                 ("exposure_spread", "exposure_spread_target")],
}
CASES = [(items, k) for items in WORLDS for k in KS]


def outcome(validator: Validator, world: World, kind: str, k: int) -> str | None:
    """None when the contract passes, else its message. Clean runs go through both
    suites; the degenerate kinds only through the summary's, which is what they break."""
    users, summary = run_checks(world, score(world, kind, k), k)
    try:
        if kind == "clean":
            check_predictions(validator, users, summary, MODEL_VERSION, label=kind)
        else:
            check_summary(validator, summary, MODEL_VERSION, label=kind)
    except ContractError as err:
        return str(err)
    return None


@pytest.mark.parametrize(("items", "k"), CASES, ids=[f"C{c}-K{k}" for c, k in CASES])
def test_clean_passes_and_each_degenerate_kind_fails_by_name(
        validator: Validator, worlds: dict[int, World], items: int, k: int) -> None:
    world = worlds[items]
    assert outcome(validator, world, "clean", k) is None
    if k >= len(world.item_ids):
        # Every user gets every item they have not seen, whatever the model: the
        # lists are forced, the checks of the model's choice are skipped, and a
        # degenerate model cannot be told apart.
        assert outcome(validator, world, "constant", k) is None
        return
    for kind, broken in BROKEN.items():
        message = outcome(validator, world, kind, k)
        assert message is not None, f"{kind} passed at C={items}, K={k}"
        assert message.startswith(f"prediction contract failed for {kind} (K={k}, "
                                  f"{len(world.item_ids)} catalogue items"), message
        for column, setting in broken:
            line = next((line for line in message.splitlines()
                         if f"expect_column_values_to_be_between({column})" in line), None)
            assert line is not None and setting in line and "expected at least" in line, \
                (kind, column, message)


def test_the_issues_case_a_few_hundred_users_200_items_k_50_passes(validator) -> None:
    world = World.make(300, 200, seed=13)
    users, summary = run_checks(world, score(world, "clean", 50), 50)
    # A quarter of the catalogue per list: a popular item rightly reaches most lists.
    assert summary.k / summary.catalog_items >= 0.25
    assert all(report.success for report in check_predictions(validator, users, summary,
                                                               MODEL_VERSION))
