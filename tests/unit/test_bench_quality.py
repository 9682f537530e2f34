"""make bench-quality's split by time per user, and the validation split its tuning uses."""

import pytest

from jobs.bench.quality import per_user_validation, split_per_user

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


def test_tuning_validates_on_each_users_latest_fifth_of_the_training_part(spark) -> None:
    # The benchmark's training part only: its holdout is not passed, so never seen.
    rows = ([(1, item, 1.0, t) for t, item in enumerate(range(10, 20))]
            + [(2, item, 1.0, t) for t, item in enumerate([18, 11, 12, 13, 10])]
            + [(3, 10, 1.0, 0)])
    train = spark.createDataFrame(rows, "user_id long, item_id long, rating double, "
                                        "event_at long")
    validation = per_user_validation(train, 0.2)
    try:
        # User 1's last two (18, 19) are validation; 19 is unknown to the fit events and
        # dropped. User 2's last (10) is validation. User 3's only event is fitted on.
        assert validation.holdout.truth == {1: {18}, 2: {10}}
        assert validation.fit_events.count() == 13
        assert validation.holdout.activity == {1: 8, 2: 4}
        assert validation.holdout.item_popularity == {10: 2, 11: 2, 12: 2, 13: 2, 14: 1,
                                                      15: 1, 16: 1, 17: 1, 18: 1}
        seen = dict(zip(validation.users_seen.column("user_id").to_pylist(),
                        map(sorted, validation.users_seen.column("seen").to_pylist()),
                        strict=True))
        assert seen == {1: list(range(10, 18)), 2: [11, 12, 13, 18]}
        assert validation.to_json() == {"split": "per user", "share": 0.2, "users": 2}
    finally:
        validation.release()
