"""Array helpers shared by the scoring job and the contracts it checks against."""

from __future__ import annotations

import numpy as np


def sorted_positions(sorted_keys: np.ndarray, values: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``values``, its index in ``sorted_keys`` (ascending) and
    whether it is there at all (where it is not, the index is meaningless): a binary
    search, without the sort ``np.isin`` pays for, which costs more than the rest of a
    block's checks."""
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return at, sorted_keys[at] == values
