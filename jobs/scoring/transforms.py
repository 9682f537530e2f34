"""Pure Spark transforms shared by the training and scoring jobs.

Each takes DataFrames (and plain values) and returns a DataFrame; none reads
the clock, collects, or writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.contracts import redis as redis_contract
from jobs.contracts.predictions import PopularityRanking
from jobs.platform.arrays import sorted_positions
from jobs.scoring.checks import CHECK_FIELDS, BlockTotals, block_totals, list_checks

if TYPE_CHECKING:
    from pyspark.accumulators import Accumulator

INTERACTIONS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), nullable=False),
    T.StructField("item_id", T.LongType(), nullable=False),
    T.StructField("rating", T.DoubleType(), nullable=False),
    T.StructField("event_at", T.LongType(), nullable=False),
])

RECOMMENDATIONS_SCHEMA = T.StructType([
    T.StructField("user_id", T.LongType(), nullable=False),
    T.StructField("items", T.ArrayType(T.LongType(), containsNull=False), nullable=False),
    T.StructField("scores", T.ArrayType(T.FloatType(), containsNull=False), nullable=False),
])

# The scoring job's output also carries each user's Redis value, and what the
# prediction contract's history check needs: the user's seen items the model
# knows, and how many of them it scores above the user's K-th recommendation.
SCORED_SCHEMA = T.StructType([
    *RECOMMENDATIONS_SCHEMA.fields,
    T.StructField(redis_contract.VALUE_COLUMN, T.BinaryType(), nullable=False),
    T.StructField("n_seen_known", T.LongType(), nullable=False),
    T.StructField("n_seen_above", T.LongType(), nullable=False),
    # The prediction contract's other per-user checks (jobs.scoring.checks).
    *(T.StructField(field.name, T.BooleanType() if field.type == pa.bool_() else T.LongType(),
                    nullable=False) for field in CHECK_FIELDS),
])

RECOMMENDATIONS_ARROW_SCHEMA = pa.schema([
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("items", pa.list_(pa.field("element", pa.int64(), nullable=False)), nullable=False),
    pa.field("scores", pa.list_(pa.field("element", pa.float32(), nullable=False)),
             nullable=False),
])
# score_arrow_block's rows with the history counts.
HISTORY_ARROW_SCHEMA = pa.schema([
    *RECOMMENDATIONS_ARROW_SCHEMA,
    pa.field("n_seen_known", pa.int64(), nullable=False),
    pa.field("n_seen_above", pa.int64(), nullable=False),
])


@dataclass(frozen=True)
class Checked:
    """What the nightly's scoring adds to each list: its Redis value and the prediction
    contract's per-user checks (the baseline's against ``ranking``, the catalogue by
    popularity); with ``totals``, each task reports its :class:`BlockTotals` to that
    accumulator (:class:`jobs.scoring.checks.TotalsParam`) under ``job``."""

    ranking: PopularityRanking
    totals: Accumulator | None = None
    job: str = "scores"

# Users are scored in blocks so that one block's score matrix stays near this size:
# small enough to stay in the CPU's cache while the top-k selection reads it
# again (at 20,000 items, 4 MiB blocks score a user in half the time of 64 MiB).
SCORE_BLOCK_BYTES = 4 * 1024 * 1024
# An item matrix at least this large is broadcast rather than shipped with every task.
BROADCAST_MIN_BYTES = 1024 * 1024
# Item chunks per wanted item in the top-k selection (see top_k_items).
CHUNKS_PER_K = 8


def events_before(interactions: DataFrame, end_seconds: int) -> DataFrame:
    """Interactions whose event time is before ``end_seconds`` (Unix time)."""
    return interactions.where(F.col("event_at") < F.lit(end_seconds))


def time_split(interactions: DataFrame, cutoff_seconds: int) -> tuple[DataFrame, DataFrame]:
    """Split at a moment: training events before it, holdout events from it on.

    The holdout keeps only users and items that the training part knows, since
    a model can only rank those; holdout pairs already seen in training are
    dropped, because scoring excludes seen items.
    """
    train = events_before(interactions, cutoff_seconds)
    later = interactions.where(F.col("event_at") >= F.lit(cutoff_seconds))
    known_users = train.select("user_id").distinct()
    known_items = train.select("item_id").distinct()
    seen_pairs = train.select("user_id", "item_id").distinct()
    holdout = (
        later.join(known_users, "user_id", "left_semi")
        .join(known_items, "item_id", "left_semi")
        .join(seen_pairs, ["user_id", "item_id"], "left_anti")
        .select("user_id", "item_id")
        .distinct()
    )
    return train, holdout


def seen_items(interactions: DataFrame) -> DataFrame:
    """One row per user: ``user_id`` and ``seen``, the distinct items they touched."""
    return interactions.groupBy("user_id").agg(
        F.array_distinct(F.collect_list("item_id")).alias("seen")
    )


def item_popularity(interactions: DataFrame) -> DataFrame:
    """``item_id`` and ``score``: how many distinct users interacted with the item."""
    return interactions.groupBy("item_id").agg(
        F.countDistinct("user_id").cast("float").alias("score")
    )


def seen_popularity(seen: DataFrame) -> DataFrame:
    """:func:`item_popularity` from :func:`seen_items`'s rows, whose lists are distinct:
    ``item_id`` and ``score``, the users who touched the item."""
    return (seen.select(F.explode("seen").alias("item_id")).groupBy("item_id")
            .agg(F.count(F.lit(1)).cast("float").alias("score")))


def most_popular(popularity: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` most popular items of :func:`item_popularity`'s collected rows, best
    first, as ``item_id`` and ``score``. Ties go to the lower item id."""
    return (popularity.sort_values(["score", "item_id"], ascending=[False, True],
                                   kind="stable")
            .head(k).reset_index(drop=True)[["item_id", "score"]])


