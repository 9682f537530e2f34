"""The Airflow assets batchscore's DAGs update and are scheduled on, named in one place.

* ``SERVING_MODEL``: a model version was promoted (``batchscore_train``'s
  ``promote``); ``batchscore_rescore`` re-scores the served date with it.
* ``RETRAIN_SIGNAL``: a nightly crossed a retrain level (its ``signal_retrain``);
  ``batchscore_train`` runs on it as well as on its weekly time.
"""

from __future__ import annotations

from airflow.sdk import Asset

SERVING_MODEL = Asset("batchscore://models/serving", group="batchscore")
RETRAIN_SIGNAL = Asset("batchscore://signals/retrain", group="batchscore")
