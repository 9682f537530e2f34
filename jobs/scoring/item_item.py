"""The portable artifact of an item-item model (the EASE family), which MLeap has no op for.

A folder holding two files, documented in ``schemas/item-item-model.md``:

- ``item_item.json``: the format name and version, the family, its parameters
  and the shapes, so that a reader can check what it got before loading it;
- ``item_item.npz``: a NumPy archive (uncompressed) with ``item_ids`` (int64,
  ascending) and ``weights`` (float32, items x items). ``weights[i, j]`` is what
  having touched ``item_ids[i]`` adds to ``item_ids[j]``'s score; the diagonal is 0.

A user's score for item j is the sum of ``weights[i, j]`` over the items i they
touched; their top-K are the K best items they have not touched, equal scores
in item id order. :func:`top_k` is that reader, in plain NumPy: the Spark
scoring job (``jobs.scoring.transforms``) must agree with it, and a test
checks that it does.

This module imports neither pyspark nor a JVM: a product service can score with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "batchscore.item_item"
FORMAT_VERSION = 1
METADATA_FILE = "item_item.json"
ARRAYS_FILE = "item_item.npz"


class ItemItemFormatError(ValueError):
    """A folder is not an item-item model this reader can read."""


@dataclass(frozen=True)
class ItemItemModel:
    """An item-item model's weights, rows and columns in ``item_ids`` order."""

    family: str
    item_ids: np.ndarray
    weights: np.ndarray
    params: dict[str, Any]

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.weights.shape != (n, n):
            raise ItemItemFormatError(
                f"an item-item model over {n} items needs {n} x {n} weights, got "
                f"{' x '.join(map(str, self.weights.shape))}")
        if n and np.any(np.diff(self.item_ids) <= 0):
            raise ItemItemFormatError(
                "the item ids of an item-item model must ascend, without repeats")


def save(model: ItemItemModel, folder: Path) -> None:
    """Write ``model`` into ``folder`` (created) as the two documented files."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ARRAYS_FILE).open("wb") as handle:
        np.savez(handle, item_ids=model.item_ids.astype(np.int64),
                 weights=model.weights.astype(np.float32))
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "params": model.params,
        "items": len(model.item_ids),
        "arrays": {"item_ids": {"dtype": "int64", "shape": [len(model.item_ids)]},
                   "weights": {"dtype": "float32", "shape": list(model.weights.shape)}},
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def is_item_item(folder: Path) -> bool:
    """Whether ``folder`` holds an item-item model (rather than, say, a Spark model)."""
    return (folder / METADATA_FILE).is_file()


def load(folder: Path) -> ItemItemModel:
    """Read an item-item model, refusing by name anything that is not what the metadata
    file promises."""
    metadata_path = folder / METADATA_FILE
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        raise ItemItemFormatError(
            f"{folder} is not an item-item model: {METADATA_FILE} is missing") from None
    except json.JSONDecodeError as err:
        raise ItemItemFormatError(f"{metadata_path} is not JSON: {err}") from None
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise ItemItemFormatError(
            f"{metadata_path} is format {metadata.get('format')!r} version "
            f"{metadata.get('format_version')!r}; this reader reads {FORMAT!r} "
            f"version {FORMAT_VERSION}")
    try:
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
            item_ids, weights = arrays["item_ids"], arrays["weights"]
    except FileNotFoundError:
        raise ItemItemFormatError(f"{folder / ARRAYS_FILE} is missing") from None
    except KeyError as err:
        raise ItemItemFormatError(f"{folder / ARRAYS_FILE} has no array {err}") from None
    if item_ids.dtype != np.int64 or weights.dtype != np.float32:
        raise ItemItemFormatError(f"{folder / ARRAYS_FILE}: item_ids must be int64 and weights "
                                  f"float32, got {item_ids.dtype} and {weights.dtype}")
    if len(item_ids) != metadata.get("items"):
        raise ItemItemFormatError(f"{folder / ARRAYS_FILE} has {len(item_ids)} items, "
                                  f"{METADATA_FILE} says {metadata.get('items')}")
    return ItemItemModel(family=metadata["family"], item_ids=item_ids, weights=weights,
                         params=metadata.get("params", {}))


def top_k(model: ItemItemModel, touched: list[int], k: int) -> list[tuple[int, float]]:
    """One user's top-``k`` (item, score), best first, equal scores by item id, from the
    items they touched; items they touched are left out, ones the model does not know
    are ignored. A user the model knows nothing of gets an empty list."""
    positions = np.searchsorted(model.item_ids, touched)
    known = [int(p) for p, item in zip(positions, touched, strict=True)
             if p < len(model.item_ids) and model.item_ids[p] == item]
    if not known:
        return []
    scores = model.weights[sorted(set(known))].sum(axis=0, dtype=np.float32)
    candidates = np.setdiff1d(np.arange(len(model.item_ids)), known)
    order = np.lexsort((model.item_ids[candidates], -scores[candidates]))[:k]
    return [(int(model.item_ids[candidates[i]]), float(scores[candidates[i]])) for i in order]
