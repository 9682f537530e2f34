"""The training and scoring jobs under spark-submit on a real standalone cluster
(master and one worker on 127.0.0.1) give what they give in local mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.bench.cluster import StandaloneCluster, spark_bin
from jobs.cli import main
from jobs.data import history
from jobs.lifecycle import registry
from jobs.scoring.score import RECOMMENDATIONS_DIR, ScoreConfig
from jobs.scoring.score import run as score_locally
from tests.e2e.conftest import cli_world

pytestmark = pytest.mark.spark

RUN_DATE = "2026-11-20"
JOBS = Path(__file__).resolve().parents[2] / "jobs"
SUBMIT_TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> StandaloneCluster:
    with StandaloneCluster(cores=1, memory="1g",
                           work_dir=tmp_path_factory.mktemp("spark-cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def world(settings, endpoints):
    with cli_world(settings, endpoints) as (engine, _client):
        assert main(["data", "generate", "--users", "60", "--items", "40", "--days", "20",
                     "--seed", "9", "--end-date", RUN_DATE]) == 0
        yield engine


def submit(cluster: StandaloneCluster, job: str, args: list[str], env: dict[str, str]
           ) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [spark_bin("spark-submit"), "--master", cluster.master_url,
         "--conf", "spark.executor.memory=512m", str(JOBS / job), *args],
        env={**os.environ, "PYSPARK_PYTHON": sys.executable,
             "PYSPARK_DRIVER_PYTHON": sys.executable, **env},
        capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    # The job really ran on the cluster, not in local mode.
    assert cluster.master_url in done.stderr
    return done


def recommendations(folder: Path) -> dict[int, tuple[list[int], list[float]]]:
    table = pq.read_table(folder / RECOMMENDATIONS_DIR).to_pydict()
    return {user: (items, scores) for user, items, scores in
            zip(table["user_id"], table["items"], table["scores"], strict=True)}


def test_train_and_score_on_a_standalone_cluster_match_local_mode(
        cluster, world, settings, endpoints, spark, tmp_path) -> None:
    engine = world
    trained = submit(cluster, "training/train.py",
                     ["--as-of", RUN_DATE, "--rank", "4", "--max-iter", "3"],
                     {"BATCHSCORE_DATABASE_URL": endpoints.database_url,
                      "BATCHSCORE_HOME": str(settings.home)})
    assert "registered model version 1" in trained.stdout
    model = registry.get(engine, 1)
    model_path = model.artifact_uri.removeprefix("file://")
    # Training wrote the history's days; both scorings read them there.
    interactions = history.root(engine, None, settings.home)
    args = ["--interactions", interactions, "--run-date", RUN_DATE,
            "--model-path", model_path, "--k", "5"]
    submit(cluster, "scoring/score.py", [*args, "--output", str(tmp_path / "cluster")], {})
    score_locally(ScoreConfig(interactions=interactions, run_date=model.trained_as_of,
                              model_path=Path(model_path), output=tmp_path / "local", k=5),
                  spark=spark)

    on_cluster = recommendations(tmp_path / "cluster")
    local = recommendations(tmp_path / "local")
    assert len(local) == 60
    assert on_cluster.keys() == local.keys()
    for user, (items, scores) in local.items():
        assert on_cluster[user][0] == items, f"user {user}"
        assert np.array_equal(np.float32(on_cluster[user][1]), np.float32(scores))

    # Training on the cluster fits the model local mode fits from the same data and seed.
    from pyspark.ml.recommendation import ALSModel

    from jobs.training.train import TRAINING_SET_FILE, AlsParams, fit_als, read_training_set

    assert (model.params["rank"], model.params["max_iter"]) == (4, 3)
    cluster_model = ALSModel.load(model_path)
    training_set = read_training_set(spark, Path(model_path) / TRAINING_SET_FILE)
    local_model = fit_als(training_set, AlsParams(
        **{name: model.params[name]
           for name in ("rank", "reg_param", "alpha", "max_iter", "seed")}))
    for side in ("itemFactors", "userFactors"):
        ours = getattr(cluster_model, side).orderBy("id").toPandas()
        theirs = getattr(local_model, side).orderBy("id").toPandas()
        assert ours["id"].tolist() == theirs["id"].tolist()
        assert np.allclose(np.stack(ours["features"]), np.stack(theirs["features"]),
                           rtol=1e-3, atol=1e-5)
