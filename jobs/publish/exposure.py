"""What a version's lists show per item, counted while they are loaded.

For each item: the lists it is in (``users``) and the sum of its ranks in them
(``rank_sum``; the mean rank is ``rank_sum / users``). The PostgreSQL publisher
stores them with the version (``batchscore.prediction_item_exposure``), so the
monitor's coverage and concentration and the run report's most recommended
items read a row per item instead of unnesting every list of the version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Dense counting (np.bincount over the ids' range) while the range is at most this
# many times the entries counted, plus a floor; ids spread wider are sorted instead.
DENSE_SPAN_FACTOR = 4
DENSE_SPAN_FLOOR = 1 << 16
# Per-block counts are merged once they hold this many ids in all.
MERGE_AT = 1 << 20


@dataclass(frozen=True)
class ItemCounts:
    """Per item, sorted by id: the lists it is in and the sum of its ranks in them."""

    item_ids: np.ndarray
    users: np.ndarray
    rank_sums: np.ndarray

    @classmethod
    def empty(cls) -> ItemCounts:
        return cls(*(np.empty(0, np.int64) for _ in range(3)))

    @classmethod
    def of_lists(cls, items: pa.Array | pa.ChunkedArray) -> ItemCounts:
        """The counts of one block's ``items`` column (a list per user, best first)."""
        if isinstance(items, pa.ChunkedArray):
            items = items.combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(items), 0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(items).to_numpy(zero_copy_only=False).astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        ranks = np.arange(1, len(flat) + 1, dtype=np.int64) - np.repeat(starts, lengths)
        return cls(*sum_by_item(flat, np.ones(len(flat), np.int64), ranks))

    @classmethod
    def merged(cls, parts: list[ItemCounts]) -> ItemCounts:
        if not parts:
            return cls.empty()
        return cls(*sum_by_item(np.concatenate([p.item_ids for p in parts]),
                                np.concatenate([p.users for p in parts]),
                                np.concatenate([p.rank_sums for p in parts])))

    def copy_text(self, publish_id: int) -> str:
        """The rows of ``prediction_item_exposure`` for version ``publish_id``, in COPY's
        text format (publish_id, item_id, users, rank_sum)."""
        return "".join(f"{publish_id}\t{item}\t{users}\t{ranks}\n"
                       for item, users, ranks in zip(self.item_ids.tolist(), self.users.tolist(),
                                                     self.rank_sums.tolist(), strict=True))


def sum_by_item(item_ids: np.ndarray, users: np.ndarray, rank_sums: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct ``item_ids``, sorted, with ``users`` and ``rank_sums`` summed per id."""
    if not len(item_ids):
        return item_ids.astype(np.int64), users.astype(np.int64), rank_sums.astype(np.int64)
    low = int(item_ids.min())
    span = int(item_ids.max()) - low + 1
    if span <= DENSE_SPAN_FACTOR * len(item_ids) + DENSE_SPAN_FLOOR:
        offsets = item_ids - low
        counted = np.bincount(offsets, weights=users, minlength=span)
        # Every id counted is in at least one list.
        present = np.flatnonzero(counted)
        summed = np.bincount(offsets, weights=rank_sums, minlength=span)
        return (present + low, counted[present].astype(np.int64),
                summed[present].astype(np.int64))
    ids, inverse = np.unique(item_ids, return_inverse=True)
    return (ids.astype(np.int64),
            np.bincount(inverse, weights=users, minlength=len(ids)).astype(np.int64),
            np.bincount(inverse, weights=rank_sums, minlength=len(ids)).astype(np.int64))


class ExposureCounter:
    """Counts blocks of lists as they are loaded, merging as it goes so that it holds
    about one catalogue's worth of counts however many blocks it sees."""

    def __init__(self) -> None:
        self._parts: list[ItemCounts] = []
        self._held = 0

    def add(self, items: pa.Array | pa.ChunkedArray) -> None:
        counts = ItemCounts.of_lists(items)
        self._parts.append(counts)
        self._held += len(counts.item_ids)
        if self._held >= MERGE_AT:
            self._parts = [ItemCounts.merged(self._parts)]
            self._held = len(self._parts[0].item_ids)

    def total(self) -> ItemCounts:
        return ItemCounts.merged(self._parts)
