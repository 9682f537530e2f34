"""Orchestration: the nightly run and its steps, rolling back both stores (``rollback``),
and the Airflow glue (``airflow_tasks`` for the tasks, ``scheduling`` for the timetable
plugin, ``local_airflow`` for a local Airflow).

The nightly: ``nightly`` runs it in one process; ``run_state`` holds its request and
state, ``model_choice`` which models it uses, ``prepare`` the steps before publishing,
``publish_steps`` each store's publish step and the switch, ``checks`` the smoke check
and the shadow comparison, ``plans`` which steps each kind of run takes, ``outcome`` how
a run is recorded when it ends, and ``after_monitor`` the monitor step and what follows.
"""
