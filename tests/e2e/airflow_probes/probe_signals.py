"""Probe DAGs for the scheduler test (copied beside the real DAGs in its DAG folder).

`probe_monitor` hands the real `signal_retrain` and `alert` callables a `monitor`
XCom of the agreed shape, crossed retrain level or none, as the nightly's
monitor would; `probe_promotion` updates the serving-model asset as
`batchscore_train`'s `promote` does after a promotion; `probe_failure` fails a
task whose failure callback is the nightly's.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from jobs.orchestration.assets import RETRAIN_SIGNAL, SERVING_MODEL

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG(dag_id="probe_monitor", schedule=None, start_date=START, catchup=False,
         params={"run_id": Param("", type="string"), "retrain": Param(False, type="boolean")}):

    @task
    def monitor(**context):
        params = context["params"]
        crossings = ([{"metric": "input.item_popularity_psi", "segment": "vs_training",
                       "value": 0.41, "level": "retrain", "threshold": 0.25,
                       "direction": "above"}] if params["retrain"] else [])
        return {"run_id": params["run_id"], "crossings": crossings,
                "retrain": params["retrain"]}

    @task(outlets=[RETRAIN_SIGNAL])
    def signal_retrain(**context):
        from jobs.orchestration.airflow_tasks import signal_retrain as run

        return run(**context)

    @task
    def alert(**context):
        from jobs.orchestration.airflow_tasks import alert as run

        return run(**context)

    monitor() >> [signal_retrain(), alert()]

with DAG(dag_id="probe_promotion", schedule=None, start_date=START, catchup=False):

    @task(outlets=[SERVING_MODEL])
    def promoted():
        return "promoted"

    promoted()


def _callback(context):
    from jobs.orchestration.airflow_tasks import record_failure

    record_failure(context)


with DAG(dag_id="probe_failure", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 0, "on_failure_callback": _callback}):

    @task
    def publish():
        raise RuntimeError("lost postgresql://batchscore:pw-in-a-url@db:5432/batchscore")

    publish()
