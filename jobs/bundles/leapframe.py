"""MLeap's LeapFrame JSON: ``{"schema": {"fields": [...]}, "rows": [[...], ...]}``.

Field types follow MLeap's runtime JSON support: a nullable scalar is its base
name (``"double"``, ``"integer"``, ``"string"``...), a non-nullable one is
``{"type": "basic", "base": ..., "isNullable": false}``; a tensor is
``{"type": "tensor", "base": "double", "dimensions": [n]}`` (plus
``"isNullable": false`` when it cannot be null). Tensor values in rows are
``{"values": [...], "dimensions": [n]}``, sparse ones add ``"indices": [[i],
...]`` and list only the non-zero values.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bundles.format import BundleError

logger = logging.getLogger(__name__)

SCALAR_NAMES = {"boolean", "byte", "short", "integer", "int", "long", "float", "double",
                "string"}


@dataclass(frozen=True)
class DataType:
    """A column type: a scalar, a list or a tensor of a base type."""

    kind: str  # "scalar", "list" or "tensor"
    base: str  # "double", "float", "integer", "long", "string", "boolean"...
    nullable: bool = True
    dimensions: tuple[int, ...] | None = None

    def to_json(self) -> Any:
        if self.kind == "scalar":
            if self.nullable:
                return self.base
            return {"type": "basic", "base": self.base, "isNullable": False}
        # Inside lists and tensors MLeap names the 32-bit integer "int".
        base = "int" if self.base == "integer" else self.base
        encoded: dict[str, Any] = {"type": self.kind, "base": base}
        if not self.nullable:
            encoded["isNullable"] = False
        if self.kind == "tensor" and self.dimensions is not None:
            encoded["dimensions"] = list(self.dimensions)
        return encoded

    @classmethod
    def from_json(cls, raw: Any, where: str) -> DataType:
        if isinstance(raw, str):
            if raw not in SCALAR_NAMES:
                raise BundleError(f"{where}: unknown type {raw!r}")
            return cls("scalar", _scalar_name(raw))
        if not isinstance(raw, dict):
            raise BundleError(f"{where}: a type must be a name or an object, got {raw!r}")
        kind = raw.get("type", "basic")
        nullable = bool(raw.get("isNullable", True))
        base = raw.get("base")
        if kind == "basic":
            if base not in SCALAR_NAMES:
                raise BundleError(f"{where}: unknown type {base!r}")
            return cls("scalar", _scalar_name(base), nullable)
        if kind in ("tensor", "list"):
            if base not in SCALAR_NAMES:
                raise BundleError(f"{where}: unknown {kind} base {base!r}")
            dims = raw.get("dimensions")
            return cls(kind, _scalar_name(base), nullable,
                       tuple(int(d) for d in dims) if dims is not None else None)
        raise BundleError(f"{where}: unsupported type {kind!r}")


def _scalar_name(name: str) -> str:
    return "integer" if name == "int" else name


def scalar(base: str, nullable: bool = True) -> DataType:
    return DataType("scalar", base, nullable)


def tensor(size: int | None, base: str = "double", nullable: bool = True) -> DataType:
    return DataType("tensor", base, nullable, None if size is None else (size,))


class Vector:
    """A 1-d tensor value; ``sparse`` says how MLeap would write it."""

    __slots__ = ("sparse", "values")

    def __init__(self, values: np.ndarray | Sequence[float], sparse: bool = False) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.sparse = sparse

    def __len__(self) -> int:
        return int(self.values.size)

    def __repr__(self) -> str:
        return f"Vector({self.values.tolist()}, sparse={self.sparse})"

    def compressed(self) -> Vector:
        """Dense or sparse, whichever is smaller, as Spark's ``Vector.compressed`` chooses."""
        nnz = int(np.count_nonzero(self.values))
        return Vector(self.values, sparse=1.5 * (nnz + 1.0) < self.values.size)

    def to_json(self) -> dict[str, Any]:
        if self.sparse:
            indices = np.flatnonzero(self.values)
            return {"indices": [[int(i)] for i in indices],
                    "values": [float(self.values[i]) for i in indices],
                    "dimensions": [len(self)]}
        return {"values": [float(v) for v in self.values], "dimensions": [len(self)]}


@dataclass(frozen=True)
class Field:
    name: str
    dtype: DataType


