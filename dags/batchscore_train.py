"""
### batchscore_train

Trains implicit-feedback ALS on interactions up to the run's date, evaluates
it against the popularity baseline and the serving model on a time-based
holdout, registers the version, and promotes it when the gates pass
(`jobs.lifecycle.registry.promotion_decision`). A promotion updates the Airflow asset
`batchscore://models/serving`; a skipped promotion does not.

* **Schedule**: weekly, Sundays 03:00 UTC, **or** when a nightly crossed a
  retrain level (the asset `batchscore://signals/retrain`), so a drifted model
  is retrained the same night; trigger it by hand for an on-demand model.
  **Params**: `as_of` (default: the run's logical date, or for a run the signal
  started, the day it started), `family` (`als`, `ease`, or with `tune` `all`),
  ALS params; `tune` searches the family's parameters on a validation window
  before the holdout within `budget_minutes` first (the ALS params must then stay
  at their defaults) and records every trial with the version.
* **Connections**: `batchscore_postgres`, `spark_default`.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from importlib.util import find_spec

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from jobs.orchestration.assets import RETRAIN_SIGNAL, SERVING_MODEL

TRAIN_APPLICATION = find_spec("jobs.training.train").origin

with DAG(
    dag_id="batchscore_train",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 3 * * 0", timezone="UTC"),
                                 assets=[RETRAIN_SIGNAL]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["batchscore", "training"],
    doc_md=__doc__,
    default_args={
        "owner": "batchscore",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    },
    params={
        "as_of": Param(None, type=["null", "string"], format="date",
                       description="train on interactions up to this day"),
        "rank": Param(32, type="integer", minimum=1),
        "reg_param": Param(1.0, type="number", minimum=0),
        "alpha": Param(2.0, type="number", exclusiveMinimum=0),
        "max_iter": Param(10, type="integer", minimum=1),
        "family": Param("als", type="string", enum=["als", "ease", "all"],
                        description="all: with tune, both families, the better trained"),
        "tune": Param(False, type="boolean",
                      description="search the family's parameters within budget_minutes"),
        "budget_minutes": Param(15, type="number", exclusiveMinimum=0,
                                description="the search's time budget (with tune)"),
    },
) as dag:
    train = SparkSubmitOperator(
        task_id="train",
        conn_id="spark_default",
        application=TRAIN_APPLICATION,
        name="batchscore-train-{{ ds }}",
        application_args=[
            "--as-of", "{{ params.as_of or (logical_date or dag_run.run_after) | ds }}",
            "--rank", "{{ params.rank }}", "--reg-param", "{{ params.reg_param }}",
            "--alpha", "{{ params.alpha }}", "--max-iter", "{{ params.max_iter }}",
            "--family", "{{ params.family }}",
            "--tune={{ 'yes' if params.tune else 'no' }}",
            "--budget-minutes", "{{ params.budget_minutes }}",
            "--no-promote",
        ],
        # The URL travels in the environment, never on the logged command line.
        env_vars={
            "BATCHSCORE_DATABASE_URL": "{{ conn.batchscore_postgres.get_uri() }}",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        },
    )

    @task(outlets=[SERVING_MODEL])
    def promote(**context):
        from jobs.orchestration.airflow_tasks import promote as run

        return run(**context)

    train >> promote()
