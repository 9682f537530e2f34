"""The ALS family: implicit-feedback alternating least squares, fitted by Spark ML
(Hu, Koren and Volinsky, "Collaborative Filtering for Implicit Feedback Datasets",
ICDM 2008): ratings are confidences ``1 + alpha * rating``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.platform.progress import spark_progress

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

# Chosen on the holdout of the sample data set (see README, "Choosing the defaults").
DEFAULT_RANK = 32
DEFAULT_REG_PARAM = 1.0
DEFAULT_ALPHA = 2.0
DEFAULT_MAX_ITER = 10


@dataclass(frozen=True)
class AlsParams:
    rank: int = DEFAULT_RANK
    reg_param: float = DEFAULT_REG_PARAM
    alpha: float = DEFAULT_ALPHA
    max_iter: int = DEFAULT_MAX_ITER
    seed: int = 42


def fit_als(interactions: DataFrame, params: AlsParams, description: str = "ALS fit"
            ) -> ALSModel:
    """ALS fitted on ``interactions``, its Spark stages shown as ``description`` (keep it short).

    Spark runs every iteration inside the one ``fit``; what can be shown is
    the stages they are made of (for implicit ALS, a Spark job or two per
    iteration), as they run.
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    als = ALS(
        userCol="user_id", itemCol="item_id", ratingCol="rating",
        implicitPrefs=True, rank=params.rank, regParam=params.reg_param, alpha=params.alpha,
        maxIter=params.max_iter, seed=params.seed, coldStartStrategy="drop",
    )
    training = interactions.select(
        F.col("user_id").cast("int"), F.col("item_id").cast("int"), "rating"
    )
    with spark_progress(interactions.sparkSession, description):
        return als.fit(training)
