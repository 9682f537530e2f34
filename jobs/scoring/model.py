"""What the Spark jobs share about a model of either family: its item side, the users it
can score, and the metadata file saved beside it.

Two families serve (``FAMILIES``): ``als``, a factor model saved as a Spark
``ALSModel``, and ``ease``, an item-item model saved in the portable format of
:mod:`jobs.scoring.item_item`. Scoring, evaluation and the comparisons with a
serving model go through :class:`ScoringModel`, so they work for either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame

    from jobs.scoring.item_item import ItemItemModel

# Saved in a model's folder: which registered version it is.
MODEL_METADATA_FILE = "batchscore.json"

ALS = "als"
EASE = "ease"
FAMILIES = (ALS, EASE)


@dataclass(frozen=True)
class ScoringModel:
    """A model as scoring sees it.

    ``item_matrix`` is a factor model's (items, rank) item factors, or an
    item-item model's (items, items) weights (``item_item``); ``user_factors``
    (``user_id`` long, ``features``) is a factor model's user side, None for an
    item-item model, whose users are described by what they have seen.
    """

    family: str
    item_ids: np.ndarray
    item_matrix: np.ndarray
    user_factors: DataFrame | None = None

    @property
    def item_item(self) -> bool:
        return self.user_factors is None

    def user_count(self) -> int | None:
        """How many users a factor model has factors for; None for an item-item model,
        which scores whoever has seen an item it knows."""
        return None if self.user_factors is None else self.user_factors.count()

    def users(self, users_seen: DataFrame, partitions: int | None = None) -> DataFrame:
        """``users_seen`` (``user_id``, ``seen``) as the scorer's input: with a factor
        model's ``features``, only the users it has factors for; for an item-item
        model every user, with empty features (the scorer drops those none of whose
        seen items the model knows). With ``partitions``, ``users_seen`` is already
        hash-partitioned that many ways by ``user_id`` and the factors are shuffled
        to it, so that the join adds no other shuffle."""
        from pyspark.sql import functions as F

        if self.user_factors is None:
            return users_seen.withColumn("features", F.array().cast("array<float>"))
        factors = (self.user_factors if partitions is None
                   else self.user_factors.repartition(partitions, "user_id"))
        return factors.join(users_seen, "user_id")

    def ranked_lists(self, users_seen: DataFrame, k: int) -> DataFrame:
        """:func:`jobs.scoring.transforms.top_k_unseen` for the users in ``users_seen``."""
        from jobs.scoring.transforms import top_k_unseen

        return top_k_unseen(self.users(users_seen), self.item_ids, self.item_matrix, k,
                            item_item=self.item_item)


def from_als(model: ALSModel) -> ScoringModel:
    """A fitted or loaded Spark ``ALSModel``; its item factors are collected to the driver."""
    from pyspark.sql import functions as F

    ids, factors = item_matrix(model)
    users = model.userFactors.select(F.col("id").cast("long").alias("user_id"), "features")
    return ScoringModel(family=ALS, item_ids=ids, item_matrix=factors, user_factors=users)


def from_item_item(model: ItemItemModel) -> ScoringModel:
    return ScoringModel(family=model.family, item_ids=model.item_ids,
                        item_matrix=model.weights)


def load_model(path: Path) -> ScoringModel:
    """The model saved at ``path``, of whichever family it is (a Spark model is read by
    the active Spark session)."""
    from jobs.scoring import item_item

    if item_item.is_item_item(path):
        return from_item_item(item_item.load(path))
    from pyspark.ml.recommendation import ALSModel

    return from_als(ALSModel.load(str(path)))


def item_matrix(model: ALSModel) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and their factor matrix, collected to the driver."""
    frame = model.itemFactors.toPandas()
    ids = frame["id"].to_numpy(dtype=np.int64)
    factors = (np.stack(frame["features"].to_numpy()).astype(np.float32) if len(frame)
               else np.empty((0, model.rank), dtype=np.float32))
    return ids, factors