def top_k_unseen(
    users: DataFrame, item_ids: np.ndarray, item_factors: np.ndarray, k: int,
    checked: Checked | None = None, item_item: bool = False,
) -> DataFrame:
    """Exact top-``k`` items per user by dot product, excluding items already seen.

    ``users`` has ``user_id``, ``features`` (array of floats) and ``seen``
    (array of item ids, may be null). With ``item_item`` the item matrix is an
    item-item model's weights (see :meth:`ItemCatalog.build`): a user's scores
    are the sum of the rows of the items they have seen, ``features`` is not
    read, and a user none of whose seen items the model knows is not scored.
    The item matrix reaches every task once,
    as a broadcast variable when it is large enough for that to pay off. Users
    are scored in blocks: one matrix multiply per block, a top-``k`` selection
    that never sorts whole rows, and each input batch's lists, with their checks,
    built as one Arrow batch.
    Returns :data:`RECOMMENDATIONS_SCHEMA` rows, best first, equal scores in
    item id order; a user who has seen nearly the whole catalogue gets fewer
    than ``k`` items. With ``checked`` the rows are :data:`SCORED_SCHEMA`: each
    user's list also encoded as its Redis value, with the history counts of
    :func:`score_arrow_block` and the contract's checks, computed in the same
    pass (see :class:`Checked`).
    """
    schema = SCORED_SCHEMA if checked else RECOMMENDATIONS_SCHEMA
    return scoring_input(users).mapInArrow(
        task_scorer(users.sparkSession.sparkContext, item_ids, item_factors, k, checked,
                    item_item),
        schema)


def scoring_input(users: DataFrame) -> DataFrame:
    """The columns :func:`task_scorer` reads."""
    return users.select("user_id", "features", "seen")


