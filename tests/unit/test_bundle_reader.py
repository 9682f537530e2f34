"""The pure-Python bundle reader against MLeap's own bundles, and hand-made ones."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest

from jobs.bundles import format as fmt
from jobs.bundles.format import BundleError, ModelFiles, NodeFiles
from jobs.bundles.leapframe import frame_from_json, read_frame
from jobs.bundles.reader import load_bundle

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "mleap-fixtures"


def frame(fields: list[tuple[str, str]], rows: list[list]) -> object:
    return frame_from_json({"schema": {"fields": [{"name": n, "type": t} for n, t in fields]},
                            "rows": rows})


def column(scored, name: str) -> list:
    return scored.column(name)


# ---------------------------------------------------------------- MLeap's bundles


def test_random_forest_bundle_scores_the_airbnb_row_as_mleap_does() -> None:
    scored = load_bundle(FIXTURES / "airbnb.model.rf.zip").transform(
        read_frame(FIXTURES / "frame.airbnb.json"))

    assert column(scored, "price_prediction") == [pytest.approx(218.2767196535019, abs=1e-9)]


def test_demo_bundle_scores_the_published_example() -> None:
    demo = frame([("demo:a", "double"), ("demo:c", "double"), ("demo:d", "double")],
                 [[44.5, 22.1, 98.2]])

    scored = load_bundle(FIXTURES / "demo.zip").transform(demo)

    assert column(scored, "demo:prediction") == [pytest.approx(-67.78953193834998, abs=1e-9)]


def test_linear_regression_bundle_follows_its_model_json() -> None:
    scored = load_bundle(FIXTURES / "airbnb.model.lr.zip").transform(
        read_frame(FIXTURES / "frame.airbnb.json"))

    # Indices from the string indexers' label lists: NY is the second state label,
    # "Entire home/apt", "strict" and "1.0" are first, first and second.
    assert column(scored, "state_index") == [1.0]
    assert column(scored, "room_type_index") == [0.0]
    assert column(scored, "host_is_superhost_index") == [1.0]
    # Legacy encoders: 'size' is the output width, and the last category is all zeros.
    assert column(scored, "room_type_index_oh")[0].values.tolist() == [1.0, 0.0]
    assert column(scored, "host_is_superhost_index_oh")[0].values.tolist() == [0.0]
    assert column(scored, "state_index_oh")[0].values.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0]
    # features_lr = room(2) host(1) cancellation(6) instant(1) state(9) scaled(8): the ones
    # sit at 0 (room), 3 (strict) and 11 (NY); the scaler divides by std only (no mean).
    raw = [2.0, 3.0, 50.0, 30.0, 2.0, 56.0, 1250.0, 90.0]
    std = [0.4830590051262766, 0.846658660106073, 244.51668053484167, 42.64237791484595,
           18.684562043006032, 27.98581482908148, 363.3983958237367, 8.57718580237418]
    continuous_coefficients = [17.319600795990787, 21.174127707096655, 6.278081552069473,
                               22.36716389376072, 2.6528282633503504, -2.809076785707233,
                               3.931636876708943, 4.970340301521714]  # coefficients 19..26
    expected = (-93.4700761415325 + 54.01506145441809 + 7.405727258173041
                + 40.578770384499364
                + sum(c * x / s for c, x, s in zip(continuous_coefficients, raw, std,
                                                   strict=True)))
    assert column(scored, "price_prediction") == [pytest.approx(expected, abs=1e-9)]


def test_one_hot_pipeline_keeps_unseen_labels_as_zeros() -> None:
    rows = [["A"], ["C"], ["unseen"]]

    scored = load_bundle(FIXTURES / "one_hot_encoder_pipeline.zip").transform(
        frame([("col_1", "string")], rows))

    # Labels A, B, C with handle_invalid "keep": an unseen label gets index 3, which
    # the legacy encoder (size 3, drop_last) writes as all zeros.
    assert column(scored, "col_1_label_le") == [0.0, 2.0, 3.0]
    assert [v.values.tolist() for v in column(scored, "col_1_label_one_hot_encoded")] == [
        [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


def test_a_bundle_reads_from_an_unpacked_directory(tmp_path: Path) -> None:
    with zipfile.ZipFile(FIXTURES / "demo.zip") as archive:
        archive.extractall(tmp_path / "demo")
    demo = frame([("demo:a", "double"), ("demo:c", "double"), ("demo:d", "double")],
                 [[44.5, 22.1, 98.2]])

    scored = load_bundle(tmp_path / "demo").transform(demo)

    assert column(scored, "demo:prediction") == [pytest.approx(-67.78953193834998, abs=1e-9)]


def test_transformed_frame_lists_every_column_with_mleap_types() -> None:
    scored = load_bundle(FIXTURES / "one_hot_encoder_pipeline.zip").transform(
        frame([("col_1", "string")], [["B"]]))

    assert scored.to_json() == {
        "schema": {"fields": [
            {"name": "col_1", "type": "string"},
            {"name": "col_1_label_le",
             "type": {"type": "basic", "base": "double", "isNullable": False}},
            {"name": "col_1_label_one_hot_encoded",
             "type": {"type": "tensor", "base": "double", "dimensions": [3]}},
        ]},
        "rows": [["B", 1.0, {"indices": [[1]], "values": [1.0], "dimensions": [3]}]],
    }


# ---------------------------------------------------------------- hand-made bundles


def write_bundle(tmp_path: Path, root: NodeFiles) -> Path:
    path = tmp_path / "model.zip"
    fmt.write_zip(fmt.bundle_files(root), path)
    return path


def test_decision_tree_follows_continuous_and_categorical_splits(tmp_path: Path) -> None:
    # feature 0 <= 1.5 goes left; then categories {2} of feature 1 go right (isLeft false).
    tree = [
        {"type": "internal", "split": {"type": "continuous", "featureIndex": 0,
                                       "threshold": 1.5}},
        {"type": "internal", "split": {"type": "categorical", "featureIndex": 1,
                                       "isLeft": False, "numCategories": 3,
                                       "categories": [2.0]}},
        {"type": "leaf", "values": [10.0]},
        {"type": "leaf", "values": [20.0]},
        {"type": "leaf", "values": [30.0]},
    ]
    root = NodeFiles(name="tree", op="decision_tree_regression",
                     attributes={"num_features": fmt.long(2)},
                     inputs=[("features", "f")], outputs=[("prediction", "p")], tree=tree)
    rows = [[{"values": [1.0, 0.0], "dimensions": [2]}],
            [{"values": [1.5, 2.0], "dimensions": [2]}],
            [{"values": [2.0, 2.0], "dimensions": [2]}]]

    scored = load_bundle(write_bundle(tmp_path, root)).transform(
        frame_from_json({"schema": {"fields": [
            {"name": "f", "type": {"type": "tensor", "base": "double"}}]}, "rows": rows}))

    assert column(scored, "p") == [10.0, 20.0, 30.0]


def test_gbt_sums_weighted_trees_and_forest_averages(tmp_path: Path) -> None:
    def leaf(value: float) -> ModelFiles:
        return ModelFiles(op="decision_tree_regression",
                          attributes={"num_features": fmt.long(1)},
                          tree=[{"type": "leaf", "values": [value]}])

    for op, expected in (("gbt_regression", 1.0 * 4.0 + 0.5 * 2.0),
                         ("random_forest_regression", (4.0 + 2.0) / 2)):
        root = NodeFiles(name=op, op=op, attributes={
            "num_features": fmt.long(1),
            "tree_weights": fmt.typed_list("double", [1.0, 0.5]),
            "trees": fmt.typed_list("string", ["tree0", "tree1"])},
            inputs=[("features", "f")], outputs=[("prediction", "p")],
            children=[("tree0", leaf(4.0)), ("tree1", leaf(2.0))])
        scored = load_bundle(write_bundle(tmp_path, root)).transform(frame_from_json(
            {"schema": {"fields": [{"name": "f", "type": {"type": "tensor", "base": "double"}}]},
             "rows": [[{"values": [0.0], "dimensions": [1]}]]}))
        assert column(scored, "p") == [expected]


def test_logistic_regression_writes_raw_probability_and_prediction(tmp_path: Path) -> None:
    root = NodeFiles(name="logit", op="logistic_regression", attributes={
        "num_classes": fmt.long(2), "coefficients": fmt.tensor([2.0, -1.0]),
        "intercept": fmt.double(0.5), "threshold": fmt.double(0.5)},
        inputs=[("features", "f")],
        outputs=[("raw_prediction", "raw"), ("probability", "prob"), ("prediction", "pred")])
    rows = [[{"values": [1.0, 3.0], "dimensions": [2]}]]  # margin 2 - 3 + 0.5 = -0.5

    scored = load_bundle(write_bundle(tmp_path, root)).transform(frame_from_json(
        {"schema": {"fields": [{"name": "f", "type": {"type": "tensor", "base": "double"}}]},
         "rows": rows}))

    p = 1.0 / (1.0 + math.exp(0.5))
    assert column(scored, "raw")[0].values.tolist() == [0.5, -0.5]
    assert column(scored, "prob")[0].values.tolist() == pytest.approx([1.0 - p, p])
    assert column(scored, "pred") == [0.0]


def test_als_predicts_the_dot_product_and_nan_for_unknown_ids(tmp_path: Path) -> None:
    root = NodeFiles(name="als", op="als", attributes={
        "rank": fmt.int_(2),
        "users": fmt.typed_list("int", [1, 2]),
        "user_factors": fmt.tensor_list([[1.0, 2.0], [0.5, -1.0]]),
        "items": fmt.typed_list("int", [7]),
        "item_factors": fmt.tensor_list([[3.0, 0.25]])},
        inputs=[("user", "user_id"), ("item", "item_id")], outputs=[("prediction", "score")])

    scored = load_bundle(write_bundle(tmp_path, root)).transform(frame(
        [("user_id", "integer"), ("item_id", "integer")], [[1, 7], [2, 7], [3, 7]]))

    scores = column(scored, "score")
    assert scores[:2] == [3.5, 1.25] and math.isnan(scores[2])
    assert scored.to_json()["rows"][2][2] is None  # JSON has no NaN


def test_string_indexer_skip_drops_rows_and_error_names_the_label(tmp_path: Path) -> None:
    def indexer(handle_invalid: str) -> NodeFiles:
        return NodeFiles(name="idx", op="string_indexer", attributes={
            "labels_length": fmt.int_(1), "labels_array_0": fmt.typed_list("string", ["a", "b"]),
            "handle_invalid": fmt.string(handle_invalid)},
            inputs=[("input", "s")], outputs=[("output", "i")])

    rows = [["b"], ["zzz"], ["a"]]
    skipped = load_bundle(write_bundle(tmp_path, indexer("skip"))).transform(
        frame([("s", "string")], rows))
    assert skipped.rows == [["b", 1.0], ["a", 0.0]]
    with pytest.raises(BundleError, match="row 1: unseen label 'zzz'"):
        load_bundle(write_bundle(tmp_path, indexer("error"))).transform(
            frame([("s", "string")], rows))


def test_unsupported_op_names_op_and_node(tmp_path: Path) -> None:
    root = NodeFiles(name="pipe", op="pipeline",
                     attributes={"nodes": fmt.typed_list("string", ["my_pca"])},
                     children=[("my_pca.node", NodeFiles(name="my_pca", op="pca",
                                                         attributes={}))])

    with pytest.raises(BundleError, match="unsupported op 'pca' in node 'my_pca'"):
        load_bundle(write_bundle(tmp_path, root))


def test_missing_input_column_names_the_column() -> None:
    bundle = load_bundle(FIXTURES / "demo.zip")

    with pytest.raises(BundleError, match="input column 'demo:c' is missing"):
        bundle.transform(frame([("demo:a", "double"), ("demo:d", "double")], [[1.0, 2.0]]))


@pytest.mark.parametrize(("document", "message"), [
    ({"rows": []}, "needs 'schema' and 'rows'"),
    ({"schema": {"fields": [{"name": "x", "type": "double"}]}, "rows": [["text"]]},
     "row 0, column 'x': 'text' is not a double"),
    ({"schema": {"fields": [{"name": "x", "type": "double"}]}, "rows": [[1.0, 2.0]]},
     "row 0 must be a list of 1 values"),
    ({"schema": {"fields": [{"name": "x", "type": "decimal"}]}, "rows": []},
     "unknown type 'decimal'"),
])
def test_bad_frames_say_what_is_wrong(document: dict, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        frame_from_json(document)


def test_not_a_bundle(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("readme", "nothing")

    with pytest.raises(BundleError, match="not a bundle: neither a zip file nor a directory"):
        load_bundle(text)
    with pytest.raises(BundleError, match=r"not a bundle: it has no bundle\.json"):
        load_bundle(empty_zip)
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "missing.zip")


# ---------------------------------------------------------------- attribute encoding


def test_attribute_values_are_encoded_as_mleap_writes_them() -> None:
    assert fmt.double(0.0) == {} and fmt.boolean(False) == {} and fmt.long(0) == {}
    assert fmt.long(13) == {"long": 13} and fmt.int_(3) == {"int": 3}
    assert fmt.typed_list("string", []) == {"type": "list"}
    assert fmt.tensor([1.5, 2.0]) == {"type": "tensor", "double": [1.5, 2.0],
                                      "shape": {"dimensions": [{"size": 2, "name": ""}]}}
    # 32-bit factors are written with the shortest text that reads back the same float.
    assert fmt.tensor_list([[0.1, 0.2]]) == {"type": "list", "tensor": [
        {"float": [0.1, 0.2], "shape": {"dimensions": [{"size": 2, "name": ""}]}}]}


def test_written_bundle_has_mleap_layout(tmp_path: Path) -> None:
    root = NodeFiles(name="lr", op="linear_regression",
                     attributes={"coefficients": fmt.tensor([1.0]), "intercept": fmt.double(2)},
                     inputs=[("features", "f")], outputs=[("prediction", "p")])

    with zipfile.ZipFile(write_bundle(tmp_path, root)) as archive:
        names = archive.namelist()
        info = json.loads(archive.read("bundle.json"))
        node = json.loads(archive.read("root/node.json"))

    assert names == ["root/", "bundle.json", "root/model.json", "root/node.json"]
    assert set(info) == {"uid", "name", "format", "version", "timestamp"}
    assert info["format"] == "json" and info["name"] == "lr"
    assert node == {"name": "lr", "shape": {"inputs": [{"name": "f", "port": "features"}],
                                            "outputs": [{"name": "p", "port": "prediction"}]}}


def test_the_bundle_modules_import_without_pyspark() -> None:
    import subprocess
    import sys

    code = ("import sys, jobs.bundles.reader, jobs.bundles.export, jobs.bundles.parity; "
            "sys.exit('pyspark' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_value_of_the_wrong_type_is_a_bundle_error(tmp_path: Path) -> None:
    root = NodeFiles(name="als", op="als", attributes={
        "rank": fmt.int_(1), "users": fmt.typed_list("int", [1]),
        "user_factors": fmt.tensor_list([[1.0]]), "items": fmt.typed_list("int", [2]),
        "item_factors": fmt.tensor_list([[1.0]])},
        inputs=[("user", "u"), ("item", "i")], outputs=[("prediction", "p")])

    with pytest.raises(BundleError, match=r"node 'als' \(op als\), row 0: cannot score"):
        load_bundle(write_bundle(tmp_path, root)).transform(
            frame([("u", "string"), ("i", "integer")], [["bob", 2]]))
