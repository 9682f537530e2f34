"""Fitted Spark models to MLeap bundles, with the parity gate run on a sample.

The op names, attribute names and types, and port names are those of MLeap's
Spark serializers (``mleap-spark``'s ``*Op.scala``). Spark is imported inside
the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.bundles import format as fmt
from jobs.bundles.format import BundleError, ModelFiles, NodeFiles
from jobs.bundles.parity import ParityReport, check_parity
from jobs.bundles.reader import load_bundle
from jobs.platform.artifacts import sha256_of

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.ml import Transformer as SparkTransformer
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleInfo:
    """A written bundle: where it is, its sha256 and size, and the parity it passed."""

    path: Path
    sha256: str
    bytes: int
    parity: ParityReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "bytes": self.bytes,
                "parity_rows": self.parity.rows if self.parity else None,
                "parity_max_abs_diff": self.parity.max_abs_diff if self.parity else None}


def bundle_zip_path(path: Path) -> Path:
    """``<path>.zip``, unless ``path`` already names a zip file."""
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


# ---------------------------------------------------------------- entry points


def export_als(model: ALSModel, path: Path, spark_sample_users: int = 100,
               sample_items: int = 50, tolerance: float = 1e-5) -> BundleInfo:
    """Write ``model`` as an MLeap ``als`` bundle at ``<path>.zip`` and gate it on parity.

    The gate scores every pair of the first ``spark_sample_users`` users and the
    first ``sample_items`` items with the bundle and with ``model.transform``; it
    raises ParityError (and removes the zip) if a prediction differs by more than
    ``tolerance``.
    """
    from pyspark.sql import functions as F

    target = bundle_zip_path(path)
    fmt.write_zip(fmt.bundle_files(als_node(model)), target)
    users = model.userFactors.select(F.col("id").alias(model.getUserCol())) \
        .orderBy(model.getUserCol()).limit(spark_sample_users)
    items = model.itemFactors.select(F.col("id").alias(model.getItemCol())) \
        .orderBy(model.getItemCol()).limit(sample_items)
    sample = users.crossJoin(items)
    return _gate(target, model, sample, [model.getPredictionCol()], tolerance)


def export_pipeline(model: PipelineModel, path: Path, sample: DataFrame,
                    sample_rows: int = 200, tolerance: float = 1e-5) -> BundleInfo:
    """Write a fitted PipelineModel as an MLeap ``pipeline`` bundle at ``<path>.zip``.

    ``sample`` holds input rows (the columns the first stage reads); up to
    ``sample_rows`` of them are scored by the bundle and by Spark for the gate.
    Supported stages: VectorAssembler, StandardScalerModel, StringIndexerModel,
    OneHotEncoderModel, LinearRegressionModel, LogisticRegressionModel,
    DecisionTreeRegressionModel, RandomForestRegressionModel, GBTRegressionModel.
    """
    target = bundle_zip_path(path)
    sample = sample.limit(sample_rows)
    transformed = model.transform(sample)
    fmt.write_zip(fmt.bundle_files(pipeline_node(model, transformed)), target)
    return _gate(target, model, sample, None, tolerance)


def _gate(target: Path, model: SparkTransformer, sample: DataFrame,
          columns: list[str] | None, tolerance: float) -> BundleInfo:
    try:
        report = check_parity(load_bundle(target), model, sample, columns, tolerance)
    except Exception:
        # A bundle that does not score like Spark must not be picked up by anyone.
        target.unlink(missing_ok=True)
        raise
    info = BundleInfo(path=target, sha256=sha256_of(target), bytes=target.stat().st_size,
                      parity=report)
    logger.info("exported bundle %s (%d bytes, sha256 %s)", info.path, info.bytes, info.sha256)
    return info


# ---------------------------------------------------------------- ALS


def als_node(model: ALSModel, name: str | None = None) -> NodeFiles:
    """The ``als`` node: rank, user and item ids, and their factors as float tensors."""
    users = model.userFactors.orderBy("id").collect()
    items = model.itemFactors.orderBy("id").collect()
    logger.info("ALS bundle: rank %d, %d users, %d items", model.rank, len(users), len(items))
    attributes = {
        "rank": fmt.int_(model.rank),
        "users": fmt.typed_list("int", [r["id"] for r in users]),
        "user_factors": fmt.tensor_list([r["features"] for r in users], base="float"),
        "items": fmt.typed_list("int", [r["id"] for r in items]),
        "item_factors": fmt.tensor_list([r["features"] for r in items], base="float"),
    }
    return NodeFiles(name=name or model.uid, op="als", attributes=attributes,
                     inputs=[("user", model.getUserCol()), ("item", model.getItemCol())],
                     outputs=[("prediction", model.getPredictionCol())])


# ---------------------------------------------------------------- pipelines


def pipeline_node(model: PipelineModel, transformed: DataFrame) -> NodeFiles:
    """The ``pipeline`` node and one child node per stage.

    ``transformed`` is the model's output on a sample: like MLeap's Spark
    serializer, it is where vector sizes and column types are read from.
    """
    stages = [stage_node(stage, transformed) for stage in model.stages]
    return NodeFiles(name=model.uid, op="pipeline",
                     attributes={"nodes": fmt.typed_list("string", [s.name for s in stages])},
                     children=[(f"{s.name}.node", s) for s in stages])


def stage_node(stage: SparkTransformer, transformed: DataFrame) -> NodeFiles:
    kind = type(stage).__name__
    writer = STAGE_WRITERS.get(kind)
    if writer is None:
        raise BundleError(f"cannot export stage {stage.uid} ({kind}); supported: "
                          f"{', '.join(sorted(STAGE_WRITERS))}")
    return writer(stage, transformed)


def _io(stage: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, Any]]:
    """Ports for single- or multi-column stages, and the columns as MLeap records them."""
    if stage.hasParam("inputCols") and stage.isSet(stage.getParam("inputCols")):
        cols_in, cols_out = stage.getInputCols(), stage.getOutputCols()
        return ([(f"input{i}", c) for i, c in enumerate(cols_in)],
                [(f"output{i}", c) for i, c in enumerate(cols_out)],
                {"in": cols_in, "out": cols_out})
    return ([("input", stage.getInputCol())], [("output", stage.getOutputCol())],
            {"in": stage.getInputCol(), "out": stage.getOutputCol()})


def _vector_assembler(stage: Any, transformed: DataFrame) -> NodeFiles:
    from pyspark.ml.linalg import VectorUDT

    shapes = []
    first = transformed.select(*stage.getInputCols()).first()
    for column in stage.getInputCols():
        field = transformed.schema[column]
        if isinstance(field.dataType, VectorUDT):
            size = _vector_size(field, first[column] if first is not None else None)
            shapes.append(fmt.data_shape_tensor(size, field.nullable))
        else:
            shapes.append(fmt.data_shape_scalar(field.nullable))
    return NodeFiles(name=stage.uid, op="vector_assembler",
                     attributes={"input_shapes": {"type": "list", "data_shape": shapes}},
                     inputs=[(f"input{i}", c) for i, c in enumerate(stage.getInputCols())],
                     outputs=[("output", stage.getOutputCol())])


def _vector_size(field: Any, value: Any) -> int:
    attrs = field.metadata.get("ml_attr", {})
    if "num_attrs" in attrs:
        return int(attrs["num_attrs"])
    if value is None:
        raise BundleError(f"cannot tell the size of vector column '{field.name}' from an "
                          f"empty sample")
    return int(value.size)


def _standard_scaler(stage: Any, transformed: DataFrame) -> NodeFiles:
    attributes: dict[str, Any] = {}
    # MLeap encodes with_mean / with_std by writing the tensor or leaving it out.
    if stage.getWithMean():
        attributes["mean"] = fmt.tensor(stage.mean.toArray())
    if stage.getWithStd():
        attributes["std"] = fmt.tensor(stage.std.toArray())
    inputs, outputs, _ = _io(stage)
    return NodeFiles(name=stage.uid, op="standard_scaler", attributes=attributes,
                     inputs=inputs, outputs=outputs)


def _string_indexer(stage: Any, transformed: DataFrame) -> NodeFiles:
    labels = stage.labelsArray
    attributes: dict[str, Any] = {"labels_length": fmt.int_(len(labels)),
                                  "handle_invalid": fmt.string(stage.getHandleInvalid())}
    for i, column_labels in enumerate(labels):
        attributes[f"labels_array_{i}"] = fmt.typed_list("string", list(column_labels))
    inputs, outputs, cols = _io(stage)
    if isinstance(cols["in"], list):
        attributes["input_cols"] = fmt.typed_list("string", cols["in"])
        attributes["output_cols"] = fmt.typed_list("string", cols["out"])
    else:
        attributes["input_col"] = fmt.string(cols["in"])
        attributes["output_col"] = fmt.string(cols["out"])
    return NodeFiles(name=stage.uid, op="string_indexer", attributes=attributes,
                     inputs=inputs, outputs=outputs)


def _one_hot_encoder(stage: Any, transformed: DataFrame) -> NodeFiles:
    attributes: dict[str, Any] = {
        "category_sizes": fmt.typed_list("int", list(stage.categorySizes)),
        "drop_last": fmt.boolean(stage.getDropLast()),
        "handle_invalid": fmt.string(stage.getHandleInvalid()),
    }
    inputs, outputs, cols = _io(stage)
    if isinstance(cols["in"], list):
        attributes["inputCols"] = fmt.typed_list("string", cols["in"])
        attributes["outputCols"] = fmt.typed_list("string", cols["out"])
    else:
        attributes["inputCol"] = fmt.string(cols["in"])
        attributes["outputCol"] = fmt.string(cols["out"])
    return NodeFiles(name=stage.uid, op="one_hot_encoder", attributes=attributes,
                     inputs=inputs, outputs=outputs)


def _linear_regression(stage: Any, transformed: DataFrame) -> NodeFiles:
    return NodeFiles(name=stage.uid, op="linear_regression",
                     attributes={"coefficients": fmt.tensor(stage.coefficients.toArray()),
                                 "intercept": fmt.double(stage.intercept)},
                     inputs=[("features", stage.getFeaturesCol())],
                     outputs=[("prediction", stage.getPredictionCol())])


def _logistic_regression(stage: Any, transformed: DataFrame) -> NodeFiles:
    attributes: dict[str, Any] = {"num_classes": fmt.long(stage.numClasses)}
    if stage.numClasses > 2:
        matrix = stage.coefficientMatrix
        attributes["coefficient_matrix"] = fmt.tensor(
            matrix.toArray().reshape(-1, order="F"), dimensions=[matrix.numRows, matrix.numCols])
        attributes["intercept_vector"] = fmt.tensor(stage.interceptVector.toArray())
        if stage.isSet(stage.thresholds):
            attributes["thresholds"] = fmt.typed_list("double", stage.getThresholds())
    else:
        attributes["coefficients"] = fmt.tensor(stage.coefficients.toArray())
        attributes["intercept"] = fmt.double(stage.intercept)
        attributes["threshold"] = fmt.double(stage.getThreshold())
    outputs = [(port, column) for port, column in (
        ("raw_prediction", stage.getRawPredictionCol()),
        ("probability", stage.getProbabilityCol()),
        ("prediction", stage.getPredictionCol())) if column]
    return NodeFiles(name=stage.uid, op="logistic_regression", attributes=attributes,
                     inputs=[("features", stage.getFeaturesCol())], outputs=outputs)


def _decision_tree_regression(stage: Any, transformed: DataFrame) -> NodeFiles:
    return NodeFiles(name=stage.uid, op="decision_tree_regression",
                     attributes={"num_features": fmt.long(stage.numFeatures)},
                     inputs=[("features", stage.getFeaturesCol())],
                     outputs=[("prediction", stage.getPredictionCol())],
                     tree=tree_nodes(stage._java_obj.rootNode()))


StageWriter = Callable[[Any, "DataFrame"], NodeFiles]


def _tree_ensemble(op: str) -> StageWriter:
    """random_forest_regression and gbt_regression: one ``treeN`` folder per tree."""

    def write(stage: Any, transformed: DataFrame) -> NodeFiles:
        trees = stage.trees
        weights = list(stage.treeWeights)
        children: list[tuple[str, NodeFiles | ModelFiles]] = [
            (f"tree{i}", ModelFiles(op="decision_tree_regression",
                                    attributes={"num_features": fmt.long(tree.numFeatures)},
                                    tree=tree_nodes(tree._java_obj.rootNode())))
            for i, tree in enumerate(trees)]
        return NodeFiles(name=stage.uid, op=op,
                         attributes={"num_features": fmt.long(stage.numFeatures),
                                     "tree_weights": fmt.typed_list("double", weights),
                                     "trees": fmt.typed_list("string",
                                                             [name for name, _ in children])},
                         inputs=[("features", stage.getFeaturesCol())],
                         outputs=[("prediction", stage.getPredictionCol())],
                         children=children)
    return write


def tree_nodes(root: Any) -> list[dict[str, Any]]:
    """A Spark tree (its JVM root node) as MLeap's pre-order ``tree.json`` records."""
    records: list[dict[str, Any]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.getClass().getSimpleName() != "InternalNode":
            records.append({"type": "leaf", "values": [float(node.prediction())]})
            continue
        split = node.split()
        if split.getClass().getSimpleName() == "ContinuousSplit":
            record = {"type": "continuous", "featureIndex": int(split.featureIndex()),
                      "threshold": float(split.threshold())}
        else:
            left = [float(c) for c in split.leftCategories()]
            right = [float(c) for c in split.rightCategories()]
            # MLeap stores the shorter side and says which side it is.
            is_left = len(left) < len(right)
            record = {"type": "categorical", "featureIndex": int(split.featureIndex()),
                      "isLeft": is_left, "numCategories": int(split.numCategories()),
                      "categories": left if is_left else right}
        records.append({"type": "internal", "split": record})
        stack.append(node.rightChild())
        stack.append(node.leftChild())
    return records


STAGE_WRITERS: Mapping[str, StageWriter] = {
    "VectorAssembler": _vector_assembler,
    "StandardScalerModel": _standard_scaler,
    "StringIndexerModel": _string_indexer,
    "OneHotEncoderModel": _one_hot_encoder,
    "LinearRegressionModel": _linear_regression,
    "LogisticRegressionModel": _logistic_regression,
    "DecisionTreeRegressionModel": _decision_tree_regression,
    "RandomForestRegressionModel": _tree_ensemble("random_forest_regression"),
    "GBTRegressionModel": _tree_ensemble("gbt_regression"),
}