@dataclass
class LeapFrame:
    """Rows of values with a schema; transformers append columns."""

    fields: list[Field]
    rows: list[list[Any]]

    def index(self, name: str, wanted_by: str = "") -> int:
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        suffix = f" (needed by {wanted_by})" if wanted_by else ""
        raise BundleError(f"input column '{name}' is missing from the frame{suffix}")

    def column(self, name: str) -> list[Any]:
        i = self.index(name)
        return [row[i] for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {"schema": {"fields": [{"name": f.name, "type": f.dtype.to_json()}
                                      for f in self.fields]},
                "rows": [[_write_value(v, f.dtype) for v, f in zip(row, self.fields, strict=True)]
                         for row in self.rows]}


def _write_value(value: Any, dtype: DataType) -> Any:
    if value is None:
        return None
    if isinstance(value, Vector):
        return value.to_json()
    if dtype.base == "float" and dtype.kind == "scalar":
        # JSON has no NaN; a missing prediction (unknown ALS user or item) is null.
        return None if math.isnan(value) else float(str(np.float32(value)))
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_value(raw: Any, dtype: DataType, where: str) -> Any:
    if raw is None:
        if not dtype.nullable and dtype.kind == "scalar" and dtype.base in ("double", "float"):
            # JSON has no NaN: MLeap's writer, like ours, writes it as null (an ALS
            # prediction for an unknown user or item).
            return math.nan
        if not dtype.nullable:
            raise BundleError(f"{where}: null in a non-nullable column")
        return None
    if dtype.kind == "tensor":
        if isinstance(raw, list):
            return Vector(raw)
        if not isinstance(raw, dict) or "values" not in raw:
            raise BundleError(f"{where}: a tensor value needs 'values' and 'dimensions'")
        values = raw["values"]
        if "indices" in raw:
            dims = raw.get("dimensions") or []
            if len(dims) != 1:
                raise BundleError(f"{where}: only 1-d sparse tensors are supported")
            dense = np.zeros(int(dims[0]))
            for index, value in zip(raw["indices"], values, strict=True):
                dense[int(index[0])] = value
            return Vector(dense, sparse=True)
        return Vector(values)
    if dtype.kind == "list":
        if not isinstance(raw, list):
            raise BundleError(f"{where}: expected a list")
        return raw
    try:
        if dtype.base in ("double", "float"):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise TypeError
            return float(raw)
        if dtype.base in ("integer", "long", "short", "byte"):
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != int(raw):
                raise TypeError
            return int(raw)
        if dtype.base == "boolean":
            if not isinstance(raw, bool):
                raise TypeError
            return raw
        if dtype.base == "string":
            if not isinstance(raw, str):
                raise TypeError
            return raw
    except (TypeError, ValueError):
        raise BundleError(f"{where}: {raw!r} is not a {dtype.base}") from None
    return raw


def frame_from_json(document: Any, source: str = "frame") -> LeapFrame:
    """A LeapFrame from parsed JSON, checking every value against the schema."""
    if not isinstance(document, dict) or "schema" not in document or "rows" not in document:
        raise BundleError(f"{source} is not a LeapFrame: it needs 'schema' and 'rows'")
    schema = document["schema"]
    raw_fields = schema.get("fields") if isinstance(schema, dict) else None
    if not isinstance(raw_fields, list):
        raise BundleError(f"{source} is not a LeapFrame: 'schema' needs a 'fields' list")
    fields: list[Field] = []
    for number, raw in enumerate(raw_fields):
        if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
            raise BundleError(f"{source}: schema field {number} needs 'name' and 'type'")
        fields.append(Field(str(raw["name"]),
                            DataType.from_json(raw["type"], f"{source}: field '{raw['name']}'")))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise BundleError(f"{source}: the schema names a column twice")
    rows_raw = document["rows"]
    if not isinstance(rows_raw, list):
        raise BundleError(f"{source}: 'rows' must be a list")
    rows: list[list[Any]] = []
    for r, raw_row in enumerate(rows_raw):
        if not isinstance(raw_row, list) or len(raw_row) != len(fields):
            raise BundleError(f"{source}: row {r} must be a list of {len(fields)} values")
        rows.append([_read_value(v, f.dtype, f"{source}: row {r}, column '{f.name}'")
                     for v, f in zip(raw_row, fields, strict=True)])
    return LeapFrame(fields, rows)


def read_frame(path: Path) -> LeapFrame:
    """Read a LeapFrame JSON file."""
    if not path.is_file():
        raise FileNotFoundError(f"no frame file at {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not JSON: {err}") from None
    frame = frame_from_json(document, str(path))
    logger.info("read %d rows from %s", len(frame.rows), path)
    return frame


def frame_to_text(frame: LeapFrame) -> str:
    return json.dumps(frame.to_json(), indent=2)
