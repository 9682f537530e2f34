"""The parity gate: a bundle must score a sample exactly as Spark does, within 1e-5.

Spark is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.bundles.leapframe import DataType, Field, LeapFrame, Vector, scalar, tensor
from jobs.bundles.reader import LoadedBundle

if TYPE_CHECKING:
    from pyspark.ml import Transformer as SparkTransformer
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5
ROW_ID = "__parity_row"


class ParityError(RuntimeError):
    """The bundle's predictions differ from Spark's by more than the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """What the gate compared: rows, columns and the largest difference seen."""

    rows: int
    columns: tuple[str, ...]
    max_abs_diff: float
    tolerance: float


def check_parity(bundle: LoadedBundle, spark_model: SparkTransformer, sample: DataFrame,
                 columns: Sequence[str] | None = None, tolerance: float = TOLERANCE
                 ) -> ParityReport:
    """Score ``sample`` with the bundle and with Spark and compare ``columns`` row by row.

    ``columns`` defaults to every column the bundle adds. Rows Spark drops (ALS
    with coldStartStrategy "drop") must be NaN in the bundle. Raises
    ParityError naming the column and the worst row when a difference exceeds
    ``tolerance``.
    """
    from pyspark.sql import types as T

    rows = sample.collect()
    schema = T.StructType([*sample.schema.fields, T.StructField(ROW_ID, T.LongType(), False)])
    keyed = sample.sparkSession.createDataFrame(
        [(*row, i) for i, row in enumerate(rows)], schema=schema)
    frame = LeapFrame(
        [*(Field(f.name, _leap_type(f)) for f in sample.schema.fields),
         Field(ROW_ID, scalar("long", nullable=False))],
        [[*(_leap_value(v) for v in row), i] for i, row in enumerate(rows)])
    scored = bundle.transform(frame)
    input_names = {f.name for f in frame.fields}
    compared = list(columns) if columns is not None else [
        f.name for f in scored.fields if f.name not in input_names]
    spark_rows = {r[ROW_ID]: r for r in
                  spark_model.transform(keyed).select(ROW_ID, *compared).collect()}
    id_at = scored.index(ROW_ID)
    positions = {name: scored.index(name) for name in compared}

    worst = 0.0
    for name in compared:
        worst_row, worst_diff, bundle_value, spark_value = -1, 0.0, None, None
        seen = set()
        for row in scored.rows:
            row_id = row[id_at]
            seen.add(row_id)
            ours = row[positions[name]]
            theirs = spark_rows[row_id][name] if row_id in spark_rows else _DROPPED
            diff = _difference(ours, theirs)
            if diff > worst_diff:
                worst_row, worst_diff, bundle_value, spark_value = row_id, diff, ours, theirs
        for row_id in spark_rows.keys() - seen:
            worst_row, worst_diff = row_id, math.inf
            bundle_value, spark_value = "no row", spark_rows[row_id][name]
        worst = max(worst, worst_diff)
        if worst_diff > tolerance:
            inputs = {k: v for k, v in rows[worst_row].asDict().items()} if worst_row >= 0 else {}
            raise ParityError(
                f"bundle and Spark differ on column '{name}': worst row {worst_row} "
                f"{_short(inputs)} bundle={_short(bundle_value)} spark={_short(spark_value)} "
                f"(|diff| {worst_diff:.3g} > {tolerance:g})")
    report = ParityReport(rows=len(rows), columns=tuple(compared), max_abs_diff=worst,
                          tolerance=tolerance)
    logger.info("parity: %d rows, columns %s, max |diff| %.3g", report.rows,
                ", ".join(compared), report.max_abs_diff)
    return report


_DROPPED = object()


def _difference(ours: Any, theirs: Any) -> float:
    if theirs is _DROPPED:
        # Spark dropped the row (cold start "drop"); the bundle must say NaN.
        return 0.0 if _is_nan(ours) else math.inf
    if ours is None or theirs is None:
        return 0.0 if ours is None and theirs is None else math.inf
    a = _as_array(ours)
    b = _as_array(theirs)
    if a.shape != b.shape:
        return math.inf
    if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
        return 0.0 if np.array_equal(a, b) else math.inf
    both_nan = np.isnan(a) & np.isnan(b)
    if np.any(np.isnan(a) ^ np.isnan(b)):
        return math.inf
    diffs = np.abs(np.where(both_nan, 0.0, a - b))
    return float(diffs.max()) if diffs.size else 0.0


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, Vector):
        return value.values
    if hasattr(value, "toArray"):
        return np.asarray(value.toArray(), dtype=np.float64)
    if isinstance(value, bool | int | float):
        return np.asarray([float(value)])
    return np.asarray([value])


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _short(value: Any) -> str:
    text = repr(value.values.tolist()) if isinstance(value, Vector) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _leap_type(spark_field: Any) -> DataType:
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    kind = spark_field.dataType
    nullable = bool(spark_field.nullable)
    simple = {T.DoubleType: "double", T.FloatType: "float", T.IntegerType: "integer",
              T.LongType: "long", T.ShortType: "short", T.ByteType: "byte",
              T.StringType: "string", T.BooleanType: "boolean"}
    for spark_type, name in simple.items():
        if isinstance(kind, spark_type):
            return scalar(name, nullable)
    if isinstance(kind, VectorUDT):
        return tensor(None)
    raise ParityError(f"column '{spark_field.name}' has type {kind.simpleString()}, "
                      f"which a LeapFrame cannot carry")


def _leap_value(value: Any) -> Any:
    if hasattr(value, "toArray"):
        return Vector(value.toArray())
    return value
