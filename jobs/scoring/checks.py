"""The prediction contract's per-user checks and run totals, computed where the lists are
made: in the scoring job's tasks, block by block, in the same pass that writes them.

:func:`list_checks` adds the per-user columns the contract's suite reads
(``schemas/predictions.suite.json``) to a block of lists; :func:`block_totals` sums
what the run summary needs (item exposure, the history recall sums); each task
reports its sums once through a Spark accumulator (:class:`TotalsParam`), keyed by
its job and partition, so a retried task replaces its report instead of adding to
it. Nothing per user reaches the driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.accumulators import AccumulatorParam

from jobs.contracts.predictions import (
    ExposureTotals,
    HistoryTotals,
    PopularityRanking,
    history_counts,
)
from jobs.platform.arrays import sorted_positions

# The columns list_checks adds, in order, after n_seen_known and n_seen_above.
CHECK_FIELDS = [
    pa.field("n_items", pa.int64(), nullable=False),
    pa.field("n_wanted", pa.int64(), nullable=False),
    pa.field("n_distinct", pa.int64(), nullable=False),
    pa.field("n_seen", pa.int64(), nullable=False),
    pa.field("scores_finite", pa.bool_(), nullable=False),
    pa.field("scores_sorted", pa.bool_(), nullable=False),
    pa.field("baseline_seen_above", pa.int64(), nullable=False),
]
# Item ids spanning at most this many values are counted in an array of that length.
DENSE_COUNT_SPAN = 1 << 22
# What the contract's per-user suite reads from the scoring output.
CHECK_COLUMNS = ["user_id", *(field.name for field in CHECK_FIELDS[:6]), "n_seen_known",
                 "n_seen_above", "baseline_seen_above"]


def list_checks(lists: pa.RecordBatch, seen: pa.Array, k: int, catalog_size: int,
                ranking: PopularityRanking) -> pa.RecordBatch:
    """``lists`` (user_id, items, scores, n_seen_known, n_seen_above, ...) with the
    :data:`CHECK_FIELDS` appended, from the lists themselves and ``seen`` (each user's
    distinct seen item ids, in the same order; null for none).

    n_items; n_wanted (K, or the catalogue items the user has not seen when fewer);
    n_distinct; n_seen (distinct listed items the user had seen); scores_finite;
    scores_sorted (best first; a NaN is caught by scores_finite); baseline_seen_above
    (see :func:`jobs.contracts.predictions.history_counts`).
    """
    n = lists.num_rows
    items, scores = lists.column("items"), lists.column("scores")
    n_items = pc.fill_null(pc.list_value_length(items), 0).to_numpy(
        zero_copy_only=False).astype(np.int64)
    parents = pc.list_parent_indices(items).to_numpy().astype(np.int64)
    flat_items = pc.list_flatten(items).to_numpy(zero_copy_only=False).astype(np.int64)
    flat_scores = pc.list_flatten(scores).to_numpy(zero_copy_only=False).astype(np.float64)
    listed = distinct_pairs(parents, flat_items)
    n_distinct = np.bincount(listed.parents, minlength=n)
    seen_parents = pc.list_parent_indices(seen).to_numpy().astype(np.int64)
    seen_items = pc.list_flatten(seen).to_numpy(zero_copy_only=False).astype(np.int64)
    _, was_seen = sorted_positions(distinct_pairs(seen_parents, seen_items, listed).keys,
                                   listed.keys)
    n_seen = np.bincount(listed.parents[was_seen], minlength=n)
    not_finite = np.bincount(parents[~np.isfinite(flat_scores)], minlength=n)
    same_user = parents[1:] == parents[:-1]
    rises = same_user & (flat_scores[1:] > flat_scores[:-1])
    not_sorted = np.bincount(parents[1:][rises], minlength=n)
    known = lists.column("n_seen_known").to_numpy(zero_copy_only=False).astype(np.int64)
    _, baseline_above = history_counts(seen_parents, seen_items, n, ranking, k)
    columns = [n_items, np.minimum(k, catalog_size - known), n_distinct, n_seen,
               not_finite == 0, not_sorted == 0, baseline_above]
    return pa.RecordBatch.from_arrays(
        [*lists.columns, *(pa.array(column, type=field.type)
                           for column, field in zip(columns, CHECK_FIELDS, strict=True))],
        schema=pa.schema([*lists.schema, *CHECK_FIELDS]))


@dataclass(frozen=True)
class Pairs:
    """Distinct (row, item) pairs, sorted, each as one int64 key: ``parents * span +
    items - low``."""

    keys: np.ndarray
    low: int
    span: int

    @property
    def parents(self) -> np.ndarray:
        return self.keys // self.span

    @property
    def items(self) -> np.ndarray:
        return self.keys % self.span + self.low


def distinct_pairs(parents: np.ndarray, items: np.ndarray, like: Pairs | None = None) -> Pairs:
    """The distinct (parent, item) pairs, keyed as ``like``'s keys are when given (items
    outside its range are dropped: they cannot match), else over the items' own range.
    Sorting int64 keys is several times faster than pandas' pairs of columns on the
    blocks a scoring task checks."""
    if like is None:
        low = int(items.min()) if len(items) else 0
        span = int(items.max()) - low + 1 if len(items) else 1
        if span * (int(parents.max()) + 1 if len(parents) else 1) >= 2**63:
            raise ValueError(f"item ids from {low} to {low + span - 1} are too far apart to "
                             "check the lists: item ids must fit in 32 bits")
        return Pairs(sorted_distinct(parents * span + (items - low)), low, span)
    inside = (items >= like.low) & (items < like.low + like.span)
    return Pairs(sorted_distinct(parents[inside] * like.span + (items[inside] - like.low)),
                 like.low, like.span)


def sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` by sorting keys that arrive nearly in order (a user's list
    after the previous user's): a stable sort merges those runs, three times faster
    than numpy's default sort or its own unique on a scoring task's blocks."""
    ordered = np.sort(keys, kind="stable")
    keep = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def run_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in a sorted, non-empty array."""
    return np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def item_counts(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``items`` (ascending) and how often each occurs: counted in place
    when the ids span little more than a catalogue, else by sorting."""
    if len(items) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    low = int(items.min())
    span = int(items.max()) - low + 1
    if span <= max(DENSE_COUNT_SPAN, 4 * len(items)):
        counts = np.bincount(items - low, minlength=span)
        ids = np.flatnonzero(counts)
        return ids + low, counts[ids]
    ordered = np.sort(items)
    starts = run_starts(ordered)
    return ordered[starts], np.diff(np.r_[starts, len(ordered)])


