"""What follows a recorded nightly run: the monitor step, then its alert and metrics.

``monitor`` stores the run's metrics and holds them to their levels
(:mod:`jobs.monitoring.monitor`); its failure is recorded and unpublishes nothing.
``after_monitor`` raises one alert for the levels the run crossed and writes its metrics
for Prometheus, as the DAG's ``alert`` and ``export_metrics`` tasks do.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from jobs.monitoring.alerts import crossing_from_json, raise_alert
from jobs.monitoring.prometheus import export as export_metrics
from jobs.orchestration.run_state import NightlyConfig
from jobs.platform import runs

logger = logging.getLogger(__name__)


def monitor(engine: Engine, run_id: str, raise_errors: bool = False) -> dict[str, Any]:
    """The monitor step of a recorded, succeeded run (see :mod:`jobs.monitoring.monitor`).

    A failure unpublishes nothing: it is logged and kept in the run's stats as
    ``monitoring_error``, and the record returned says so (``error``); with
    ``raise_errors`` (the DAG task, which Airflow retries) it is raised after that.
    """
    from jobs.monitoring.monitor import monitor as measure

    try:
        result = measure(engine, run_id).to_json()
        runs.annotate(engine, run_id, {"monitoring": {"crossings": len(result["crossings"]),
                                                      "retrain": result["retrain"]}},
                      drop=("monitoring_error",))
        return result
    except Exception as err:
        message = f"{type(err).__name__}: {err}"
        logger.error("run %s: monitoring failed (%s); the run stays published", run_id,
                     message)
        try:
            runs.annotate(engine, run_id, {"monitoring_error": message})
        except Exception as lost:  # the monitoring error is the one to report
            logger.error("run %s: could not record the monitoring failure (%s)", run_id, lost)
        if raise_errors:
            raise
        return {"run_id": run_id, "crossings": [], "retrain": False, "error": message}


def after_monitor(engine: Engine, config: NightlyConfig, monitored: dict[str, Any]
                  ) -> dict[str, Any]:
    """What follows the monitor step in this process: one alert for the levels the run
    crossed (none when it crossed none) and its metrics written for Prometheus.

    ``monitored`` is the monitor step's result (``run_id``, ``crossings``,
    ``retrain``). Airflow runs the same as the tasks ``alert`` and
    ``export_metrics``, and signals a retrain with an asset event; here a crossed
    retrain level is said in the result, for whoever runs ``batchscore train``.
    """
    crossings = [crossing_from_json(record) for record in monitored.get("crossings", [])]
    raised = (raise_alert(engine, config.alerts, monitored["run_id"], crossings=crossings)
              if crossings else None)
    where = export_metrics(engine, config.prometheus, config.home, monitored["run_id"])
    return {"alert": raised.to_json() if raised else None, "metrics_written_to": where,
            "retrain": bool(monitored.get("retrain"))}


def after_monitor_logged(engine: Engine, config: NightlyConfig, monitored: dict[str, Any]
                         ) -> dict[str, Any]:
    """:func:`after_monitor`, whose failure (an alert or metrics file that could not be
    written) is logged and returned: the run stays recorded and published."""
    try:
        return after_monitor(engine, config, monitored)
    except Exception as err:
        logger.error("run %s: alerting or writing its metrics failed (%s: %s)",
                     monitored["run_id"], type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {err}"}
