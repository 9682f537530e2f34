"""What the Spark jobs share about a model and their input: the interactions export as
Spark reads it, a model's item factors, and the metadata file saved beside a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame, SparkSession

# Saved in a model's folder: which registered version it is.
MODEL_METADATA_FILE = "batchscore.json"


def read_interactions(spark: SparkSession, path: Path) -> DataFrame:
    from jobs.scoring.transforms import INTERACTIONS_SCHEMA

    return spark.read.csv(str(path), schema=INTERACTIONS_SCHEMA, header=False, mode="FAILFAST")


def item_matrix(model: ALSModel) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and their factor matrix, collected to the driver."""
    frame = model.itemFactors.toPandas()
    ids = frame["id"].to_numpy(dtype=np.int64)
    factors = (np.stack(frame["features"].to_numpy()).astype(np.float32) if len(frame)
               else np.empty((0, model.rank), dtype=np.float32))
    return ids, factors
