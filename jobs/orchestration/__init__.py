"""Orchestration: the nightly run as steps (``nightly``), rolling back both stores
(``rollback``), and the Airflow glue (``airflow_tasks`` for the tasks, ``scheduling``
for the timetable plugin, ``local_airflow`` for a local Airflow)."""
