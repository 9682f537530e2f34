"""The parity gate: a bundle must score a sample exactly as Spark does, within 1e-5.

The three-way check adds MLeap's own JVM runtime (``mleap_runtime``) as a third
scorer: Spark, MLeap and the Python reader must agree pairwise.

Spark is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jobs.bundles.leapframe import DataType, Field, LeapFrame, Vector, scalar, tensor

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


class FrameScorer(Protocol):
    """Anything that scores a LeapFrame: a loaded bundle, or one in MLeap's JVM runtime."""

    def transform(self, frame: LeapFrame) -> LeapFrame: ...


@dataclass(frozen=True)
class ThreeWayReport:
    """The largest differences between Spark, MLeap's JVM runtime and the Python reader."""

    rows: int
    columns: tuple[str, ...]
    python_vs_spark: float
    jvm_vs_spark: float
    python_vs_jvm: float
    tolerance: float

    @property
    def max_abs_diff(self) -> float:
        return max(self.python_vs_spark, self.jvm_vs_spark, self.python_vs_jvm)


def check_parity(bundle: FrameScorer, spark_model: SparkTransformer, sample: DataFrame,
                 columns: Sequence[str] | None = None, tolerance: float = TOLERANCE
                 ) -> ParityReport:
    """Score ``sample`` with the bundle and with Spark and compare ``columns`` row by row.

    ``columns`` defaults to every column the bundle adds. Rows Spark drops (ALS
    with coldStartStrategy "drop") must be NaN in the bundle. Raises
    ParityError naming the column and the worst row when a difference exceeds
    ``tolerance``.
    """
    rows, frame = _sample_frame(sample)
    scored = bundle.transform(frame)
    compared = _added_columns(frame, scored, columns)
    spark = _spark_rows(spark_model, sample, rows, compared)
    worst = _worst_difference(scored, spark, compared, rows, tolerance, "bundle", "spark")
    report = ParityReport(rows=len(rows), columns=tuple(compared), max_abs_diff=worst,
                          tolerance=tolerance)
    logger.info("parity: %d rows, columns %s, max |diff| %.3g", report.rows,
                ", ".join(compared), report.max_abs_diff)
    return report


def check_three_ways(python: FrameScorer, jvm: FrameScorer, spark_model: SparkTransformer,
                     sample: DataFrame, columns: Sequence[str] | None = None,
                     tolerance: float = TOLERANCE) -> ThreeWayReport:
    """Score ``sample`` with Spark, MLeap's JVM runtime and the Python reader; compare each pair.

    ``columns`` defaults to every column the Python reader adds. Raises
    ParityError, naming the pair, the column and the worst row, when any pair
    differs by more than ``tolerance``.
    """
    rows, frame = _sample_frame(sample)
    by_python = python.transform(frame)
    by_jvm = jvm.transform(frame)
    compared = _added_columns(frame, by_python, columns)
    spark = _spark_rows(spark_model, sample, rows, compared)
    python_rows = {row[by_python.index(ROW_ID)]: {name: row[by_python.index(name)]
                                                  for name in compared}
                   for row in by_python.rows}
    report = ThreeWayReport(
        rows=len(rows), columns=tuple(compared),
        python_vs_spark=_worst_difference(by_python, spark, compared, rows, tolerance,
                                          "python", "spark"),
        jvm_vs_spark=_worst_difference(by_jvm, spark, compared, rows, tolerance, "jvm", "spark"),
        python_vs_jvm=_worst_difference(by_jvm, python_rows, compared, rows, tolerance,
                                        "jvm", "python"),
        tolerance=tolerance)
    logger.info("three-way parity: %d rows, columns %s, max |diff| python-spark %.3g, "
                "jvm-spark %.3g, python-jvm %.3g", report.rows, ", ".join(compared),
                report.python_vs_spark, report.jvm_vs_spark, report.python_vs_jvm)
    return report


def _sample_frame(sample: DataFrame) -> tuple[list[Any], LeapFrame]:
    """The sample's rows and the same rows as a LeapFrame, each with its row number."""
    rows = sample.collect()
    frame = LeapFrame(
        [*(Field(f.name, _leap_type(f)) for f in sample.schema.fields),
         Field(ROW_ID, scalar("long", nullable=False))],
        [[*(_leap_value(v) for v in row), i] for i, row in enumerate(rows)])
    return rows, frame


def _added_columns(frame: LeapFrame, scored: LeapFrame,
                   columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    input_names = {f.name for f in frame.fields}
    return [f.name for f in scored.fields if f.name not in input_names]


def _spark_rows(spark_model: SparkTransformer, sample: DataFrame, rows: list[Any],
                compared: list[str]) -> dict[int, dict[str, Any]]:
    """Spark's output for the sample's rows, by row number (rows Spark drops are absent)."""
    from pyspark.sql import types as T

    schema = T.StructType([*sample.schema.fields, T.StructField(ROW_ID, T.LongType(), False)])
    keyed = sample.sparkSession.createDataFrame(
        [(*row, i) for i, row in enumerate(rows)], schema=schema)
    return {r[ROW_ID]: r.asDict() for r in
            spark_model.transform(keyed).select(ROW_ID, *compared).collect()}


def _worst_difference(scored: LeapFrame, reference: dict[int, dict[str, Any]],
                      compared: list[str], rows: list[Any], tolerance: float,
                      ours_name: str, theirs_name: str) -> float:
    """The largest difference between ``scored`` and ``reference`` over ``compared``.

    Raises ParityError naming the column and the worst row when it exceeds ``tolerance``.
    """
    id_at = scored.index(ROW_ID)
    positions = {name: scored.index(name) for name in compared}
    worst = 0.0
    for name in compared:
        worst_row, worst_diff, ours_value, theirs_value = -1, 0.0, None, None
        seen = set()
        for row in scored.rows:
            row_id = row[id_at]
            seen.add(row_id)
            ours = row[positions[name]]
            theirs = reference[row_id][name] if row_id in reference else _DROPPED
            diff = _difference(ours, theirs)
            if diff > worst_diff:
                worst_row, worst_diff, ours_value, theirs_value = row_id, diff, ours, theirs
        for row_id in reference.keys() - seen:
            worst_row, worst_diff = row_id, math.inf
            ours_value, theirs_value = "no row", reference[row_id][name]
        worst = max(worst, worst_diff)
        if worst_diff > tolerance:
            inputs = dict(rows[worst_row].asDict()) if worst_row >= 0 else {}
            raise ParityError(
                f"{ours_name} and {theirs_name} differ on column '{name}': worst row "
                f"{worst_row} {_short(inputs)} {ours_name}={_short(ours_value)} "
                f"{theirs_name}={_short(theirs_value)} "
                f"(|diff| {worst_diff:.3g} > {tolerance:g})")
    return worst


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
