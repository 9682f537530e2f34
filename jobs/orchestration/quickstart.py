"""The quick start: sample data -> train -> one nightly run, reusing whatever is there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from jobs.data.generate import GenerateConfig, generate_and_load, last_whole_day
from jobs.data.store import newest_event_date
from jobs.lifecycle import registry
from jobs.orchestration import local_airflow, nightly
from jobs.orchestration.run_state import NightlyConfig
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import statement
from jobs.training import train

# The sample data set: small enough for a few minutes on 2 cores.
SAMPLE = {"users": 3000, "items": 800, "days": 60, "seed": 7}


@dataclass(frozen=True)
class QuickstartResult:
    run_date: date
    publish_id: int
    model_version: int
    sample_user: int | None


def quickstart(settings: Settings, *, through_airflow: bool = True,
               say: Callable[[str], None] = print) -> QuickstartResult:
    """Make sure there are interactions, a serving model and a published nightly for the
    newest day, doing only what is missing; ``say`` hears each step as it starts."""
    engine = services.database(settings)
    run_date = newest_event_date(engine)
    if run_date is None:
        config = GenerateConfig(**SAMPLE, end_date=last_whole_day())
        say(f"1/3 generating a sample data set: {config.users} users x {config.items} items "
            f"over {config.days} days")
        generate_and_load(engine, config)
        run_date = config.end_date
    else:
        say("1/3 interactions already loaded: reusing them")
    model = registry.serving_or_none(engine)
    if model is not None:
        say(f"2/3 model version {model.version} already serving: reusing it")
    else:
        say("2/3 training a model (Spark ALS)")
        model = train.run(train.TrainConfig(
            database_url=services.database_url(settings, services.WRITER), home=settings.home,
            as_of=run_date, spark_master=settings.spark_master, als=train.AlsParams(),
            names=settings.names, history_uri=settings.history_uri))
    with engine.connect() as conn:
        published = conn.execute(statement(conn,
            "SELECT publish_id FROM {schema}.prediction_versions"
            " WHERE status = 'published' AND logical_date = :d"), {"d": run_date}).scalar()
    if published is not None:
        say(f"3/3 {run_date} already published (version {published}): reusing it")
    elif through_airflow:
        say(f"3/3 nightly run for {run_date} through Airflow (the batchscore_nightly DAG)")
        published = local_airflow.run_nightly(settings, run_date).publish_id
    else:
        say(f"3/3 nightly run for {run_date}")
        published = nightly.run(NightlyConfig(
            run_date=run_date, database_url=services.database_url(settings, services.WRITER),
            redis_url=services.redis_url(settings, "writer"), home=settings.home,
            k=settings.top_k, spark_master=settings.spark_master,
            names=settings.names, history_uri=settings.history_uri,
            keep_versions=settings.keep_versions, alerts=settings.alerts,
            empty_day=settings.empty_day)).publish_id
    with engine.connect() as conn:
        user = conn.execute(statement(conn,
            "SELECT user_id FROM {bi}.recommendations ORDER BY user_id LIMIT 1")).scalar()
    engine.dispose()
    return QuickstartResult(run_date=run_date, publish_id=published,
                            model_version=model.version, sample_user=user)
