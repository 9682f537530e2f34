"""Spark models exported as MLeap bundles score like Spark does (local Spark, tiny data).

Every kind of bundle the exporter writes is also scored three ways, by Spark, by
MLeap's own JVM runtime (0.20.0) and by the Python reader, with each pair's
largest difference bounded by 1e-5 (the ``three_ways`` fixture; the session's
summary lists what each test measured).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from jobs.bundles.export import export_als, export_pipeline, sha256_of
from jobs.bundles.leapframe import LeapFrame, frame_from_json
from jobs.bundles.parity import ParityError, check_parity
from jobs.bundles.reader import load_bundle

pytestmark = pytest.mark.spark

# Two taste groups: users 1-3 like items 10-12, users 4-6 like items 20-22.
RATINGS = [(u, i, 5.0 if (u <= 3) == (i < 20) else 1.0)
           for u in range(1, 7) for i in (10, 11, 12, 20, 21, 22) if (u + i) % 4 != 0]

HOUSES = [
    # city, rooms, size, price, expensive
    ("paris", 2.0, 40.0, 300.0, 1.0),
    ("paris", 3.0, 65.0, 420.0, 1.0),
    ("lyon", 2.0, 50.0, 180.0, 0.0),
    ("lyon", 4.0, 90.0, 260.0, 1.0),
    ("nantes", 1.0, 25.0, 90.0, 0.0),
    ("nantes", 3.0, 70.0, 150.0, 0.0),
    ("paris", 1.0, 20.0, 210.0, 0.0),
    ("lyon", 3.0, 60.0, 200.0, 0.0),
    ("nantes", 5.0, 120.0, 240.0, 1.0),
    ("paris", 4.0, 95.0, 610.0, 1.0),
]
HOUSE_COLUMNS = ["city", "rooms", "size", "price", "expensive"]


@pytest.fixture(scope="module")
def als_model(spark):
    from pyspark.ml.recommendation import ALS

    ratings = spark.createDataFrame(RATINGS, ["user", "item", "rating"])
    return ALS(rank=3, maxIter=5, regParam=0.1, seed=7, userCol="user", itemCol="item",
               ratingCol="rating", coldStartStrategy="nan").fit(ratings)


@pytest.fixture(scope="module")
def houses(spark):
    return spark.createDataFrame(HOUSES, HOUSE_COLUMNS)


def features_stages(encode: bool = True) -> list:
    from pyspark.ml.feature import OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    stages = [
        VectorAssembler(inputCols=["rooms", "size"], outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="scaled", withMean=True, withStd=True),
        StringIndexer(inputCol="city", outputCol="city_index", handleInvalid="keep"),
    ]
    if encode:
        stages.append(OneHotEncoder(inputCol="city_index", outputCol="city_vector"))
    stages.append(VectorAssembler(inputCols=["scaled", "city_vector" if encode else "city_index"],
                                  outputCol="features"))
    return stages


def test_als_bundle_predicts_what_spark_predicts(spark, als_model, tmp_path: Path,
                                                 three_ways) -> None:
    info = export_als(als_model, tmp_path / "als-v1", spark_sample_users=10, sample_items=10)

    assert info.path == tmp_path / "als-v1.zip"
    assert info.sha256 == sha256_of(info.path) and info.bytes == info.path.stat().st_size
    assert info.parity is not None and info.parity.rows == 36  # 6 users x 6 items
    with zipfile.ZipFile(info.path) as archive:
        bundle = json.loads(archive.read("bundle.json"))
        model = json.loads(archive.read("root/model.json"))
        node = json.loads(archive.read("root/node.json"))
    assert bundle["format"] == "json" and bundle["version"].startswith("0.25.")
    assert model["op"] == "als"
    assert model["attributes"]["rank"] == {"int": 3}
    assert model["attributes"]["users"] == {"type": "list", "int": [1, 2, 3, 4, 5, 6]}
    factor = model["attributes"]["user_factors"]["tensor"][0]
    assert set(factor) == {"float", "shape"} and len(factor["float"]) == 3
    assert factor["shape"] == {"dimensions": [{"size": 3, "name": ""}]}
    assert node["shape"]["inputs"] == [{"name": "user", "port": "user"},
                                       {"name": "item", "port": "item"}]

    # Pairs scored one by one, against Spark's own transform; 99 and 98 are unknown.
    pairs = [(1, 10), (4, 22), (6, 11), (99, 10), (2, 98)]
    expected = {(r["user"], r["item"]): r["prediction"] for r in als_model.transform(
        spark.createDataFrame(pairs, ["user", "item"])).collect()}
    frame = frame_from_json({"schema": {"fields": [{"name": "user", "type": "integer"},
                                                   {"name": "item", "type": "integer"}]},
                             "rows": [list(p) for p in pairs]})
    scored = load_bundle(info.path).transform(frame)
    for user, item, prediction in scored.rows:
        if user == 99 or item == 98:
            assert prediction != prediction  # NaN, as Spark's "nan" cold start strategy
            assert expected[(user, item)] != expected[(user, item)]
        else:
            assert prediction == pytest.approx(expected[(user, item)], abs=1e-5)

    # Every known pair and the unknown ones, in Spark, MLeap's runtime and the reader.
    every_pair = [(u, i) for u in range(1, 7) for i in (10, 11, 12, 20, 21, 22)]
    report = three_ways(info.path, als_model,
                        spark.createDataFrame([*every_pair, (99, 10), (2, 98)], ["user", "item"]))
    assert report.rows == 38 and report.columns == ("prediction",)
    assert report.max_abs_diff <= 1e-5


def test_each_scorer_catches_a_perturbed_factor(spark, als_model, tmp_path: Path,
                                               mleap_runtime, three_ways) -> None:
    from jobs.bundles import format as fmt

    info = export_als(als_model, tmp_path / "als", spark_sample_users=3, sample_items=3)
    with zipfile.ZipFile(info.path) as archive:
        files = {n: archive.read(n).decode() for n in archive.namelist() if not n.endswith("/")}
    model = json.loads(files["root/model.json"])
    model["attributes"]["user_factors"]["tensor"][0]["float"][0] += 1e-3  # user 1
    files["root/model.json"] = json.dumps(model)
    fmt.write_zip(files, info.path)
    sample = spark.createDataFrame([(1, 10), (2, 11)], ["user", "item"])

    # MLeap's runtime and the Python reader each see the change on their own...
    for scorer in (mleap_runtime.scorer(info.path), load_bundle(info.path)):
        with pytest.raises(ParityError, match=r"column 'prediction': worst row 0 "
                                              r"\{'user': 1, 'item': 10\}"):
            check_parity(scorer, als_model, sample)
    # ...and so does the three-way check.
    with pytest.raises(ParityError, match=r"python and spark differ on column 'prediction'"):
        three_ways(info.path, als_model, sample)


def test_parity_gate_names_the_column_and_row(spark, als_model, tmp_path: Path) -> None:
    from pyspark.ml.recommendation import ALS

    info = export_als(als_model, tmp_path / "als", spark_sample_users=3, sample_items=3)
    other = ALS(rank=3, maxIter=5, regParam=0.1, seed=99, userCol="user", itemCol="item",
                ratingCol="rating").fit(spark.createDataFrame(RATINGS, ["user", "item",
                                                                       "rating"]))
    sample = spark.createDataFrame([(1, 10), (2, 11)], ["user", "item"])

    with pytest.raises(ParityError, match=r"column 'prediction': worst row \d"):
        check_parity(load_bundle(info.path), other, sample)


def pipeline_round_trip(spark, houses, stages, tmp_path: Path, name: str):
    from pyspark.ml import Pipeline

    model = Pipeline(stages=stages).fit(houses)
    info = export_pipeline(model, tmp_path / name, houses)
    return model, info


def spark_rows(model, spark, rows: list[tuple]) -> list:
    return model.transform(spark.createDataFrame(rows, HOUSE_COLUMNS)).collect()


def leap_frame(rows: list[tuple]) -> LeapFrame:
    types = ["string", "double", "double", "double", "double"]
    return frame_from_json({"schema": {"fields": [{"name": n, "type": t} for n, t in
                                                  zip(HOUSE_COLUMNS, types, strict=True)]},
                            "rows": [list(r) for r in rows]})


def test_linear_regression_pipeline_round_trip(spark, houses, tmp_path: Path,
                                               three_ways) -> None:
    from pyspark.ml.regression import LinearRegression

    stages = [*features_stages(), LinearRegression(labelCol="price", regParam=0.01)]
    model, info = pipeline_round_trip(spark, houses, stages, tmp_path, "lr")

    assert info.parity is not None and info.parity.rows == len(HOUSES)
    assert "prediction" in info.parity.columns and "city_vector" in info.parity.columns
    # A city never seen in training goes to the "keep" bucket in both.
    unseen = [("brest", 2.0, 45.0, 0.0, 0.0)]
    scored = load_bundle(info.path).transform(leap_frame(unseen))
    expected = spark_rows(model, spark, unseen)[0]
    names = [f.name for f in scored.fields]
    assert scored.rows[0][names.index("city_index")] == expected["city_index"] == 3.0
    assert scored.rows[0][names.index("prediction")] == pytest.approx(expected["prediction"],
                                                                     abs=1e-5)
    report = three_ways(info.path, model, houses.union(spark.createDataFrame(unseen,
                                                                             HOUSE_COLUMNS)))
    assert report.rows == len(HOUSES) + 1 and report.max_abs_diff <= 1e-5
    assert {"city_index", "city_vector", "prediction"} <= set(report.columns)
    with zipfile.ZipFile(info.path) as archive:
        listing = archive.namelist()
        stage_models = [json.loads(archive.read(n)) for n in listing
                        if n.endswith("model.json") and n.count("/") == 2]
    ops = {m["op"] for m in stage_models}
    assert ops == {"vector_assembler", "standard_scaler", "string_indexer", "one_hot_encoder",
                   "linear_regression"}
    indexer = next(m for m in stage_models if m["op"] == "string_indexer")["attributes"]
    assert indexer["labels_length"] == {"int": 1}
    assert indexer["handle_invalid"] == {"string": "keep"}
    assert indexer["labels_array_0"]["type"] == "list"
    encoder = next(m for m in stage_models if m["op"] == "one_hot_encoder")["attributes"]
    assert encoder["category_sizes"] == {"type": "list", "int": [4]}
    assert encoder["drop_last"] == {"boolean": True}


def test_logistic_regression_pipeline_round_trip(spark, houses, tmp_path: Path,
                                                 three_ways) -> None:
    from pyspark.ml.classification import LogisticRegression

    stages = [*features_stages(), LogisticRegression(labelCol="expensive", maxIter=20,
                                                     regParam=0.1)]
    model, info = pipeline_round_trip(spark, houses, stages, tmp_path, "logit")

    assert info.parity is not None
    assert {"rawPrediction", "probability", "prediction"} <= set(info.parity.columns)
    report = three_ways(info.path, model, houses)
    assert {"rawPrediction", "probability", "prediction"} <= set(report.columns)
    assert report.max_abs_diff <= 1e-5


def test_multinomial_logistic_regression_round_trip(spark, houses, tmp_path: Path,
                                                    three_ways) -> None:
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StringIndexer, VectorAssembler

    # Three cities, so Spark fits a coefficient matrix (stored column-major by MLeap).
    stages = [StringIndexer(inputCol="city", outputCol="label"),
              VectorAssembler(inputCols=["rooms", "size", "price"], outputCol="features"),
              LogisticRegression(maxIter=20, regParam=0.1)]
    model, info = pipeline_round_trip(spark, houses, stages, tmp_path, "multinomial")

    assert info.parity is not None and "probability" in info.parity.columns
    report = three_ways(info.path, model, houses)
    assert "probability" in report.columns and report.max_abs_diff <= 1e-5
    with zipfile.ZipFile(info.path) as archive:
        models = [json.loads(archive.read(n)) for n in archive.namelist()
                  if n.endswith("model.json")]
    logit = next(m for m in models if m["op"] == "logistic_regression")["attributes"]
    assert logit["num_classes"] == {"long": 3}
    assert logit["coefficient_matrix"]["shape"]["dimensions"] == [
        {"size": 3, "name": ""}, {"size": 3, "name": ""}]


@pytest.mark.parametrize(("kind", "trees"), [("decision_tree", 1), ("random_forest", 4),
                                             ("gbt", 4)])
def test_tree_pipeline_round_trip(spark, houses, tmp_path: Path, kind: str, trees: int,
                                  three_ways) -> None:
    from pyspark.ml.regression import (
        DecisionTreeRegressor,
        GBTRegressor,
        RandomForestRegressor,
    )

    learners = {
        "decision_tree": DecisionTreeRegressor(labelCol="price", maxDepth=3),
        "random_forest": RandomForestRegressor(labelCol="price", numTrees=4, maxDepth=3,
                                               seed=3),
        "gbt": GBTRegressor(labelCol="price", maxIter=4, maxDepth=2, seed=3),
    }
    stages = [*features_stages(encode=False), learners[kind]]
    model, info = pipeline_round_trip(spark, houses, stages, tmp_path, kind)

    assert info.parity is not None and "prediction" in info.parity.columns
    report = three_ways(info.path, model, houses)
    assert "prediction" in report.columns and report.max_abs_diff <= 1e-5
    with zipfile.ZipFile(info.path) as archive:
        tree_files = [n for n in archive.namelist() if n.endswith("/tree.json")]
    assert len(tree_files) == trees


def test_parity_accepts_rows_spark_drops_for_cold_start(spark, tmp_path: Path,
                                                        three_ways) -> None:
    from pyspark.ml.recommendation import ALS

    ratings = spark.createDataFrame(RATINGS, ["user_id", "item_id", "rating"])
    model = ALS(rank=2, maxIter=3, seed=7, userCol="user_id", itemCol="item_id",
                ratingCol="rating", coldStartStrategy="drop").fit(ratings)
    info = export_als(model, tmp_path / "als-drop", spark_sample_users=2, sample_items=2)
    # User 99 is unknown: Spark drops the row, the bundle predicts NaN; both mean "no score".
    sample = spark.createDataFrame([(1, 10), (99, 10)], ["user_id", "item_id"])

    report = check_parity(load_bundle(info.path), model, sample)

    assert report.rows == 2 and report.columns == ("prediction",)
    # MLeap's runtime has no cold start strategy: like the reader, it says NaN.
    assert three_ways(info.path, model, sample).max_abs_diff == 0.0


def test_multi_column_encoder_round_trip(spark, houses, tmp_path: Path, three_ways) -> None:
    from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler
    from pyspark.ml.regression import LinearRegression

    stages = [StringIndexer(inputCol="city", outputCol="city_index", handleInvalid="keep"),
              OneHotEncoder(inputCols=["city_index"], outputCols=["city_vector"]),
              VectorAssembler(inputCols=["rooms", "city_vector"], outputCol="features"),
              LinearRegression(labelCol="price")]
    model, info = pipeline_round_trip(spark, houses, stages, tmp_path, "encoder-columns")

    report = three_ways(info.path, model, houses)
    assert {"city_vector", "prediction"} <= set(report.columns)
    assert report.max_abs_diff <= 1e-5


def test_multi_column_string_indexer_is_beyond_mleap_0_20(spark, houses, tmp_path: Path,
                                                          mleap_runtime) -> None:
    from pyspark.ml.feature import StringIndexer

    from jobs.bundles.mleap_runtime import MleapRefusedError

    stages = [StringIndexer(inputCols=["city"], outputCols=["city_index"])]
    _, info = pipeline_round_trip(spark, houses, stages, tmp_path, "indexer-columns")

    # The Python reader passed the export's gate; MLeap 0.20.0's string indexer has a
    # single input port (the input_cols form came in a later MLeap), so it refuses.
    assert info.parity is not None and info.parity.max_abs_diff == 0.0
    with pytest.raises(MleapRefusedError, match=r"NoSuchElementException: None\.get"):
        mleap_runtime.transform(info.path, leap_frame(HOUSES[:1]))


def test_export_refuses_a_stage_it_cannot_write(spark, houses, tmp_path: Path) -> None:
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Bucketizer

    from jobs.bundles.format import BundleError

    model = Pipeline(stages=[Bucketizer(splits=[0.0, 2.0, 10.0], inputCol="rooms",
                                        outputCol="rooms_bucket")]).fit(houses)

    with pytest.raises(BundleError, match=r"cannot export stage Bucketizer_\w+ \(Bucketizer\)"):
        export_pipeline(model, tmp_path / "bucket", houses)
    assert not (tmp_path / "bucket.zip").exists()