@dataclass(frozen=True)
class BlockTotals:
    """What the run summary sums over users: the users scored, the users each listed
    item reached (``exposure_ids`` sorted, with their ``exposure_users``), and the
    history recall sums over the users with room (see :class:`HistoryTotals`)."""

    users: int
    exposure_ids: np.ndarray
    exposure_users: np.ndarray
    history_users: int
    model_recall_sum: float
    baseline_recall_sum: float

    @classmethod
    def empty(cls) -> BlockTotals:
        return cls(0, np.empty(0, np.int64), np.empty(0, np.int64), 0, 0.0, 0.0)

    def __add__(self, other: BlockTotals) -> BlockTotals:
        ids = np.concatenate([self.exposure_ids, other.exposure_ids])
        users = np.concatenate([self.exposure_users, other.exposure_users])
        # Two ascending runs: a stable sort merges them in one pass.
        order = np.argsort(ids, kind="stable")
        ids, users = ids[order], users[order]
        if len(ids):
            starts = run_starts(ids)
            ids, users = ids[starts], np.add.reduceat(users, starts)
        return BlockTotals(self.users + other.users, ids, users.astype(np.int64),
                           self.history_users + other.history_users,
                           self.model_recall_sum + other.model_recall_sum,
                           self.baseline_recall_sum + other.baseline_recall_sum)

    def exposure(self) -> ExposureTotals:
        return ExposureTotals.of(self.exposure_users)

    def history(self) -> HistoryTotals:
        return HistoryTotals(users=self.history_users, model_recall_sum=self.model_recall_sum,
                             baseline_recall_sum=self.baseline_recall_sum)


def block_totals(checked: pa.RecordBatch, catalog_size: int, k: int) -> BlockTotals:
    """:class:`BlockTotals` of one block of :func:`list_checks`'s rows."""
    items = checked.column("items")
    parents = pc.list_parent_indices(items).to_numpy().astype(np.int64)
    flat_items = pc.list_flatten(items).to_numpy(zero_copy_only=False).astype(np.int64)
    # Each user counts once per item, however often a (faulty) list repeats it.
    ids, users = item_counts(distinct_pairs(parents, flat_items).items)
    frame = pd.DataFrame({name: checked.column(name).to_numpy(zero_copy_only=False)
                          for name in ("n_seen_known", "n_seen_above", "baseline_seen_above")})
    history = HistoryTotals.of(frame, catalog_size, k)
    return BlockTotals(checked.num_rows, ids.astype(np.int64), users.astype(np.int64),
                       history.users, history.model_recall_sum, history.baseline_recall_sum)


class TotalsParam(AccumulatorParam):
    """Accumulates ``{(job, partition): BlockTotals}``: each task adds its partition's
    totals once, when it has written them, and a retried task's report replaces the
    failed attempt's (the same rows give the same totals)."""

    def zero(self, value: Mapping) -> dict:
        return {}

    def addInPlace(self, value1: dict, value2: Mapping) -> dict:  # noqa: N802 (Spark names it)
        value1.update(value2)
        return value1


def run_totals(reports: Mapping[object, BlockTotals]) -> BlockTotals:
    """The totals of a run from its tasks' reports."""
    total = BlockTotals.empty()
    for report in reports.values():
        total = total + report
    return total
