"""The nightly DAG's timetable: one run per day, whose logical date is that day.

A run for day D has the data interval [D 00:00, D+1 00:00) UTC, so its logical
date is D itself, and it starts at D+1 02:00 UTC, once the day is complete.
Backfills select days directly: ``--from-date 2026-11-18 --to-date
2026-11-20`` makes exactly the runs for the 18th, 19th and 20th. Registered
with Airflow through the ``airflow.plugins`` entry point of this package.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import DateTime

UTC = pendulum.UTC
DAY = timedelta(days=1)


class NightlyTimetable(Timetable):
    """Daily at ``start_after`` past midnight UTC, for the day that just ended."""

    periodic = True

    def __init__(self, start_after: timedelta = timedelta(hours=2)) -> None:
        self.start_after = start_after
        hours = int(start_after.total_seconds() // 3600)
        minutes = int(start_after.total_seconds() % 3600 // 60)
        self.description = f"daily at {hours:02d}:{minutes:02d} UTC, for the day before"

    @property
    def summary(self) -> str:
        return self.description

    def serialize(self) -> dict[str, Any]:
        return {"start_after_seconds": self.start_after.total_seconds()}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> NightlyTimetable:
        return cls(timedelta(seconds=data.get("start_after_seconds", 7200)))

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """A manual run for a date (midnight) means that day; one triggered at any
        other moment means the last day whose nightly time has passed."""
        day = midnight(run_after)
        if day != run_after:
            day = self.day_of_run(run_after)
        return DataInterval(start=day, end=day + DAY)

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            start = midnight(last_automated_data_interval.start) + DAY
        else:
            if restriction.earliest is None:
                return None
            start = midnight(restriction.earliest)
            if start < restriction.earliest:
                start += DAY
        if not restriction.catchup:
            # Without catch-up, missed days are left to backfills.
            start = max(start, self.day_of_run(pendulum.now(UTC)))
        if restriction.latest is not None and start > restriction.latest:
            return None
        end = start + DAY
        return DagRunInfo(run_after=end + self.start_after,
                          data_interval=DataInterval(start=start, end=end))

    def day_of_run(self, moment: DateTime) -> DateTime:
        """The day a run starting at ``moment`` is for."""
        return midnight(moment - self.start_after) - DAY


def midnight(moment: DateTime) -> DateTime:
    moment = pendulum.instance(moment).in_timezone(UTC)
    return pendulum.datetime(moment.year, moment.month, moment.day, tz=UTC)


class BatchscorePlugin(AirflowPlugin):
    name = "batchscore"
    timetables = [NightlyTimetable]  # noqa: RUF012 (Airflow reads a plain class attribute)
