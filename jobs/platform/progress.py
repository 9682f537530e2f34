"""Progress of long steps: a bar for a person at a terminal, a few log lines otherwise.

:func:`progress` reports a count towards a known (or unknown) total;
:func:`spark_progress` reports the Spark stages that run inside a block of
code, read from Spark's status tracker. Both go to standard error, and both
decide the same way, in :func:`to_terminal`, whether anyone is watching:
at a terminal they draw `tqdm <https://tqdm.github.io>`_ bars with counts,
rate and time left; anywhere else (Airflow, CI, a pipe) they log plain lines,
so that task logs get a handful of lines per step rather than one per batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, TYPE_CHECKING

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

if TYPE_CHECKING:
    from pyspark.core.status import StatusTracker
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

# How often a bar may be redrawn: often enough to look live, rarely enough to cost nothing.
BAR_REFRESH_SECONDS = 0.1
# How often Spark's status tracker is read while a bar shows it.
SPARK_POLL_SECONDS = 0.5
# How often a line says which Spark stages run, when nobody watches a bar.
SPARK_LINE_SECONDS = 30.0
# How long to wait, once the block is done, for Spark's status store to record
# its last jobs as ended: listeners learn of them a moment after the action returns.
SPARK_SETTLE_SECONDS = 2.0
# Local properties that name a thread's Spark job group; saved and restored around a block.
JOB_GROUP_PROPERTIES = ("spark.jobGroup.id", "spark.job.description",
                        "spark.job.interruptOnCancel")


def to_terminal(stream: IO[str]) -> bool:
    """Whether progress written to ``stream`` is seen by a person: a bar, not log lines.

    The one place batchscore decides it; pass a stream whose ``isatty`` says
    what you want to test either way.
    """
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream: nobody is watching it
        return False


def terminal_size(stream: IO[str]) -> tuple[int, int] | None:
    """``stream``'s terminal's columns and lines; None when it is no terminal."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return size.columns, size.lines


