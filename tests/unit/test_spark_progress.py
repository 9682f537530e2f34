"""Spark progress: the stages a block runs, read from Spark's status tracker while it runs."""

import io
import logging
import re
import time

import pytest

from jobs.platform.progress import (
    JOB_GROUP_PROPERTIES,
    SparkReport,
    StagePoller,
    operation,
    spark_progress,
)

pytestmark = pytest.mark.spark

LOGGER = "jobs.platform.progress"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def slow(value: int) -> tuple[int, int]:
    time.sleep(0.02)   # a map task takes 0.2 s: long enough to be seen running
    return value % 3, 1


def test_a_bar_per_stage_with_the_jobs_tasks(spark, caplog) -> None:
    context = spark.sparkContext
    context.parallelize(range(10), 3).count()   # before the block: not counted
    # 4 map tasks, then a shuffle into 2 reduce tasks
    counts = context.parallelize(range(40), 4).map(slow).reduceByKey(lambda a, b: a + b, 2)
    terminal = Terminal()
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            spark_progress(spark, "shuffle", stream=terminal, poll_seconds=0.05) as report:
        assert sorted(counts.collect()) == [(0, 14), (1, 13), (2, 13)]
        # the second job reads the first one's shuffle: its map stage is skipped
        assert counts.count() == 3
    stages = [report.stages[stage_id] for stage_id in sorted(report.stages)]
    assert [(operation(stage.name), stage.tasks, stage.completed) for stage in stages] == [
        ("reduceByKey", 4, 4), ("collect", 2, 2), ("count", 2, 2)]
    assert len(report.jobs) == 2
    assert (report.completed_tasks, report.tasks) == (8, 8)
    shown = terminal.getvalue()
    map_stage = stages[0]
    # drawn while it runs, and as it ends (stages over between two polls are only counted)
    assert re.search(rf"shuffle, stage {map_stage.stage_id} \(reduceByKey\): +(0|25|50|75)%\|",
                     shown)
    assert f"shuffle, stage {map_stage.stage_id} (reduceByKey): 100%|" in shown
    assert "| 4/4 [" in shown
    [summary] = logged(caplog)
    assert re.fullmatch(r"shuffle: 2 Spark jobs, 3 stages, 8 / 8 tasks done in \d+\.\d s",
                        summary)


def test_without_a_terminal_a_line_names_the_running_stage(spark, caplog) -> None:
    def slower(value: int) -> int:
        time.sleep(0.3)
        return value

    with caplog.at_level(logging.INFO, logger=LOGGER), \
            spark_progress(spark, "slow", stream=io.StringIO(), line_seconds=0.2) as report:
        assert spark.sparkContext.parallelize(range(4), 4).map(slower).sum() == 6
    [stage] = report.stages.values()
    assert (stage.tasks, stage.completed) == (4, 4)
    lines = logged(caplog)
    running = [line for line in lines if line.startswith("slow: running")]
    assert running, lines
    for line in running:
        assert re.fullmatch(rf"slow: running stage {stage.stage_id} \(sum at .+\) [0-4] / 4 "
                            r"tasks; 0 of 1 Spark job done", line), line
    assert re.fullmatch(r"slow: 1 Spark job, 1 stage, 4 / 4 tasks done in \d+\.\d s",
                        lines[-1])


def test_the_threads_job_group_comes_back(spark) -> None:
    context = spark.sparkContext
    context.setJobGroup("outer", "outer work")
    try:
        with spark_progress(spark, "inner", stream=io.StringIO()):
            assert context.getLocalProperty("spark.jobGroup.id").startswith("batchscore-")
            assert context.getLocalProperty("spark.job.description") == "inner"
        assert context.getLocalProperty("spark.jobGroup.id") == "outer"
        assert context.getLocalProperty("spark.job.description") == "outer work"
    finally:
        for key in JOB_GROUP_PROPERTIES:
            context.setLocalProperty(key, None)
    with spark_progress(spark, "alone", stream=io.StringIO()):
        pass
    assert context.getLocalProperty("spark.jobGroup.id") is None


class BrokenTracker:
    def __getattr__(self, name):
        raise RuntimeError("the driver is gone")


class FakeContext:
    def __init__(self) -> None:
        self.properties: dict[str, str | None] = {}

    def getLocalProperty(self, key: str) -> str | None:  # noqa: N802 (Spark's names)
        return self.properties.get(key)

    def setLocalProperty(self, key: str, value: str | None) -> None:  # noqa: N802
        self.properties[key] = value

    def setJobGroup(self, group: str, description: str) -> None:  # noqa: N802
        self.properties["spark.jobGroup.id"] = group

    def statusTracker(self) -> BrokenTracker:  # noqa: N802
        return BrokenTracker()


class FakeSession:
    sparkContext = FakeContext()  # noqa: N815


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()], ids=["lines", "terminal"])
def test_a_tracker_that_fails_never_fails_the_block(stream) -> None:
    with spark_progress(FakeSession(), "work", stream=stream, poll_seconds=0.01,
                        line_seconds=0.01) as report:
        time.sleep(0.05)
    assert report.jobs == set()
    assert FakeSession.sparkContext.properties["spark.jobGroup.id"] is None


def test_a_bars_label_names_the_stages_operation() -> None:
    assert operation("aggregate at ALS.scala:1862") == "aggregate"
    assert operation("collect at /srv/jobs/training/holdout.py:66") == "collect"
    assert operation("$anonfun$withThreadLocalCaptured$2 at FutureTask.java:317") == "query"


class EndedJobTracker:
    """A status tracker caught between Spark's events: the job has succeeded,
    its stage is still listed as active."""

    def __init__(self) -> None:
        self.job = type("Job", (), {"status": "SUCCEEDED", "stageIds": [7]})()
        self.stage = type("Stage", (), {"name": "sum at x.py:1", "numTasks": 4,
                                        "numCompletedTasks": 4})()

    def getActiveStageIds(self) -> list[int]:  # noqa: N802 (Spark's names)
        return [7]

    def getJobIdsForGroup(self, group: str) -> list[int]:  # noqa: N802 (Spark's names)
        return [3]

    def getJobInfo(self, job_id: int):  # noqa: N802 (Spark's names)
        return self.job

    def getStageInfo(self, stage_id: int):  # noqa: N802 (Spark's names)
        return self.stage


def test_a_stage_of_an_ended_job_is_not_called_running() -> None:
    report = SparkReport("slow")
    poller = StagePoller(EndedJobTracker(), "group", report)
    assert poller.poll()
    assert poller.line() is None
    assert report.stages[7].completed == 4
