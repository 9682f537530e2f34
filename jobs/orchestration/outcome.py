"""How a nightly run ends, and what is recorded.

``finish`` records a run that published as succeeded; ``empty_day`` records a date
without input events as skipped or failed, as the deployment's policy says, with an
alert; ``fail`` discards what a failed run staged and records why, and
``alert_failed`` raises its alert. The previous version keeps being served unless a run
succeeded.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from sqlalchemy.engine import Engine

from jobs.contracts.inputs import EmptyDayError, NothingToScoreError
from jobs.monitoring.alerts import raise_alert
from jobs.orchestration.plans import run_stage
from jobs.orchestration.run_state import RunState
from jobs.platform import runs
from jobs.platform.config import AlertSettings
from jobs.platform.redis_client import connect
from jobs.publish.postgres import PostgresPublisher
from jobs.publish.redis import retire_version

logger = logging.getLogger(__name__)


def finish(engine: Engine, state: RunState) -> RunState:
    """The ``record`` stage of the run's plan, then record the run as succeeded and remove
    its staging folder."""
    state = run_stage(engine, "", state, "record")
    runs.succeed(engine, state.run_id, state.stats)
    shutil.rmtree(state.folder, ignore_errors=True)
    return state


def empty_day(engine: Engine, state: RunState, nothing: NothingToScoreError, policy: str,
              alerts: AlertSettings, context: dict[str, Any] | None = None) -> None:
    """A date without input events: raise the ``empty`` alert, then record the run as
    ``policy`` says, skipped or failed; under ``fail`` raise :class:`EmptyDayError`. The
    run's stats say so (``empty_day``), for ``runs list`` and the report."""
    delivered = False
    try:
        delivered = raise_alert(engine, alerts, state.run_id, empty=str(nothing),
                                context=context).delivered
    except Exception as err:  # recording the run matters more; the log still tells
        logger.error("run %s: its empty-day alert could not be recorded (%s: %s)",
                     state.run_id, type(err).__name__, err)
    state.stats["empty_day"] = {"policy": policy, "alerted": delivered}
    if policy == "fail":
        message = f"empty day (BATCHSCORE_EMPTY_DAY=fail): {nothing}"
        fail(engine, state, message)
        raise EmptyDayError(message) from nothing
    skip(engine, state, nothing)


def skip(engine: Engine, state: RunState, reason: BaseException | str) -> None:
    """Record a run that had nothing new to score; it staged nothing, so nothing is
    discarded but its folder."""
    runs.skip(engine, state.run_id, str(reason), state.stats)
    shutil.rmtree(state.folder, ignore_errors=True)


def fail(engine: Engine, state: RunState, error: BaseException | str,
         redis_url: str | None = None) -> None:
    """Discard what the run staged (unless it was already switched in) and record why.

    Each part is tried on its own: if a store is out of reach, what it holds
    of the run is left for reconcile, and the error that failed the run is
    what the caller raises.
    """
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    discarded = False
    recorded = False
    try:
        discarded = (state.publish_id is not None
                     and PostgresPublisher(engine).discard(state.publish_id))
        runs.fail(engine, state.run_id, message, state.stats)
        recorded = True
        if discarded and redis_url is not None:
            retire_version(connect(redis_url), state.keys, state.publish_id)
    except Exception as err:  # the run's own error matters more; reconcile finishes this
        logger.error("run %s: could not clean up after its failure (%s: %s); "
                     "`batchscore reconcile` will", state.run_id, type(err).__name__, err)
    if recorded:
        shutil.rmtree(state.folder, ignore_errors=True)


def alert_failed(engine: Engine, settings: AlertSettings, run_id: str | None,
                 error: BaseException | str, context: dict[str, Any] | None = None) -> None:
    """Raise the ``failed`` alert of a run. An alert that cannot even be recorded is
    logged, never raised over the error that failed the run."""
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        raise_alert(engine, settings, run_id, failure=message, context=context)
    except Exception as err:
        logger.error("run %s: its failure alert could not be recorded (%s: %s)", run_id,
                     type(err).__name__, err)
