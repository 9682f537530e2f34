"""
### batchscore_rescore

When a model version is promoted (the asset `batchscore://models/serving`,
updated by `batchscore_train`'s `promote`), scores the served date again with
it, so the new model serves from now rather than from the next nightly.

* **Schedule**: on the asset `batchscore://models/serving`.
* **Tasks**: `plan` names the served date and the model that now serves
  (skipped when nothing is served yet, or that model already scored it);
  `rescore` triggers `batchscore_nightly` for that date with that model pinned
  (`{"run_date": ..., "model_version": ...}`), which replaces the date's version.
* **Connections**: `batchscore_postgres`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from jobs.orchestration.assets import SERVING_MODEL

with DAG(
    dag_id="batchscore_rescore",
    schedule=[SERVING_MODEL],
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
    },
) as dag:

    @task
    def plan(**context):
        from jobs.orchestration.airflow_tasks import rescore_plan as run

        return run(**context)

    rescore = TriggerDagRunOperator(
        task_id="rescore",
        trigger_dag_id="batchscore_nightly",
        conf="{{ ti.xcom_pull(task_ids='plan') | tojson }}",
        # No logical date: the scheduled run of that date keeps its own; run_date says the day.
        logical_date=None,
    )

    plan() >> rescore
