"""Transformers for the MLeap ops this project reads, with MLeap's runtime semantics.

Each transformer reads its input columns from a LeapFrame and appends its
output columns, in the order of its ``node.json`` ports. Rows are scored one at
a time; the frames this scores (a sample, a CLI request) are small.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from jobs.bundles.format import Attributes, BundleError, BundleSource, NodeSpec
from jobs.bundles.leapframe import DataType, Field, LeapFrame, Vector, scalar, tensor

logger = logging.getLogger(__name__)

KEEP, SKIP, ERROR = "keep", "skip", "error"


class Transformer:
    """A node of a bundle: named, with input and output columns."""

    op: str = ""

    def __init__(self, spec: NodeSpec) -> None:
        self.name = spec.name
        self.spec = spec

    def where(self) -> str:
        return f"node '{self.name}' (op {self.op})"

    def port_in(self, port: str) -> str:
        try:
            return self.spec.inputs[port]
        except KeyError:
            raise BundleError(f"{self.where()}: input port '{port}' is not bound") from None

    def port_out(self, port: str) -> str:
        try:
            return self.spec.outputs[port]
        except KeyError:
            raise BundleError(f"{self.where()}: output port '{port}' is not bound") from None

    def transform(self, frame: LeapFrame) -> LeapFrame:
        raise NotImplementedError


class RowTransformer(Transformer):
    """Maps the values of the input columns of a row to the values of its outputs."""

    def inputs(self) -> list[str]:
        raise NotImplementedError

    def outputs(self) -> list[tuple[str, DataType]]:
        raise NotImplementedError

    def apply(self, values: list[Any]) -> list[Any] | None:
        """The output values, or None to drop the row (``handle_invalid`` = skip)."""
        raise NotImplementedError

    def transform(self, frame: LeapFrame) -> LeapFrame:
        positions = [frame.index(name, self.where()) for name in self.inputs()]
        outputs = self.outputs()
        for name, _ in outputs:
            if any(f.name == name for f in frame.fields):
                raise BundleError(f"{self.where()}: output column '{name}' already exists")
        rows: list[list[Any]] = []
        for number, row in enumerate(frame.rows):
            try:
                produced = self.apply([row[p] for p in positions])
            except BundleError as err:
                raise BundleError(f"{self.where()}, row {number}: {err}") from None
            except (TypeError, ValueError, OverflowError) as err:
                # A value of the wrong type for this op, e.g. a string where an id goes.
                raise BundleError(f"{self.where()}, row {number}: cannot score "
                                  f"{[row[p] for p in positions]!r} ({err})") from None
            if produced is not None:
                rows.append([*row, *produced])
        fields = [*frame.fields, *(Field(name, dtype) for name, dtype in outputs)]
        return LeapFrame(fields, rows)


def as_vector(value: Any) -> np.ndarray:
    if isinstance(value, Vector):
        return value.values
    if value is None:
        raise BundleError("a feature vector is null")
    raise BundleError(f"expected a tensor, got {value!r}")


def as_number(value: Any) -> float:
    if value is None:
        raise BundleError("a numeric input is null")
    if isinstance(value, bool | int | float | np.number):
        return float(value)
    raise BundleError(f"expected a number, got {value!r}")


# ---------------------------------------------------------------- pipeline


class Pipeline(Transformer):
    op = "pipeline"

    def __init__(self, spec: NodeSpec, stages: list[Transformer]) -> None:
        super().__init__(spec)
        self.stages = stages

    def transform(self, frame: LeapFrame) -> LeapFrame:
        for stage in self.stages:
            frame = stage.transform(frame)
        return frame


# ---------------------------------------------------------------- features


class VectorAssembler(RowTransformer):
    op = "vector_assembler"

    def inputs(self) -> list[str]:
        ports = sorted((p for p in self.spec.inputs if p.startswith("input")),
                       key=lambda p: int(p[len("input"):] or 0))
        return [self.spec.inputs[p] for p in ports]

    def outputs(self) -> list[tuple[str, DataType]]:
        shapes = self.spec.attributes.list("input_shapes", "data_shape", default=[])
        size: int | None = None
        if shapes:
            size = sum(int(s["tensorShape"]["dimensions"][0]["size"])
                       if s.get("base") == "tensor" else 1 for s in shapes)
        return [(self.port_out("output"), tensor(size))]

    def apply(self, values: list[Any]) -> list[Any]:
        parts: list[np.ndarray] = []
        for value in values:
            if isinstance(value, Vector):
                parts.append(value.values)
            elif value is None:
                raise BundleError("vector_assembler: an input value is null")
            else:
                parts.append(np.array([as_number(value)]))
        return [Vector(np.concatenate(parts) if parts else np.zeros(0)).compressed()]


class StandardScaler(RowTransformer):
    op = "standard_scaler"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        # with_mean / with_std are implied by which of the two tensors are present.
        self.mean = spec.attributes.tensor("mean", required=False)
        self.std = spec.attributes.tensor("std", required=False)
        if self.mean is None and self.std is None:
            raise BundleError(f"{self.where()}: needs a 'mean' or a 'std' tensor")
        self.size = int((self.std if self.std is not None else self.mean).size)
        if self.std is not None:
            # Spark and MLeap multiply by the inverse and map a zero deviation to 0.
            self.factor = np.array([1.0 / s if s != 0.0 else 0.0 for s in self.std])

    def inputs(self) -> list[str]:
        return [self.port_in("input")]

    def outputs(self) -> list[tuple[str, DataType]]:
        return [(self.port_out("output"), tensor(self.size))]

    def apply(self, values: list[Any]) -> list[Any]:
        x = as_vector(values[0])
        if x.size != self.size:
            raise BundleError(f"expected a vector of size {self.size}, got {x.size}")
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x * self.factor
        # Scaling alone keeps zeros, so MLeap keeps a sparse input sparse; centring does not.
        sparse = self.mean is None and isinstance(values[0], Vector) and values[0].sparse
        return [Vector(x, sparse=sparse)]


def _handle_invalid(attributes: Attributes, where: str, default: str = ERROR) -> str:
    value = attributes.string("handle_invalid", default).lower()
    if value not in (KEEP, SKIP, ERROR):
        raise BundleError(f"{where}: handle_invalid {value!r} is not keep, skip or error")
    return value


class StringIndexer(RowTransformer):
    op = "string_indexer"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        attrs = spec.attributes
        if attrs.has("labels_length"):
            self.labels = [attrs.list(f"labels_array_{i}", "string")
                           for i in range(attrs.int("labels_length"))]
        else:
            # Spark 2 and MLeap's Python serializer write one list under 'labels'.
            self.labels = [attrs.list("labels", "string")]
        self.handle_invalid = _handle_invalid(attrs, self.where())
        self.index = [{label: float(i) for i, label in enumerate(labels)}
                      for labels in self.labels]
        self.ports = _multi_ports(spec, len(self.labels), self.where())

    def inputs(self) -> list[str]:
        return [self.spec.inputs[p] for p, _ in self.ports]

    def outputs(self) -> list[tuple[str, DataType]]:
        return [(self.spec.outputs[p], scalar("double", nullable=False)) for _, p in self.ports]

    def apply(self, values: list[Any]) -> list[Any] | None:
        out: list[Any] = []
        for value, index, labels in zip(values, self.index, self.labels, strict=True):
            label = None if value is None else _jvm_string(value)
            if label is not None and label in index:
                out.append(index[label])
            elif self.handle_invalid == KEEP:
                out.append(float(len(labels)))
            elif self.handle_invalid == SKIP:
                return None
            elif label is None:
                raise BundleError("string_indexer met a null; handle_invalid is 'error'")
            else:
                raise BundleError(f"unseen label {label!r}; handle_invalid is 'error'")
        return out


def _jvm_string(value: Any) -> str:
    """``value.toString`` as the JVM prints it (1.0 stays "1.0", True is "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _multi_ports(spec: NodeSpec, count: int, where: str) -> list[tuple[str, str]]:
    """Pairs of input and output ports: ``input``/``output`` or ``input0``/``output0``..."""
    if "input" in spec.inputs:
        if count != 1:
            raise BundleError(f"{where}: one input port but {count} columns of categories")
        return [("input", "output" if "output" in spec.outputs else "output0")]
    pairs = [(f"input{i}", f"output{i}") for i in range(count)]
    for port_in, port_out in pairs:
        if port_in not in spec.inputs or port_out not in spec.outputs:
            raise BundleError(f"{where}: ports {port_in}/{port_out} are not bound")
    return pairs


class OneHotEncoder(RowTransformer):
    op = "one_hot_encoder"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        attrs = spec.attributes
        self.drop_last = attrs.boolean("drop_last", True) if attrs.has("drop_last") else True
        if attrs.has("size"):
            # Legacy encoder (MLeap < 0.13): 'size' is the width of the output already;
            # MLeap reads it as one category column that keeps invalid values when it
            # drops the last category, which leaves the width unchanged.
            self.category_sizes = [attrs.long("size")]
            default = KEEP if self.drop_last else ERROR
            self.handle_invalid = _handle_invalid(attrs, self.where(), default)
        else:
            self.category_sizes = [int(s) for s in attrs.list("category_sizes", "int")]
            self.handle_invalid = _handle_invalid(attrs, self.where())
        keep = self.handle_invalid == KEEP
        if self.drop_last and not keep:
            self.widths = [s - 1 for s in self.category_sizes]
        elif not self.drop_last and keep:
            self.widths = [s + 1 for s in self.category_sizes]
        else:
            self.widths = list(self.category_sizes)
        self.ports = _multi_ports(spec, len(self.category_sizes), self.where())

    def inputs(self) -> list[str]:
        return [self.spec.inputs[p] for p, _ in self.ports]

    def outputs(self) -> list[tuple[str, DataType]]:
        return [(self.spec.outputs[p], tensor(width))
                for (_, p), width in zip(self.ports, self.widths, strict=True)]

    def apply(self, values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for value, size, width in zip(values, self.category_sizes, self.widths, strict=True):
            label = as_number(value)
            if label != int(label):
                raise BundleError(f"one_hot_encoder: label {label} is not an integer")
            index = int(label)
            if not 0 <= index < size:
                if self.handle_invalid != KEEP:
                    raise BundleError(f"one_hot_encoder: unseen category {label}; "
                                      f"handle_invalid is '{self.handle_invalid}'")
                index = size
            vector = np.zeros(width)
            if index < width:
                vector[index] = 1.0
            out.append(Vector(vector, sparse=True))
        return out


# ---------------------------------------------------------------- linear models


class LinearRegression(RowTransformer):
    op = "linear_regression"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.coefficients = np.asarray(spec.attributes.tensor("coefficients")).reshape(-1)
        self.intercept = spec.attributes.double("intercept", 0.0)

    def inputs(self) -> list[str]:
        return [self.port_in("features")]

    def outputs(self) -> list[tuple[str, DataType]]:
        return [(self.port_out("prediction"), scalar("double", nullable=False))]

    def apply(self, values: list[Any]) -> list[Any]:
        x = _features(values[0], self.coefficients.size)
        return [float(np.dot(x, self.coefficients) + self.intercept)]


def _features(value: Any, size: int) -> np.ndarray:
    x = as_vector(value)
    if x.size != size:
        raise BundleError(f"expected {size} features, got {x.size}")
    return x


class Classifier(RowTransformer):
    """Writes whichever of raw_prediction, probability and prediction are bound."""

    num_classes: int = 2

    def inputs(self) -> list[str]:
        return [self.port_in("features")]

    def outputs(self) -> list[tuple[str, DataType]]:
        out: list[tuple[str, DataType]] = []
        for port in ("raw_prediction", "probability"):
            if port in self.spec.outputs:
                out.append((self.spec.outputs[port], tensor(self.num_classes)))
        if "prediction" in self.spec.outputs:
            out.append((self.spec.outputs["prediction"], scalar("double", nullable=False)))
        return out

    def scores(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray, float]:
        raise NotImplementedError

    def apply(self, values: list[Any]) -> list[Any]:
        raw, probability, prediction = self.scores(values)
        out: list[Any] = []
        if "raw_prediction" in self.spec.outputs:
            out.append(Vector(raw))
        if "probability" in self.spec.outputs:
            out.append(Vector(probability))
        if "prediction" in self.spec.outputs:
            out.append(prediction)
        return out


def _argmax_with_thresholds(probability: np.ndarray, thresholds: np.ndarray | None) -> float:
    if thresholds is None:
        return float(np.argmax(probability))
    # Spark: the class with the largest probability / threshold; a zero threshold wins.
    scaled = np.where(thresholds == 0.0, np.inf, probability / np.where(
        thresholds == 0.0, 1.0, thresholds))
    return float(np.argmax(scaled))


class LogisticRegression(Classifier):
    op = "logistic_regression"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        attrs = spec.attributes
        self.num_classes = attrs.long("num_classes", 2) if attrs.has("num_classes") else 2
        if self.num_classes > 2 or attrs.has("coefficient_matrix"):
            matrix = np.asarray(attrs.tensor("coefficient_matrix"))
            if matrix.ndim != 2:
                raise BundleError(f"{self.where()}: coefficient_matrix must be 2-d")
            rows, cols = matrix.shape
            # Spark's DenseMatrix.toArray, which MLeap stores, is column-major.
            self.matrix = matrix.reshape(-1).reshape(cols, rows).T
            self.intercepts = np.asarray(attrs.tensor("intercept_vector")).reshape(-1)
            thresholds = attrs.list("thresholds", "double", default=[])
            self.thresholds = np.array(thresholds) if thresholds else None
            self.multinomial = True
            self.num_classes = int(self.matrix.shape[0])
        else:
            self.coefficients = np.asarray(attrs.tensor("coefficients")).reshape(-1)
            self.intercept = attrs.double("intercept", 0.0)
            self.threshold = attrs.double("threshold", 0.5) if attrs.has("threshold") else 0.5
            self.multinomial = False

    def scores(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray, float]:
        if self.multinomial:
            x = _features(values[0], self.matrix.shape[1])
            margins = self.matrix @ x + self.intercepts
            shifted = np.exp(margins - margins.max())
            probability = shifted / shifted.sum()
            return margins, probability, _argmax_with_thresholds(probability, self.thresholds)
        x = _features(values[0], self.coefficients.size)
        margin = float(np.dot(x, self.coefficients) + self.intercept)
        p = 1.0 / (1.0 + math.exp(-margin))
        return (np.array([-margin, margin]), np.array([1.0 - p, p]),
                1.0 if p > self.threshold else 0.0)


# ---------------------------------------------------------------- trees


@dataclass(frozen=True)
class TreeNode:
    """A decision tree node; a leaf has ``values``, an internal node a split and children."""

    values: tuple[float, ...] = ()
    feature: int = -1
    threshold: float = 0.0
    categories: frozenset[float] | None = None
    categories_go_left: bool = True
    left: TreeNode | None = None
    right: TreeNode | None = None

    def leaf(self, x: np.ndarray) -> TreeNode:
        node = self
        while node.left is not None and node.right is not None:
            value = x[node.feature]
            if node.categories is None:
                go_left = value <= node.threshold
            else:
                go_left = (value in node.categories) == node.categories_go_left
            node = node.left if go_left else node.right
        return node


def read_tree(source: BundleSource, folder: PurePosixPath) -> TreeNode:
    lines = iter(source.tree_lines(folder))

    def build() -> TreeNode:
        try:
            raw = next(lines)
        except StopIteration:
            raise BundleError(f"{folder}/tree.json ends in the middle of the tree") from None
        if raw.get("type") == "leaf":
            return TreeNode(values=tuple(float(v) for v in raw.get("values", [])))
        if raw.get("type") != "internal":
            raise BundleError(f"{folder}/tree.json: unknown node type {raw.get('type')!r}")
        split = raw.get("split") or {}
        left = build()
        right = build()
        if split.get("type") == "continuous":
            return TreeNode(feature=int(split.get("featureIndex", 0)),
                            threshold=float(split.get("threshold", 0.0)), left=left, right=right)
        if split.get("type") == "categorical":
            return TreeNode(feature=int(split.get("featureIndex", 0)),
                            categories=frozenset(float(c) for c in split.get("categories", [])),
                            categories_go_left=bool(split.get("isLeft", False)),
                            left=left, right=right)
        raise BundleError(f"{folder}/tree.json: unknown split {split.get('type')!r}")

    return build()


class DecisionTreeRegression(RowTransformer):
    op = "decision_tree_regression"

    def __init__(self, spec: NodeSpec, source: BundleSource) -> None:
        super().__init__(spec)
        self.num_features = spec.attributes.long("num_features", 0)
        self.tree = read_tree(source, spec.folder)

    def inputs(self) -> list[str]:
        return [self.port_in("features")]

    def outputs(self) -> list[tuple[str, DataType]]:
        return [(self.port_out("prediction"), scalar("double", nullable=False))]

    def apply(self, values: list[Any]) -> list[Any]:
        x = as_vector(values[0])
        return [self.tree.leaf(x).values[0]]


class TreeEnsembleRegression(RowTransformer):
    """random_forest_regression averages its trees; gbt_regression sums weighted trees."""

    def __init__(self, spec: NodeSpec, source: BundleSource) -> None:
        super().__init__(spec)
        self.op = spec.op
        attrs = spec.attributes
        names = attrs.list("trees", "string")
        self.trees = []
        for name in names:
            folder = spec.folder / name
            op, _ = source.model(folder)
            if op != "decision_tree_regression":
                raise BundleError(f"{self.where()}: tree {name} has op {op}")
            self.trees.append(read_tree(source, folder))
        self.weights = np.array(attrs.list("tree_weights", "double", default=[1.0] * len(names)))
        if len(self.weights) != len(self.trees):
            raise BundleError(f"{self.where()}: {len(self.trees)} trees but "
                              f"{len(self.weights)} weights")

    def inputs(self) -> list[str]:
        return [self.port_in("features")]

    def outputs(self) -> list[tuple[str, DataType]]:
        return [(self.port_out("prediction"), scalar("double", nullable=False))]

    def apply(self, values: list[Any]) -> list[Any]:
        x = as_vector(values[0])
        predictions = [tree.leaf(x).values[0] for tree in self.trees]
        # Summed left to right, as the JVM's Seq.sum does, so the last digit matches too.
        if self.op == "gbt_regression":
            return [sum(float(w) * p for w, p in zip(self.weights, predictions, strict=True))]
        # MLeap's random forest is the plain mean, as Spark's is.
        return [sum(predictions) / len(predictions)]


class DecisionTreeClassification(Classifier):
    op = "decision_tree_classification"

    def __init__(self, spec: NodeSpec, source: BundleSource) -> None:
        super().__init__(spec)
        self.num_classes = spec.attributes.long("num_classes", 2)
        self.tree = read_tree(source, spec.folder)
        thresholds = spec.attributes.list("thresholds", "double", default=[])
        self.thresholds = np.array(thresholds) if thresholds else None

    def scores(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray, float]:
        raw = np.array(self.tree.leaf(as_vector(values[0])).values)
        total = raw.sum()
        probability = raw / total if total > 0 else raw
        return raw, probability, _argmax_with_thresholds(probability, self.thresholds)


class RandomForestClassification(Classifier):
    op = "random_forest_classification"

    def __init__(self, spec: NodeSpec, source: BundleSource) -> None:
        super().__init__(spec)
        self.num_classes = spec.attributes.long("num_classes", 2)
        self.trees = [read_tree(source, spec.folder / name)
                      for name in spec.attributes.list("trees", "string")]
        thresholds = spec.attributes.list("thresholds", "double", default=[])
        self.thresholds = np.array(thresholds) if thresholds else None

    def scores(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray, float]:
        x = as_vector(values[0])
        raw = np.zeros(self.num_classes)
        for tree in self.trees:
            stats = np.array(tree.leaf(x).values)
            total = stats.sum()
            # Each tree votes with its normalised class distribution.
            raw += stats / total if total > 0 else stats
        total = raw.sum()
        probability = raw / total if total > 0 else raw
        return raw, probability, _argmax_with_thresholds(probability, self.thresholds)


# ---------------------------------------------------------------- recommendation


class ALS(RowTransformer):
    op = "als"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        attrs = spec.attributes
        self.rank = attrs.int("rank")
        users = [int(u) for u in attrs.list("users", "int")]
        items = [int(i) for i in attrs.list("items", "int")]
        user_factors = attrs.tensor_list("user_factors")
        item_factors = attrs.tensor_list("item_factors")
        if len(users) != len(user_factors) or len(items) != len(item_factors):
            raise BundleError(f"{self.where()}: ids and factors differ in length")
        self.users = {u: np.asarray(f, dtype=np.float32) for u, f in zip(users, user_factors,
                                                                       strict=True)}
        self.items = {i: np.asarray(f, dtype=np.float32) for i, f in zip(items, item_factors,
                                                                       strict=True)}

    def inputs(self) -> list[str]:
        return [self.port_in("user"), self.port_in("item")]

    def outputs(self) -> list[tuple[str, DataType]]:
        return [(self.port_out("prediction"), scalar("float", nullable=False))]

    def apply(self, values: list[Any]) -> list[Any]:
        user, item = values
        a = self.users.get(int(user)) if user is not None else None
        b = self.items.get(int(item)) if item is not None else None
        if a is None or b is None:
            # MLeap (like Spark with coldStartStrategy "nan") predicts NaN for an
            # unknown user or item.
            return [math.nan]
        # A 32-bit dot product summed in order, as Spark's prediction UDF does.
        return [float(np.cumsum(a * b, dtype=np.float32)[-1]) if self.rank else 0.0]


# ---------------------------------------------------------------- registry


Builder = Callable[[NodeSpec, BundleSource], Transformer]

BUILDERS: dict[str, Builder] = {
    "vector_assembler": lambda spec, _: VectorAssembler(spec),
    "standard_scaler": lambda spec, _: StandardScaler(spec),
    "string_indexer": lambda spec, _: StringIndexer(spec),
    "one_hot_encoder": lambda spec, _: OneHotEncoder(spec),
    "linear_regression": lambda spec, _: LinearRegression(spec),
    "logistic_regression": lambda spec, _: LogisticRegression(spec),
    "decision_tree_regression": DecisionTreeRegression,
    "random_forest_regression": TreeEnsembleRegression,
    "gbt_regression": TreeEnsembleRegression,
    "decision_tree_classification": DecisionTreeClassification,
    "random_forest_classification": RandomForestClassification,
    "als": lambda spec, _: ALS(spec),
}

SUPPORTED_OPS: Sequence[str] = ("pipeline", *sorted(BUILDERS))
