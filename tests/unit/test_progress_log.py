"""The publish steps' progress lines: one at every tenth of the users, whatever the block size."""

import logging

from jobs.orchestration.nightly import progress_log


def test_a_line_at_each_tenth_of_the_users(caplog) -> None:
    report = progress_log("redis", 1_000)
    with caplog.at_level(logging.INFO, logger="jobs.orchestration.nightly"):
        for users in range(30, 1_001, 30):   # blocks of 30 users
            report(users)
        report(1_000)                         # the last, smaller block
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "redis: 120 / 1000 users written"
    assert lines[-1] == "redis: 1000 / 1000 users written"
    assert len(lines) == 10


def test_fewer_users_than_ten_still_report(caplog) -> None:
    report = progress_log("postgres", 3)
    with caplog.at_level(logging.INFO, logger="jobs.orchestration.nightly"):
        report(2)
        report(3)
    assert [record.getMessage() for record in caplog.records] == [
        "postgres: 2 / 3 users written", "postgres: 3 / 3 users written"]
