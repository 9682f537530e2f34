"""
### batchscore_nightly

Scores every active user with the model serving as of the run's date and
publishes the top-K lists to PostgreSQL (`bi.recommendations`) and Redis.

* **Schedule**: daily at 02:00 UTC for the day that just ended. The logical
  date of a run *is* the day it scores (timetable `NightlyTimetable`: data
  interval `[D, D+1)`), so `airflow backfill create --from-date D1 --to-date D2`
  makes one run per day, each scored as of its own date.
* **Params**: `run_date` (override the day), `model_version` (pin a model, e.g.
  for a backfill), `serve_older_date` (let a backfilled date take over serving),
  `allow_future_date` (run a date after today, UTC, which is refused otherwise),
  `k`, `input_path`/`input_format` (a day's file to validate and load first),
  `canary_version`/`canary_fraction` or `shadow_version` (a scheduled canary or
  shadow run), `force` with `reason` (serve a rejected or rolled-back model).
* **Connections**: `batchscore_postgres`, `batchscore_redis`, `spark_default`.
* **Tasks**: `reconcile` repairs what earlier runs left; `validate_inputs`
  begins the run and fails it at once when Redis refuses writes (full, unable to
  save, a read-only replica), before the input is loaded; the version is written
  aside in both stores (`publish_postgres`, `publish_redis`) before `switch`
  serves it in PostgreSQL, then Redis, under the publish lock (a PostgreSQL
  advisory lock that CLI runs, backfills and rollbacks take too), so two runs
  never switch at once and an older date never takes the pointer back. Every
  task can be retried after a crash. See `schemas/publishing.md`.
  `monitor`, after `record_run`, stores the run's metrics (`bi.run_metrics`)
  and returns the levels they cross; its failure unpublishes nothing.
* A date with no events raises an `empty` alert (an empty day is almost always
  a broken upstream feed). With `BATCHSCORE_EMPTY_DAY=skip` (the default)
  `validate_inputs` records the run as skipped ("nothing new to score") and is
  skipped, and so are the tasks after it; with `fail` it records the run as
  failed and fails.
* After the run is recorded and monitored: `alert` raises one alert for the warn
  and retrain levels it crossed, `signal_retrain` updates the asset
  `batchscore://signals/retrain` (which starts `batchscore_train`) when a retrain
  level was crossed, and `export_metrics` writes its metrics for Prometheus; each
  is skipped when it has nothing to do. A failed task raises a `failed` alert
  (`on_failure_callback`). Alerts go where `BATCHSCORE_ALERT_CHANNEL` says.
* `report` writes the run's HTML report (`BATCHSCORE_HOME/reports/RUN_ID.html`)
  after it is recorded; a failed or skipped run gets its report when it is
  recorded. A report that cannot be written is logged and fails nothing.
* One scheduled run at a time (`max_active_runs=1`).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from importlib.util import find_spec

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param, task

from jobs.orchestration.assets import RETRAIN_SIGNAL
from jobs.orchestration.scheduling import NightlyTimetable

FIRST = "{{ ti.xcom_pull(task_ids='validate_inputs')"
SCORE_APPLICATION = find_spec("jobs.scoring.score").origin


def _callback(context):
    from jobs.orchestration.airflow_tasks import record_failure

    record_failure(context)


with DAG(
    dag_id="batchscore_nightly",
    schedule=NightlyTimetable(start_after=timedelta(hours=2)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["batchscore", "scoring"],
    doc_md=__doc__,
    default_args={
        "owner": "batchscore",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": _callback,
    },
    params={
        "run_date": Param(None, type=["null", "string"], format="date",
                          description="score this day instead of the logical date's"),
        "model_version": Param(None, type=["null", "integer"], minimum=1,
                               description="pin a model version"),
        "serve_older_date": Param(False, type="boolean",
                                  description="serve this date even if a later one is served"),
        "allow_future_date": Param(False, type="boolean",
                                   description="run a date after today (UTC); refused "
                                               "otherwise, since it would take over serving"),
        "k": Param(50, type="integer", minimum=1, description="items per user"),
        "input_path": Param(None, type=["null", "string"],
                            description="a day's interactions file to validate and load"),
        "input_format": Param(None, type=["null", "string"],
                              enum=[None, "csv", "movielens", "parquet"],
                              description="the input file's format (default: parquet for "
                                          "a .parquet file, else csv)"),
        "canary_version": Param(None, type=["null", "integer"], minimum=1,
                                description="serve this model version to canary_fraction "
                                            "of the users"),
        "canary_fraction": Param(None, type=["null", "number"], exclusiveMinimum=0,
                                 exclusiveMaximum=1,
                                 description="share of users for canary_version"),
        "shadow_version": Param(None, type=["null", "integer"], minimum=1,
                                description="score this model version beside the served "
                                            "one without serving it"),
        "force": Param(False, type="boolean",
                       description="serve a rejected or rolled-back model (needs reason)"),
        "reason": Param(None, type=["null", "string"],
                        description="why force: recorded in the model's status history"),
    },
) as dag:

    @task
    def reconcile(**context):
        from jobs.orchestration.airflow_tasks import reconcile as run

        return run(**context)

    @task
    def validate_inputs(**context):
        from jobs.orchestration.airflow_tasks import validate_inputs as run

        return run(**context)

    score = SparkSubmitOperator(
        task_id="score",
        conn_id="spark_default",
        application=SCORE_APPLICATION,
        name="batchscore-score-{{ ds }}",
        application_args=[
            "--interactions", FIRST + "['interactions'] }}",
            "--run-date", FIRST + "['run_date'] }}",
            "--model-path", FIRST + "['model_path'] }}",
            "--output", FIRST + "['work_dir'] }}",
            "--k", FIRST + "['k'] }}",
            "--canary-model-path", FIRST + "['canary_model_path'] }}",
            "--canary-fraction", FIRST + "['canary_fraction'] }}",
        ],
        env_vars={"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable},
    )

    @task
    def validate_predictions(**context):
        from jobs.orchestration.airflow_tasks import validate_predictions as run

        run(**context)

    @task
    def publish_postgres(**context):
        from jobs.orchestration.airflow_tasks import publish_postgres as run

        return run(**context)

    @task
    def publish_redis(**context):
        from jobs.orchestration.airflow_tasks import publish_redis as run

        run(**context)

    @task
    def switch(**context):
        from jobs.orchestration.airflow_tasks import switch as run

        return run(**context)

    @task
    def smoke_check(**context):
        from jobs.orchestration.airflow_tasks import smoke_check as run

        run(**context)

    @task
    def record_run(**context):
        from jobs.orchestration.airflow_tasks import record_run as run

        return run(**context)

    @task
    def alert(**context):
        from jobs.orchestration.airflow_tasks import alert as run

        return run(**context)

    @task(outlets=[RETRAIN_SIGNAL])
    def signal_retrain(**context):
        from jobs.orchestration.airflow_tasks import signal_retrain as run

        return run(**context)

    @task
    def export_metrics(**context):
        from jobs.orchestration.airflow_tasks import export_metrics as run

        return run(**context)

    @task
    def report(**context):
        from jobs.orchestration.airflow_tasks import report as run

        return run(**context)

    @task
    def monitor(**context):
        from jobs.orchestration.airflow_tasks import monitor as run

        return run(**context)

    monitored = (reconcile() >> validate_inputs() >> score >> validate_predictions()
                 >> publish_postgres() >> publish_redis() >> switch() >> smoke_check()
                 >> record_run() >> monitor())
    # After `monitor`, whose XCom names the crossed levels.
    monitored >> [alert(), signal_retrain(), export_metrics(), report()]
