"""The kinds of nightly run, each a plan of publish steps.

Every run goes through the same publish stages in order; a plan says which steps each
stage runs for its kind of run (serve, canary or shadow). The nightly DAG has a task per
stage (``publish_postgres``, ``publish_redis``, ``switch``, ``smoke_check``), then
``record_run`` runs the ``record`` stage; a run in this process runs them all in turn.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from sqlalchemy.engine import Engine

from jobs.orchestration.checks import compare_shadow, smoke_check
from jobs.orchestration.model_choice import record_trial
from jobs.orchestration.publish_steps import (
    keep_aside,
    publish_postgres,
    publish_redis,
    record_canary_users,
    switch,
)
from jobs.orchestration.run_state import RunState

# A step of a plan: (engine, the writer's Redis URL, the run's state) -> the run's state.
Step = Callable[[Engine, str, RunState], RunState]


def postgres_only(step: Callable[[Engine, RunState], RunState]) -> Step:
    """A step that uses PostgreSQL only, taking the arguments every step of a plan takes."""

    @functools.wraps(step)
    def without_redis(engine: Engine, redis_url: str, state: RunState) -> RunState:
        return step(engine, state)

    return without_redis


# The publish stages every run goes through, in order; "record" follows, when the run
# is recorded.
PUBLISH_STAGES = ("write_postgres", "write_redis", "switch", "check")
PLANS: dict[str, dict[str, tuple[Step, ...]]] = {
    # Score with the serving model and serve the result in both stores.
    "serve": {"write_postgres": (postgres_only(publish_postgres),),
              "write_redis": (publish_redis,), "switch": (switch,), "check": (smoke_check,),
              "record": ()},
    # Serve a candidate to a stable share of users, the serving model to the rest.
    "canary": {"write_postgres": (postgres_only(publish_postgres),
                                  postgres_only(record_canary_users)),
               "write_redis": (publish_redis,), "switch": (switch,),
               "check": (smoke_check,), "record": (postgres_only(record_trial),)},
    # Store a candidate's lists beside the served ones, serve nothing, report the difference.
    "shadow": {"write_postgres": (postgres_only(publish_postgres),), "write_redis": (),
               "switch": (postgres_only(keep_aside),),
               "check": (postgres_only(compare_shadow),),
               "record": (postgres_only(record_trial),)},
}


def run_stage(engine: Engine, redis_url: str, state: RunState, stage: str) -> RunState:
    """The steps of one stage of the run's plan; the Airflow DAG runs a task per stage."""
    for step in PLANS[state.kind][stage]:
        state = step(engine, redis_url, state)
    return state


def publish(engine: Engine, redis_url: str, state: RunState) -> RunState:
    """The publish stages of the run's plan, in order."""
    for stage in PUBLISH_STAGES:
        run_stage(engine, redis_url, state, stage)
    return state
