"""What the Spark jobs share about a model: its item factors, and the metadata file saved
beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel

# Saved in a model's folder: which registered version it is.
MODEL_METADATA_FILE = "batchscore.json"


def item_matrix(model: ALSModel) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and their factor matrix, collected to the driver."""
    frame = model.itemFactors.toPandas()
    ids = frame["id"].to_numpy(dtype=np.int64)
    factors = (np.stack(frame["features"].to_numpy()).astype(np.float32) if len(frame)
               else np.empty((0, model.rank), dtype=np.float32))
    return ids, factors
