"""make bench-quality's split by time per user."""

import pytest

from jobs.bench.quality import split_per_user

pytestmark = pytest.mark.spark


def test_each_users_latest_fifth_is_held_out(spark) -> None:
    rows = ([(1, item, 1.0, t) for t, item in enumerate([10, 11, 12, 13, 14, 15, 16, 17, 18,
                                                         19])]
            + [(2, 10, 1.0, 5), (2, 20, 1.0, 1)]
            + [(3, 10, 1.0, 0)]
            + [(4, 11, 1.0, 0), (4, 11, 1.0, 1), (4, 99, 1.0, 2), (4, 12, 1.0, 3),
               (4, 13, 1.0, 4)])
    events = spark.createDataFrame(
        rows, "user_id long, item_id long, rating double, event_at long")
    train, holdout = split_per_user(events, 0.2)
    # User 1: ten events, the last two (items 18, 19) held out, and not known to training
    # (nobody else touched them): none kept. User 2: two events, the later (item 10) held
    # out. User 3: one event, kept for training. User 4: five events, the last (item 13,
    # which user 1 trains on) held out.
    assert sorted(tuple(r) for r in holdout.collect()) == [(2, 10), (4, 13)]
    kept = sorted((r["user_id"], r["item_id"]) for r in train.collect())
    assert kept == sorted([(1, item) for item in range(10, 18)] + [(2, 20), (3, 10),
                                                                  (4, 11), (4, 11), (4, 99),
                                                                  (4, 12)])
