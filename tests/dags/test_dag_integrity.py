"""The DAG files: they import cleanly, declare what operations needs, and wire the tasks."""

import itertools
from datetime import UTC, date, datetime, timedelta

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.timetables.base import DataInterval, TimeRestriction

from jobs.orchestration.airflow_tasks import resolve_run_date
from jobs.orchestration.scheduling import NightlyTimetable
from tests.dags.conftest import DAGS_FOLDER


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_every_dag_imports_without_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"batchscore_nightly", "batchscore_train", "batchscore_rescore"}


@pytest.mark.parametrize("dag_id", ["batchscore_nightly", "batchscore_train",
                                    "batchscore_rescore"])
def test_dags_have_tags_owner_retries_and_docs(dagbag: DagBag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert "batchscore" in dag.tags
    assert dag.doc_md and dag_id in dag.doc_md
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    for task in dag.tasks:
        assert task.owner == "batchscore"
        assert task.retries >= 2
        assert task.retry_exponential_backoff


def test_nightly_task_graph(dagbag: DagBag) -> None:
    dag = dagbag.dags["batchscore_nightly"]
    order = ["reconcile", "validate_inputs", "score", "validate_predictions",
             "publish_postgres", "publish_redis", "switch", "smoke_check", "record_run",
             "monitor"]
    for upstream, downstream in itertools.pairwise(order):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task("monitor").downstream_task_ids == {"alert", "signal_retrain",
                                                           "export_metrics", "report"}
    for after in ("alert", "signal_retrain", "export_metrics", "report"):
        assert dag.get_task(after).downstream_task_ids == set()
    # Only the retrain signal updates an asset.
    assert {task.task_id: [asset.uri for asset in task.outlets] for task in dag.tasks
            if task.outlets} == {"signal_retrain": ["batchscore://signals/retrain"]}
    score = dag.get_task("score")
    assert type(score).__name__ == "SparkSubmitOperator"
    assert score._conn_id == "spark_default"
    # A scheduled canary reaches the scoring job: both options always, empty without one.
    options = score.application_args[::2]
    assert options == ["--interactions", "--run-date", "--model-path", "--output", "--k",
                       "--canary-model-path", "--canary-fraction"]
    assert score.application.endswith("jobs/scoring/score.py")
    assert all(task.on_failure_callback for task in dag.tasks)
    # A date with no events skips validate_inputs; all_success skips every task after it.
    assert {task.trigger_rule for task in dag.tasks} == {"all_success"}
    assert set(dag.params) == {"run_date", "model_version", "serve_older_date",
                               "allow_future_date", "k",
                               "input_path", "input_format", "canary_version",
                               "canary_fraction", "shadow_version", "force", "reason"}


def test_train_task_graph_emits_the_serving_model_asset(dagbag: DagBag) -> None:
    dag = dagbag.dags["batchscore_train"]
    assert dag.get_task("train").downstream_task_ids == {"promote"}
    assert type(dag.get_task("train")).__name__ == "SparkSubmitOperator"
    assert [asset.uri for asset in dag.get_task("promote").outlets] == [
        "batchscore://models/serving"]
    # The database URL reaches spark-submit through the environment, not the command line.
    train = dag.get_task("train")
    assert not any("conn." in arg for arg in train.application_args)
    assert "conn.batchscore_postgres" in train.env_vars["BATCHSCORE_DATABASE_URL"]
    # Tuning is off unless asked for, and its options always reach the job.
    assert {name: dag.params[name] for name in ("tune", "family", "budget_minutes")} == {
        "tune": False, "family": "als", "budget_minutes": 15}
    assert "--tune={{ 'yes' if params.tune else 'no' }}" in train.application_args
    assert {"--family", "--budget-minutes"} <= set(train.application_args)


def test_train_runs_weekly_or_on_the_retrain_signal(dagbag: DagBag) -> None:
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    schedule = dagbag.dags["batchscore_train"].timetable
    assert type(schedule).__name__ == AssetOrTimeSchedule.__name__
    assert type(schedule.timetable).__name__ == CronTriggerTimetable.__name__
    assert (schedule.timetable.expression, schedule.timetable.timezone) == ("0 3 * * 0", "UTC")
    assert [asset.uri for asset in schedule.asset_condition.objects] == [
        "batchscore://signals/retrain"]


def test_a_promotion_triggers_a_rescore_of_the_served_date(dagbag: DagBag) -> None:
    dag = dagbag.dags["batchscore_rescore"]
    assert [asset.uri for asset in dag.timetable.asset_condition.objects] == [
        "batchscore://models/serving"]
    assert dag.get_task("plan").downstream_task_ids == {"rescore"}
    rescore = dag.get_task("rescore")
    assert type(rescore).__name__ == "TriggerDagRunOperator"
    assert rescore.trigger_dag_id == "batchscore_nightly"
    assert rescore.conf == "{{ ti.xcom_pull(task_ids='plan') | tojson }}"


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def test_nightly_timetable_makes_the_logical_date_the_scored_day() -> None:
    timetable = NightlyTimetable(start_after=timedelta(hours=2))
    first = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=utc(2026, 11, 18), latest=None, catchup=True),
    )
    assert first.data_interval == DataInterval(utc(2026, 11, 18), utc(2026, 11, 19))
    assert first.logical_date == utc(2026, 11, 18)
    assert first.run_after == utc(2026, 11, 19, 2)
    following = timetable.next_dagrun_info(
        last_automated_data_interval=first.data_interval,
        restriction=TimeRestriction(earliest=utc(2026, 11, 18), latest=None, catchup=True),
    )
    assert following.logical_date == utc(2026, 11, 19)
    assert following.run_after == utc(2026, 11, 20, 2)
    # A manual trigger at 01:00 on the 21st means the 19th (the 20th is not done until 02:00).
    assert timetable.infer_manual_data_interval(run_after=utc(2026, 11, 21, 1)).start == utc(
        2026, 11, 19)
    assert timetable.infer_manual_data_interval(run_after=utc(2026, 11, 21, 3)).start == utc(
        2026, 11, 20)
    # An explicit date means that day.
    assert timetable.infer_manual_data_interval(run_after=utc(2026, 11, 20)).start == utc(
        2026, 11, 20)
    assert NightlyTimetable.deserialize(timetable.serialize()).start_after == timedelta(hours=2)


def test_without_catchup_the_next_run_skips_to_the_last_complete_day() -> None:
    timetable = NightlyTimetable()
    after_a_backfill = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(utc(2020, 1, 5), utc(2020, 1, 6)),
        restriction=TimeRestriction(earliest=utc(2020, 1, 1), latest=None, catchup=False),
    )
    newest_complete = timetable.day_of_run(pendulum.now("UTC"))
    assert after_a_backfill.logical_date == newest_complete


def test_a_backfill_window_selects_whole_days(dagbag: DagBag) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["batchscore_nightly"]))
    infos = list(dag.iter_dagrun_infos_between(utc(2026, 11, 18), utc(2026, 11, 20)))
    assert [info.logical_date.date() for info in infos] == [
        date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)]


def test_run_date_comes_from_the_param_or_the_logical_date() -> None:
    late_evening = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    assert resolve_run_date(None, late_evening) == date(2026, 11, 20)
    assert resolve_run_date("2026-11-02", late_evening) == date(2026, 11, 2)
    with pytest.raises(ValueError, match="no logical date; trigger it with the run_date param"):
        resolve_run_date(None, None)