class Progress:
    """One step's count: call it with how many are done so far, close it when the step ends.

    Use it as a context manager, or pass it where a ``Callable[[int], None]``
    is expected (the publishers' ``progress`` callbacks).
    """

    def __call__(self, done: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class Bar(Progress):
    """A tqdm bar on a terminal; console log lines are written above it while it shows.

    ``transient`` bars are wiped when closed (the Spark stages, many and short);
    ``initial`` is the count already done when it starts (not counted in its
    rate); ``refresh_seconds`` is the least time between two redraws (0: every update).
    """

    def __init__(self, description: str, total: int | None, unit: str, stream: IO[str], *,
                 scale: bool = False, transient: bool = False, initial: int = 0,
                 refresh_seconds: float = BAR_REFRESH_SECONDS, redirect_logs: bool = True
                 ) -> None:
        self._logs = contextlib.ExitStack()
        if redirect_logs:
            # Otherwise a log line written while the bar shows breaks it in two.
            self._logs.enter_context(logging_redirect_tqdm())
        size = terminal_size(stream)
        # A terminal that says it has no size (a pseudo-terminal nobody sized,
        # as `docker run -t` gives without one) would get empty bars.
        fixed = {} if size is None or all(size) else {"ncols": 80, "nrows": 20}
        # Redrawn by time alone (miniters=1): tqdm's own guess of how many
        # updates to skip assumes even steps, and would hide a small last block.
        self._bar = tqdm(total=total, desc=description, unit=unit, unit_scale=scale,
                         file=stream, leave=not transient, dynamic_ncols=not fixed,
                         initial=initial, mininterval=refresh_seconds, miniters=1, **fixed)

    def __call__(self, done: int) -> None:
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
        self._logs.close()


class Lines(Progress):
    """Log lines for nobody watching: ``redis: 120 / 1000 users written`` at each tenth.

    Without a total it logs nothing (the step logs what it did when done);
    closed on a count other than the last one logged, it logs where it ended.
    """

    def __init__(self, description: str, total: int | None, unit: str, verb: str,
                 scale: bool = False) -> None:
        self.description, self.total, self.unit, self.verb = description, total, unit, verb
        self.scale = scale
        self._step = max(1, total // 10) if total is not None else 0
        self._next_at = self._step
        self._done = 0
        self._logged: int | None = None

    def __call__(self, done: int) -> None:
        self._done = done
        if self.total is not None and done >= self._next_at:
            self._log(done)
            self._next_at = (done // self._step + 1) * self._step

    def close(self) -> None:
        if self.total is not None and self._logged != self._done:
            self._log(self._done)

    def _log(self, done: int) -> None:
        total = self.total or 0
        if self.scale:
            amounts = f"{scaled(done)}{self.unit} / {scaled(total)}{self.unit}"
        else:
            amounts = f"{done} / {total} {self.unit}"
        logger.info("%s: %s %s", self.description, amounts, self.verb)
        self._logged = done


def scaled(count: int) -> str:
    """``12.3M`` for 12,345,678, as tqdm shows it; counts under 1,000 as they are."""
    return str(count) if count < 1000 else tqdm.format_sizeof(count)


def progress(description: str, total: int | None, unit: str = "items", *,
             verb: str = "done", scale: bool = False, stream: IO[str] | None = None,
             refresh_seconds: float = BAR_REFRESH_SECONDS) -> Progress:
    """How far a long step is, shown on ``stream`` (standard error by default).

    At a terminal: a bar ``description: 12%|#2 | 120/1000 [00:01<00:07, 110users/s]``.
    Elsewhere: log lines ``description: 120 / 1000 users written`` (``verb``
    ends them) at each tenth of ``total``. ``total`` None means unknown: the
    bar counts without an end, the lines say nothing. ``scale`` shows large
    counts as 12.3M (use it for bytes, with ``unit="B"``). Call the result
    with the count done so far; close it (or use ``with``) when the step ends.
    """
    stream = sys.stderr if stream is None else stream
    if to_terminal(stream):
        return Bar(description, total, unit, stream, scale=scale,
                   refresh_seconds=refresh_seconds)
    return Lines(description, total, unit, verb, scale)


@dataclass
class StageCount:
    """One Spark stage that ran: its tasks, and how many of them completed."""

    stage_id: int
    name: str
    tasks: int
    completed: int


@dataclass
class SparkReport:
    """What ran in a :func:`spark_progress` block, as Spark's status tracker saw it.

    Stages Spark skipped (their output was already there) are not counted.
    Complete once the block has ended.
    """

    description: str
    jobs: set[int] = field(default_factory=set)
    stages: dict[int, StageCount] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def tasks(self) -> int:
        return sum(stage.tasks for stage in self.stages.values())

    @property
    def completed_tasks(self) -> int:
        return sum(stage.completed for stage in self.stages.values())

    def summary(self) -> str:
        return (f"{self.description}: {plural(len(self.jobs), 'Spark job')}, "
                f"{plural(len(self.stages), 'stage')}, {self.completed_tasks} / {self.tasks} "
                f"tasks done in {self.seconds:.1f} s")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class StagePoller:
    """Reads the stages of one Spark job group from the status tracker, and shows them.

    With a ``stream`` (a terminal) each running stage gets a transient bar of
    its tasks; without one, :meth:`line` says which stages run. Only stages
    that are active, or that belong to a job that just ended, are read, so a
    poll costs a few calls to the driver whatever the number of stages.
    """

    def __init__(self, tracker: StatusTracker, group: str, report: SparkReport,
                 stream: IO[str] | None = None) -> None:
        self.tracker, self.group, self.report, self.stream = tracker, group, report, stream
        self._job_stages: dict[int, list[int]] = {}
        self._ended_jobs: set[int] = set()
        self._running: set[int] = set()
        self._closed: set[int] = set()
        self._bars: dict[int, Bar] = {}

    def poll(self) -> bool:
        """Read the group's jobs and stages once; whether all its jobs have ended."""
        active = set(self.tracker.getActiveStageIds())
        all_ended = True
        for job_id in self.tracker.getJobIdsForGroup(self.group):
            if job_id in self._ended_jobs:
                continue
            job = self.tracker.getJobInfo(job_id)
            if job is None:
                continue
            self.report.jobs.add(job_id)
            stages = self._job_stages.setdefault(job_id, list(job.stageIds))
            ended = job.status in ("SUCCEEDED", "FAILED")
            for stage_id in stages:
                if (stage_id in active or stage_id in self._running
                        or (ended and stage_id not in self._closed)):
                    # The tracker can list a stage as active for a moment after
                    # its job has ended; an ended job's stages are done.
                    self._read_stage(stage_id, stage_id in active and not ended)
            if ended:
                self._ended_jobs.add(job_id)
            else:
                all_ended = False
        return all_ended

    def _read_stage(self, stage_id: int, active: bool) -> None:
        info = self.tracker.getStageInfo(stage_id)
        if info is None:
            return
        if not active and info.numCompletedTasks == 0 and stage_id not in self._running:
            self._closed.add(stage_id)  # skipped: an earlier job left its output
            return
        self.report.stages[stage_id] = StageCount(stage_id, info.name, info.numTasks,
                                                  info.numCompletedTasks)
        # A stage first seen already done ran between two polls: counted, not drawn.
        if self.stream is not None and (active or stage_id in self._bars):
            bar = self._bars.get(stage_id)
            if bar is None:
                # Starts at the tasks already done, so its rate counts only what it saw.
                bar = self._bars[stage_id] = Bar(
                    f"{self.report.description}, stage {stage_id} ({operation(info.name)})",
                    info.numTasks, "tasks", self.stream, transient=True,
                    initial=info.numCompletedTasks,
                    # Polls are already spaced; every one should show.
                    refresh_seconds=0, redirect_logs=False)
            bar(info.numCompletedTasks)
        if active:
            self._running.add(stage_id)
        else:
            self._running.discard(stage_id)
            self._closed.add(stage_id)
            if stage_id in self._bars:
                self._bars.pop(stage_id).close()

    def line(self) -> str | None:
        """What runs now, for a log line; None when no stage runs."""
        running = [self.report.stages[stage_id] for stage_id in sorted(self._running)
                   if stage_id in self.report.stages]
        if not running:
            return None
        stages = "; ".join(f"stage {stage.stage_id} ({stage.name}) {stage.completed} / "
                           f"{stage.tasks} tasks" for stage in running)
        return (f"{self.report.description}: running {stages}; "
                f"{len(self._ended_jobs)} of {plural(len(self.report.jobs), 'Spark job')} done")

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def operation(stage_name: str) -> str:
    """``aggregate`` of ``aggregate at ALS.scala:1862``: short enough for a bar's label.

    Stages Spark SQL submits from its own threads are named after a Scala
    closure (``$anonfun$withThreadLocalCaptured$2``); they are called ``query``.
    """
    name = stage_name.split(" at ", 1)[0]
    return name if name.isidentifier() else "query"


@contextlib.contextmanager
def spark_progress(spark: SparkSession, description: str, *, stream: IO[str] | None = None,
                   poll_seconds: float = SPARK_POLL_SECONDS,
                   line_seconds: float = SPARK_LINE_SECONDS) -> Iterator[SparkReport]:
    """Show the Spark stages the block runs, and log a summary when it ends.

    The block's jobs are put in a job group of their own (its description,
    ``description``, is what the Spark UI shows too; the thread's previous
    group comes back afterwards), and a background thread reads that group's
    stages from ``SparkContext.statusTracker()``: at a terminal, a bar per
    running stage with its completed and total tasks, every ``poll_seconds``;
    elsewhere, a line every ``line_seconds`` naming the running stages. Then
    one line: jobs, stages and tasks done, and the time taken. Yields the
    :class:`SparkReport`, complete once the block has ended. Progress never
    fails the block: if the tracker cannot be read, the block runs on unwatched.
    Keep ``description`` short: it labels each bar.
    """
    stream = sys.stderr if stream is None else stream
    terminal = to_terminal(stream)
    context = spark.sparkContext
    report = SparkReport(description)
    previous = {key: context.getLocalProperty(key) for key in JOB_GROUP_PROPERTIES}
    group = f"batchscore-{uuid.uuid4().hex[:12]}"
    context.setJobGroup(group, description)
    poller = StagePoller(context.statusTracker(), group, report,
                         stream if terminal else None)
    stop = threading.Event()

    def watch() -> None:
        interval = poll_seconds if terminal else line_seconds
        while not stop.wait(interval):
            try:
                poller.poll()
            except Exception as err:  # progress must never fail the job it watches
                logger.debug("%s: Spark progress stopped: %s", description, err)
                return
            line = None if terminal else poller.line()
            if line is not None:
                logger.info("%s", line)

    started = time.monotonic()
    watcher = threading.Thread(target=watch, name=f"progress-{group}", daemon=True)
    with contextlib.ExitStack() as stack:
        if terminal:
            stack.enter_context(logging_redirect_tqdm())
        watcher.start()
        try:
            yield report
        finally:
            stop.set()
            watcher.join()
            report.seconds = time.monotonic() - started
            try:
                settle_by = time.monotonic() + SPARK_SETTLE_SECONDS
                while not poller.poll() and time.monotonic() < settle_by:
                    time.sleep(0.05)
            except Exception as err:  # as above: the block's own outcome matters
                logger.debug("%s: Spark progress not read at the end: %s", description, err)
            poller.close()
            for key, value in previous.items():
                context.setLocalProperty(key, value)  # None removes it
            if report.jobs:
                logger.info("%s", report.summary())
