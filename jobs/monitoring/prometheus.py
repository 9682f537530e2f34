"""Each nightly's metrics for Prometheus: a textfile for the node exporter's textfile
collector, or a push to a Pushgateway when one is configured.

Every metric of ``batchscore.run_metrics`` becomes a gauge named
``batchscore_`` + its name with dots as underscores (``input.item_popularity_psi`` ->
``batchscore_input_item_popularity_psi``), labelled with its ``segment`` ('' for
the run as a whole). ``batchscore_run_info{run_id, logical_date, model_version}``
is 1 for the run the values come from, and ``batchscore_run_metrics_timestamp_seconds``
says when they were computed. Each export replaces the previous one: the values
are always the last monitored run's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile
from sqlalchemy.engine import Engine

from jobs.platform.config import PrometheusSettings
from jobs.platform.db import names_of, statement

logger = logging.getLogger(__name__)

TEXTFILE = "batchscore.prom"
PUSHGATEWAY_JOB = "batchscore_nightly"
PREFIX = "batchscore_"


@dataclass(frozen=True)
class RunMetrics:
    """One run's metrics, ``(metric, segment) -> value``, and what they are about."""

    run_id: str
    logical_date: str
    model_version: int | None
    computed_at: datetime | None
    values: dict[tuple[str, str], float]


def gauge_name(metric: str) -> str:
    """The Prometheus name of a batchscore metric: ``input.rows`` -> ``batchscore_input_rows``."""
    return PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", metric)


def read_run_metrics(engine: Engine, run_id: str) -> RunMetrics:
    with engine.connect() as conn:
        run = conn.execute(statement(conn,
            "SELECT logical_date, model_version FROM {schema}.runs WHERE run_id = :id"),
            {"id": run_id}).first()
        if run is None:
            raise LookupError(f"no run {run_id} in {names_of(engine).schema}.runs")
        rows = conn.execute(statement(conn,
            "SELECT metric, segment, value, computed_at FROM {schema}.run_metrics"
            " WHERE run_id = :id ORDER BY metric, segment"), {"id": run_id}).all()
    return RunMetrics(run_id=run_id, logical_date=run.logical_date.isoformat(),
                      model_version=run.model_version,
                      computed_at=max((row.computed_at for row in rows), default=None),
                      values={(row.metric, row.segment): float(row.value) for row in rows})


def collect(run: RunMetrics) -> CollectorRegistry:
    """A registry holding the run's gauges, ready to write or push."""
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for (metric, segment), value in sorted(run.values.items()):
        name = gauge_name(metric)
        if name not in gauges:
            gauges[name] = Gauge(name, f"batchscore run metric {metric}", ["segment"],
                                 registry=registry)
        gauges[name].labels(segment=segment).set(value)
    Gauge("batchscore_run_info", "the run the batchscore metrics are of",
          ["run_id", "logical_date", "model_version"], registry=registry).labels(
        run_id=run.run_id, logical_date=run.logical_date,
        model_version="" if run.model_version is None else str(run.model_version)).set(1)
    if run.computed_at is not None:
        Gauge("batchscore_run_metrics_timestamp_seconds",
              "when the batchscore run's metrics were computed (Unix time)",
              registry=registry).set(run.computed_at.timestamp())
    return registry


def export(engine: Engine, settings: PrometheusSettings, home: Path, run_id: str) -> str:
    """Write ``run_id``'s metrics where Prometheus reads them; returns where (file or URL).

    A Pushgateway when ``BATCHSCORE_PUSHGATEWAY_URL`` is set (the job
    ``batchscore_nightly``'s group is replaced); otherwise the textfile
    ``batchscore.prom`` in the metrics folder (default ``home/metrics``), replaced
    atomically. A deployment of other names has a group and a file of its own: the
    grouping key ``deployment=<schema>``, the file ``batchscore-<schema>.prom``.
    """
    run = read_run_metrics(engine, run_id)
    registry = collect(run)
    url = settings.pushgateway_url
    if url:
        names = names_of(engine)
        group = {} if names.is_default else {"deployment": names.schema}
        push_to_gateway(url, job=PUSHGATEWAY_JOB, registry=registry, grouping_key=group,
                        timeout=30)
        where = f"{url} (job {PUSHGATEWAY_JOB}{''.join(f', {k} {v}' for k, v in group.items())})"
    else:
        folder = settings.folder(home)
        folder.mkdir(parents=True, exist_ok=True)
        names = names_of(engine)
        path = folder / (TEXTFILE if names.is_default
                         else TEXTFILE.replace(".prom", f"-{names.schema}.prom"))
        # Written beside the file and renamed: the collector never reads half of it.
        write_to_textfile(str(path), registry)
        where = str(path)
    logger.info("prometheus: %d metric value(s) of run %s written to %s", len(run.values),
                run_id, where)
    return where