def task_scorer(context: Any, item_ids: np.ndarray, item_factors: np.ndarray, k: int,
                checked: Checked | None = None, item_item: bool = False
                ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """What each task of :func:`top_k_unseen` runs over its Arrow batches of
    :func:`scoring_input` rows (for ``mapInArrow``, or wrapped by a task that writes
    the batches itself: :mod:`jobs.scoring.output`); ``context`` is the SparkContext
    that broadcasts the item matrix."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    catalog = ItemCatalog.build(item_ids, item_factors, k, item_item)
    if catalog.nbytes >= BROADCAST_MIN_BYTES:
        shared = context.broadcast(catalog)

        def load() -> ItemCatalog:
            return shared.value
    else:
        def load() -> ItemCatalog:
            return catalog

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        items = load()
        totals = BlockTotals.empty()
        for batch in batches:
            if items.item_item:
                batch = with_known_history(batch, items)
            out = score_arrow_block(batch, items, k, history=checked is not None)
            if checked is None:
                yield out
                continue
            out = list_checks(out, batch.column("seen"), k, items.size, checked.ranking)
            totals = totals + block_totals(out, items.size, k)
            yield with_redis_value(out)
        if checked is not None and checked.totals is not None:
            from pyspark import TaskContext

            # Once per task, after its last row: a retried task replaces its report.
            checked.totals.add({(checked.job, TaskContext.get().partitionId()): totals})

    return score


def with_redis_value(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A (user_id, items, scores) batch with each user's Redis value added."""
    value = redis_contract.encode_items_block(batch.column("items"), batch.column("scores"))
    return pa.RecordBatch.from_arrays(
        [*batch.columns[:3], value, *batch.columns[3:]],
        schema=batch.schema.insert(
            3, pa.field(redis_contract.VALUE_COLUMN, pa.binary(), nullable=False)))


@dataclass(frozen=True)
class ItemCatalog:
    """The item side of scoring, laid out once for every block.

    ``ids`` are sorted. For a factor model, ``factors`` holds their rows in that
    order, padded with zero rows up to a whole number of ``chunk``-wide column
    chunks (the padded columns score ``-inf``). For an item-item model
    (``item_item``), ``factors`` is the (size, padded) weight matrix, rows and
    columns in id order: row i is what having seen item i adds to every item's
    score. ``size`` is the number of real items.
    """

    ids: np.ndarray
    factors: np.ndarray
    size: int
    chunk: int
    item_item: bool = False

    @classmethod
    def build(cls, item_ids: np.ndarray, item_factors: np.ndarray, k: int,
              item_item: bool = False) -> ItemCatalog:
        ids = np.asarray(item_ids, dtype=np.int64)
        factors = np.asarray(item_factors, dtype=np.float32).reshape(len(ids), -1)
        order = np.argsort(ids, kind="stable")
        size = len(ids)
        if item_item and factors.shape[1] != size:
            raise ValueError(f"an item-item model over {size} items needs a {size} x {size} "
                             f"weight matrix, got {size} x {factors.shape[1]}")
        # About CHUNKS_PER_K chunks per wanted item: the selection then looks
        # at roughly k chunks of this width per user instead of the whole row.
        chunk = max(1, size // (CHUNKS_PER_K * k))
        padded = -(-size // chunk) * chunk
        if item_item:
            laid_out = np.zeros((size, padded), dtype=np.float32)
            laid_out[:, :size] = factors[np.ix_(order, order)]
        else:
            laid_out = np.zeros((padded, factors.shape[1]), dtype=np.float32)
            laid_out[:size] = factors[order]
        return cls(ids=ids[order], factors=laid_out, size=size, chunk=chunk,
                   item_item=item_item)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.factors.nbytes)


def score_arrow_block(batch: pa.RecordBatch, catalog: ItemCatalog, k: int,
                      history: bool = False, block_rows: int | None = None) -> pa.RecordBatch:
    """Score a batch of (user_id, features, seen) rows; see :func:`top_k_unseen`.

    Users are scored ``block_rows`` at a time (by default a block of about
    :data:`SCORE_BLOCK_BYTES` of scores), and the batch's lists are built as Arrow
    arrays once, from every block's flat results.
    With ``history`` the rows also carry ``n_seen_known`` (the user's seen items in
    the catalogue) and ``n_seen_above`` (how many of them score above the user's
    K-th recommendation; 0 when the user got fewer than K), for the prediction
    contract's history check.
    """
    user_ids = batch.column("user_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    n = len(user_ids)
    users = (None if catalog.item_item
             else user_matrix(batch.column("features"), catalog.factors.shape[1]))
    seen_rows, seen_columns = seen_positions(batch.column("seen"), catalog.ids)
    seen_scores = np.empty(len(seen_rows), dtype=np.float32)
    width = catalog.factors.shape[1] if catalog.item_item else catalog.factors.shape[0]
    step = block_rows or max(1, SCORE_BLOCK_BYTES // (4 * max(1, width)))
    # seen_rows ascend: each block's seen items are one slice of them.
    seen_bounds = np.searchsorted(seen_rows, np.arange(0, n + step, step))
    rows, columns, best = [], [], []
    for number, start in enumerate(range(0, n, step)):
        seen_here = slice(seen_bounds[number], seen_bounds[number + 1])
        at = (seen_columns[seen_here], seen_rows[seen_here] - start)
        scores = (item_item_scores(at, min(step, n - start), catalog) if users is None
                  else block_scores(users[start:start + step], catalog))
        seen_scores[seen_here] = scores[at]
        scores[at] = -np.inf
        top_rows, top_columns, top_scores = top_k_items(scores, k, catalog.chunk)
        rows.append(top_rows + start)
        columns.append(top_columns)
        best.append(top_scores)
    rows_all = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    columns_all = np.concatenate(columns) if columns else np.empty(0, dtype=np.int64)
    best_all = np.concatenate(best) if best else np.empty(0, dtype=np.float32)
    lengths = np.bincount(rows_all, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    arrays = [pa.array(user_ids, type=pa.int64()),
              pa.ListArray.from_arrays(pa.array(offsets), pa.array(catalog.ids[columns_all])),
              pa.ListArray.from_arrays(pa.array(offsets), pa.array(best_all, type=pa.float32()))]
    if not history:
        return pa.RecordBatch.from_arrays(arrays, schema=RECOMMENDATIONS_ARROW_SCHEMA)
    kth = np.full(n, np.inf, dtype=np.float32)
    full = lengths == k
    kth[full] = best_all[offsets[1:][full] - 1]
    above = seen_scores > kth[seen_rows]
    arrays += [pa.array(np.bincount(seen_rows, minlength=n), type=pa.int64()),
               pa.array(np.bincount(seen_rows[above], minlength=n), type=pa.int64())]
    return pa.RecordBatch.from_arrays(arrays, schema=HISTORY_ARROW_SCHEMA)


def user_matrix(features: pa.Array, rank: int) -> np.ndarray:
    """The block's user factors as a (users, rank) float32 matrix."""
    lengths = pc.list_value_length(features).to_numpy(zero_copy_only=False)
    if len(lengths) and (features.null_count or not np.all(lengths == rank)):
        raise ValueError(f"every user needs {rank} factors")
    values = pc.list_flatten(features).to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(len(features), rank)


def block_scores(users: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
    """Every user of the block against every item: one matrix multiply, laid out one
    row per item and one column per user (numpy's BLAS computes a block of users
    about a fifth faster this way round than one row per user)."""
    scores = catalog.factors @ users.T
    scores[catalog.size:] = -np.inf
    return scores


def item_item_scores(seen_at: tuple[np.ndarray, np.ndarray], n_users: int,
                     catalog: ItemCatalog) -> np.ndarray:
    """An item-item model's scores for a block of users, laid out as
    :func:`block_scores` lays them: the sum of the weight rows of each user's seen
    items (``seen_at``: their items' positions, their users' columns in the block)."""
    from scipy import sparse

    columns, rows = seen_at
    seen = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)),
                             shape=(n_users, catalog.size))
    scores = np.ascontiguousarray(np.asarray(seen @ catalog.factors, dtype=np.float32).T)
    scores[catalog.size:] = -np.inf
    return scores


def with_known_history(batch: pa.RecordBatch, catalog: ItemCatalog) -> pa.RecordBatch:
    """The rows of ``batch`` with at least one seen item in ``catalog``: an item-item
    model knows nothing of the others, as a factor model knows nothing of a user
    without factors."""
    rows, _ = seen_positions(batch.column("seen"), catalog.ids)
    known = np.bincount(rows, minlength=batch.num_rows) > 0
    return batch if known.all() else batch.filter(pa.array(known))


def seen_positions(seen: pa.Array, sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) in the score matrix of the items each user has already seen."""
    if len(sorted_ids) == 0 or pc.sum(pc.list_value_length(seen)).as_py() in (None, 0):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    rows = pc.list_parent_indices(seen).to_numpy()
    wanted = pc.list_flatten(seen).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    positions, known = sorted_positions(sorted_ids, wanted)
    return rows[known].astype(np.int64), positions[known]


def top_k_items(scores: np.ndarray, k: int, chunk: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best finite scores of each user of a block laid out as
    :func:`block_scores` lays it (one row per item, one column per user):
    (users, items, scores), flat, as column and row positions.

    Sorted by user, then best first, equal scores by item. Each user's items
    are cut into chunks of ``chunk`` (the width must divide the item count;
    chunk j holds items j, j + n_chunks, j + 2 n_chunks, ..., which makes the
    chunk maxima one element-wise maximum over contiguous memory). The k-th
    largest chunk maximum is a floor under the user's k-th best score: only
    scores at or above it can be among the best, and typically little more
    than k of them are, so only those are sorted; no user's scores are sorted
    whole.
    """
    n_items, n_users = scores.shape
    n_chunks = n_items // chunk
    if k < n_chunks and n_users:
        chunk_max = scores.reshape(chunk, n_chunks, n_users).max(axis=0)
        floor = np.partition(chunk_max, n_chunks - k, axis=0)[n_chunks - k]
    else:
        floor = np.full(n_users, -np.inf, dtype=scores.dtype)
    # Compared a chunk row at a time against the floors laid end to end: numpy's
    # loop over a block's few users per item would cost twice the comparison.
    above = scores.reshape(chunk, -1) >= np.tile(floor, n_chunks)
    flat = np.flatnonzero(above)
    columns, rows = np.divmod(flat, n_users)
    candidate_scores = scores.reshape(-1)[flat]
    # A stable sort, and flatnonzero gives items in order: equal scores stay by item.
    order = np.argsort(row_then_descending_key(rows, candidate_scores), kind="stable")
    rows, columns, candidate_scores = rows[order], columns[order], candidate_scores[order]
    counts = np.bincount(rows, minlength=n_users)
    row_start = np.cumsum(counts) - counts
    place = np.arange(len(rows)) - row_start[rows]
    keep = (place < k) & np.isfinite(candidate_scores)
    return rows[keep], columns[keep], candidate_scores[keep]


def row_then_descending_key(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """uint64 keys ordering by row, then by float32 score from highest to lowest."""
    # Adding 0.0 turns -0.0 into 0.0, so the two zeros tie as they compare.
    bits = (-scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    sign = np.uint32(0x80000000)
    ascending = np.where(bits & sign, ~bits, bits | sign)
    return (rows.astype(np.uint64) << np.uint64(32)) | ascending.astype(np.uint64)


def score_block(
    block: pd.DataFrame, sorted_ids: np.ndarray, sorted_factors: np.ndarray, k: int
) -> pd.DataFrame:
    """:func:`score_arrow_block` for a pandas block and an item matrix sorted by id."""
    batch = pa.RecordBatch.from_pandas(
        block[["user_id", "features", "seen"]].reset_index(drop=True),
        schema=pa.schema([("user_id", pa.int64()), ("features", pa.list_(pa.float32())),
                          ("seen", pa.list_(pa.int64()))]),
        preserve_index=False,
    )
    return score_arrow_block(batch, ItemCatalog.build(sorted_ids, sorted_factors, k), k
                             ).to_pandas()


def positions_of(sorted_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Indexes in ``sorted_ids`` of the ``wanted`` ids it contains (others are skipped)."""
    positions, known = sorted_positions(sorted_ids, wanted)
    return positions[known]


def catalog_popularity(popularity: pd.DataFrame, item_ids: np.ndarray) -> PopularityRanking:
    """The catalogue's popularity ranking from :func:`item_popularity`'s collected rows:
    one entry per catalogue item, those nobody touched at 0."""
    from jobs.contracts.predictions import popularity_ranking as rank

    catalog = pd.DataFrame({"item_id": np.asarray(item_ids, dtype=np.int64)})
    frame = catalog.merge(popularity, on="item_id", how="left").fillna({"score": 0.0})
    return rank(frame.rename(columns={"score": "users"}))


def split_canary(users: DataFrame, fraction: float) -> tuple[DataFrame, DataFrame]:
    """``users`` (with ``user_id``) split into (the rest, the canary) by
    :mod:`jobs.contracts.canary`."""
    from jobs.contracts.canary import check_fraction, in_canary

    check_fraction(fraction)

    @F.pandas_udf(T.BooleanType())
    def canary(user_ids: pd.Series) -> pd.Series:
        return pd.Series(in_canary(user_ids.to_numpy(), fraction))

    flagged = users.withColumn("_canary", canary(F.col("user_id")))
    return (flagged.where(~F.col("_canary")).drop("_canary"),
            flagged.where(F.col("_canary")).drop("_canary"))
