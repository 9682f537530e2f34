"""The per-item counts the PostgreSQL publisher stores with a version, on hand-made lists."""

import pyarrow as pa

from jobs.publish import exposure
from jobs.publish.exposure import ExposureCounter, ItemCounts


def lists(rows: list[list[int] | None]) -> pa.Array:
    return pa.array(rows, pa.list_(pa.int64()))


def as_dict(counts: ItemCounts) -> dict[int, tuple[int, int]]:
    return {item: (users, ranks) for item, users, ranks in zip(
        counts.item_ids.tolist(), counts.users.tolist(), counts.rank_sums.tolist(), strict=True)}


def test_each_item_counts_its_lists_and_sums_its_ranks() -> None:
    # 10 at ranks 1 and 2, 20 at 2 and 1, 30 at 3 and 1; an empty and a missing list.
    counts = ItemCounts.of_lists(lists([[10, 20, 30], [20, 10], [], None, [30]]))
    assert as_dict(counts) == {10: (2, 3), 20: (2, 3), 30: (2, 4)}
    assert counts.item_ids.tolist() == [10, 20, 30]


def test_ids_spread_too_wide_to_count_densely_are_counted_by_sorting() -> None:
    far = 4_000_000_000
    counts = ItemCounts.of_lists(lists([[far, 5], [5], [7, far]]))
    assert as_dict(counts) == {5: (2, 3), 7: (1, 1), far: (2, 3)}


def test_the_counter_merges_blocks_as_it_goes_and_totals_them_all(monkeypatch) -> None:
    monkeypatch.setattr(exposure, "MERGE_AT", 3)
    counter = ExposureCounter()
    for block in ([[1, 2]], [[2, 3], [3]], [[4, 1]], [[1]]):
        counter.add(lists(block))
    # 1 at ranks 1, 2, 1; 2 at 2, 1; 3 at 2, 1; 4 at 1.
    assert as_dict(counter.total()) == {1: (3, 4), 2: (2, 3), 3: (2, 3), 4: (1, 1)}
    assert as_dict(ExposureCounter().total()) == {}


def test_copy_rows_name_the_version() -> None:
    counts = ItemCounts.of_lists(lists([[7, 3]]))
    assert counts.copy_text(42) == "42\t3\t1\t2\n42\t7\t1\t1\n"
