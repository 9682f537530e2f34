"""The EASE family: an item-item model in closed form (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019).

With X the binary user x item matrix of who touched what and G = XᵀX its item-item
Gram matrix, EASE's weights are

    P = (G + λI)⁻¹,    B[i, j] = -P[i, j] / P[j, j] (i ≠ j),    B[j, j] = 0,

and a user's score for item j is the sum of B[i, j] over the items i they touched.
Spark computes G: each task sums XᵀX over its users into a dense partial matrix and
writes it to a file in a work folder (which, as for the scoring output, the driver
and every executor must reach at the same path); the driver adds the partial
matrices up and solves on its own. The solve holds one items x items float64
matrix, so the catalogue's size is bounded by the driver's memory:
``BATCHSCORE_EASE_MAX_ITEMS`` (25,000 by default) refuses a larger one
before anything is computed.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jobs.data.load import InputError
from jobs.platform.progress import spark_progress
from jobs.scoring.item_item import ItemItemModel
from jobs.scoring.model import EASE

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

# Chosen on the holdout of the sample data set (see README, "Choosing a family").
DEFAULT_L2 = 200.0
# Users whose rows one task multiplies at a time while it sums its partial Gram matrix.
USERS_PER_STEP = 20_000
# Rows of the solved matrix made symmetric at a time (bounds the copies made).
ROWS_PER_STEP = 2_048


@dataclass(frozen=True)
class EaseParams:
    l2: float = DEFAULT_L2

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise ValueError(f"--l2 must be positive, got {self.l2}")


class CatalogTooLargeError(InputError):
    """The catalogue is larger than an item-item model may be on the driver."""


def driver_bytes(items: int) -> int:
    """What fitting needs on the driver for ``items``: the float64 matrix solved in place
    and the float32 weights made from it."""
    return items * items * (8 + 4)


def fit_ease(interactions: DataFrame, params: EaseParams, max_items: int, work: Path,
             description: str = "EASE fit") -> ItemItemModel:
    """EASE fitted on ``interactions`` (``user_id``, ``item_id``), over the items they hold.

    Raises :class:`CatalogTooLargeError` naming the limit and its setting when
    there are more than ``max_items`` items. ``work`` is a folder for the partial
    Gram matrices, removed before returning.
    """
    from pyspark.sql import functions as F

    spark = interactions.sparkSession
    with spark_progress(spark, f"{description}: items"):
        item_ids = np.sort(np.array([row[0] for row in interactions.select("item_id")
                                     .distinct().collect()], dtype=np.int64))
    if len(item_ids) > max_items:
        raise CatalogTooLargeError(
            f"an EASE model over {len(item_ids):,} items needs about "
            f"{driver_bytes(len(item_ids)) / 2**30:.1f} GiB on the driver; the limit is "
            f"{max_items:,} items (BATCHSCORE_EASE_MAX_ITEMS, about "
            f"{driver_bytes(max_items) / 2**30:.1f} GiB): raise it on a driver with the "
            "memory, or train the als family")
    if len(item_ids) == 0:
        raise InputError("no interactions to fit an EASE model on")
    seen = interactions.groupBy("user_id").agg(
        F.array_distinct(F.collect_list("item_id")).alias("seen"))
    folder = work / f"gram-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    try:
        with spark_progress(spark, f"{description}: Gram matrix"):
            gram = gram_matrix(seen, item_ids, folder)
        logger.info("solving EASE over %d items (l2 %g)", len(item_ids), params.l2)
        weights = solve(gram, params.l2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ItemItemModel(family=EASE, item_ids=item_ids, weights=weights,
                         params={"l2": params.l2})


def gram_matrix(seen: DataFrame, item_ids: np.ndarray, folder: Path) -> np.ndarray:
    """G = XᵀX as float64, rows and columns in ``item_ids`` order, from ``seen``
    (``user_id``, ``seen``): every task writes its users' part to ``folder``."""
    from pyspark.sql import types as T

    target = str(folder)
    parts = seen.select("seen").coalesce(seen.sparkSession.sparkContext.defaultParallelism)
    written = parts.mapInArrow(
        partial_gram_task(item_ids, target),
        T.StructType([T.StructField("file", T.StringType(), nullable=False)]),
    ).collect()
    gram = np.zeros((len(item_ids), len(item_ids)), dtype=np.float64)
    for row in written:
        gram += np.load(row["file"])
    logger.info("Gram matrix over %d items summed from %d partial matrices",
                len(item_ids), len(written))
    return gram


def partial_gram_task(item_ids: np.ndarray, folder: str):
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark import TaskContext
        from scipy import sparse

        n = len(item_ids)
        gram = np.zeros((n, n), dtype=np.float32)
        pending_rows: list[np.ndarray] = []
        pending_columns: list[np.ndarray] = []
        pending_users = 0

        def add_pending() -> None:
            if not pending_rows:
                return
            rows, columns = np.concatenate(pending_rows), np.concatenate(pending_columns)
            x = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)),
                                  shape=(pending_users, n))
            product = (x.T @ x).tocoo()
            # A sparse product holds each (row, column) once, so += adds them all.
            gram[product.row, product.col] += product.data
            pending_rows.clear()
            pending_columns.clear()

        for batch in batches:
            column = batch.column("seen")
            rows = pc.list_parent_indices(column).to_numpy() + pending_users
            columns = np.searchsorted(
                item_ids, pc.list_flatten(column).to_numpy(zero_copy_only=False))
            pending_rows.append(rows.astype(np.int64))
            pending_columns.append(columns)
            pending_users += batch.num_rows
            if pending_users >= USERS_PER_STEP:
                add_pending()
                pending_users = 0
        add_pending()
        context = TaskContext.get()
        path = Path(folder) / f"part-{context.partitionId():05d}-{context.taskAttemptId()}.npy"
        np.save(path, gram)
        yield pa.RecordBatch.from_pydict({"file": pa.array([str(path)], pa.string())})

    return task


def solve(gram: np.ndarray, l2: float, rows_per_step: int = ROWS_PER_STEP) -> np.ndarray:
    """EASE's weights (float32) from the Gram matrix, which is overwritten: a Cholesky
    factorisation and inverse in place, then each column divided by its diagonal
    (``rows_per_step`` rows at a time)."""
    from scipy.linalg import lapack

    n = len(gram)
    gram[np.diag_indices(n)] += l2
    # The matrix is symmetric, so its transpose is the same matrix in Fortran order:
    # LAPACK works on it in place instead of on a copy.
    fortran = gram.T
    factor, info = lapack.dpotrf(fortran, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise ValueError(f"the Gram matrix plus l2 {l2:g} is not positive definite "
                         f"(LAPACK dpotrf info {info}); use a larger --l2")
    inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise ValueError(f"inverting the Gram matrix failed (LAPACK dpotri info {info})")
    # dpotri fills one triangle (the upper one of the Fortran view, the lower one of
    # ``inverse.T``): mirror it, a band of rows at a time.
    p = inverse.T
    for start in range(0, n, rows_per_step):
        stop = min(n, start + rows_per_step)
        p[start:stop, stop:] = p[stop:, start:stop].T
        band = p[start:stop, start:stop]
        lower = np.tril(band)
        band[...] = lower + np.tril(band, -1).T
    diagonal = np.diag(p).copy()
    weights = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, rows_per_step):
        stop = min(n, start + rows_per_step)
        weights[start:stop] = p[start:stop] / -diagonal[None, :]
    weights[np.diag_indices(n)] = 0.0
    return weights
