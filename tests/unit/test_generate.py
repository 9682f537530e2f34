from datetime import UTC, date, datetime

import numpy as np
import pytest

from jobs.data.generate import GenerateConfig, generate


def config(**overrides: object) -> GenerateConfig:
    values = {"users": 400, "items": 200, "days": 30, "seed": 3, "end_date": date(2026, 11, 20)}
    values.update(overrides)
    return GenerateConfig(**values)  # type: ignore[arg-type]


def test_same_seed_same_interactions_other_seed_other_ones() -> None:
    first, again, other = generate(config()), generate(config()), generate(config(seed=4))
    for column in ("user_id", "item_id", "rating", "event_at"):
        assert np.array_equal(getattr(first, column), getattr(again, column))
    assert not np.array_equal(first.item_id, other.item_id)


def test_values_are_in_range_and_pairs_unique() -> None:
    data = generate(config())
    assert data.user_id.min() >= 1 and data.user_id.max() <= 400
    assert data.item_id.min() >= 1 and data.item_id.max() <= 200
    assert set(np.unique(data.rating)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    start = datetime(2026, 10, 22, tzinfo=UTC).timestamp()  # 30 days before the 21st
    end = datetime(2026, 11, 21, tzinfo=UTC).timestamp()
    assert data.event_at.min() >= start and data.event_at.max() < end
    pairs = data.user_id * 1000 + data.item_id
    assert len(np.unique(pairs)) == len(data)


def test_popularity_and_activity_are_heavy_tailed() -> None:
    data = generate(config(users=2000, items=500))
    per_item = np.sort(np.bincount(data.item_id))[::-1]
    # The top 10% of items take far more than 10% of the events.
    assert per_item[:50].sum() / per_item.sum() > 0.35
    per_user = np.bincount(data.user_id)[1:]
    assert np.percentile(per_user, 99) > 4 * np.median(per_user)


@pytest.mark.parametrize(("field", "value"), [("users", 0), ("days", 0), ("items", 5)])
def test_bad_sizes_are_named(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"--{field} must be at least"):
        config(**{field: value})
