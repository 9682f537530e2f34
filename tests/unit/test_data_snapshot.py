"""The training snapshot's record of its data, daily figures included."""

import pytest

from jobs.scoring.transforms import INTERACTIONS_SCHEMA
from jobs.training.train import data_snapshot

pytestmark = pytest.mark.spark

DAY = 86_400
START = 1_795_132_800  # 2026-11-20T00:00:00Z


def test_the_snapshot_records_the_median_day(spark) -> None:
    # Three days (UTC): 2 rows of 2 users, 5 rows of 3 users, 3 rows of 1 user.
    rows = ([(1, 1, 1.0, START), (2, 2, 1.0, START + DAY - 1)]
            + [(1 + i % 3, 10 + i, 1.0, START + DAY + 60 * i) for i in range(5)]
            + [(7, 20 + i, 1.0, START + 2 * DAY + i) for i in range(3)])
    frame = spark.createDataFrame(rows, schema=INTERACTIONS_SCHEMA)
    snapshot = data_snapshot(frame)
    assert {key: snapshot[key] for key in ("rows", "users", "days", "median_daily_rows",
                                           "median_daily_users")} == {
        "rows": 10, "users": 4, "days": 3, "median_daily_rows": 3.0, "median_daily_users": 2.0}
    assert snapshot["first_event"] == "2026-11-20T00:00:00+00:00"
