"""SIGKILL of the publishing process at every point of both stores' writes, the switch,
the flip and the cleanup: readers always get one whole version from each store, the next
run succeeds, and after it nothing is left behind."""

from __future__ import annotations

from datetime import date, timedelta

from tests.faults import checks
from tests.faults.publisher import POINTS, publish

FIRST_DAY = date(2026, 10, 1)


def test_a_killed_publisher_leaves_whole_versions_and_the_next_run_converges(
        target, engine, client, tmp_path) -> None:
    publish(target, FIRST_DAY, tag=1)
    served_tag = 1
    marker = tmp_path / "paused-at"
    assert len(POINTS) >= 20
    for number, point in enumerate(POINTS, start=1):
        day = FIRST_DAY + timedelta(days=number)
        killed_tag, retry_tag = 100 + number, 200 + number
        process = checks.start_publisher(target, day, killed_tag, point, marker)
        checks.wait_for_marker(process, marker, point)
        checks.kill_group(process)

        # Each store serves one whole version: the old one, or the killed run's.
        postgres_tag = checks.postgres_serves_whole(engine)
        redis_tag = checks.redis_serves_whole(client)
        assert {postgres_tag, redis_tag} <= {served_tag, killed_tag}, point

        # The next run (the same date again) succeeds and both stores converge on it.
        state = publish(target, day, tag=retry_tag)
        served = checks.assert_converged(engine, client, target.home)
        assert served == state.publish_id, point
        assert checks.postgres_serves_whole(engine) == retry_tag, point
        served_tag = retry_tag
        checks.TALLY["switches"] += 1
    checks.TALLY["kill points"] += len(POINTS)
