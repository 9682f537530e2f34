"""A nightly's monitoring step: compute its metrics in PostgreSQL, store them in
``batchscore.run_metrics`` (``bi.run_metrics``) and hold them to the levels of
``schemas/contracts.json`` → ``monitoring``.

The heavy work is aggregation in PostgreSQL (per-item and per-activity counts,
per-user hits); Python gets back at most a catalogue's worth of rows and
computes the divergences with :mod:`jobs.monitoring.metrics`. The metric names
and segments are the ones README → Monitoring lists.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from jobs.monitoring import metrics as measures
from jobs.monitoring.thresholds import Crossing, Level, crossings, levels
from jobs.platform.db import names_of, statement

logger = logging.getLogger(__name__)

DEFAULT_REALIZED_WINDOW_DAYS = 7
# Input drift compares the day with at most this many days of the training snapshot
# (its last ones) and looks this far back for a day's items seen before: a bounded
# scan, whatever the length of the history.
DEFAULT_REFERENCE_WINDOW_DAYS = 28
# A serving model's first week, the baseline of realized.ndcg_share.
FIRST_WEEK_DAYS = 7
# Versions whose lists were served: the kept ones (with their partition) that a switch
# ever pointed at.
SERVED_KEPT = ("published", "superseded", "rolled_back")
SCORE_DECILES = [i / 10 for i in range(1, 10)]
# Score drift and list churn are measured on about this many users: 20,000 users'
# lists give a mean overlap to within about 0.002 and deciles to within 1%.
SAMPLE_USERS = 20_000
# Realized quality is measured on the returning users among about this many listed ones.
# When a quarter come back in a day (the quick-start sample's rate), that is 12,500
# users: a standard error of about 1% of the sample's realized NDCG (0.21, per-user
# spread 0.26), about 3.5% for a 10% canary arm.
REALIZED_SAMPLE_USERS = 50_000

Metrics = dict[tuple[str, str], float]


class MonitorError(RuntimeError):
    """A run cannot be monitored (unknown, not succeeded, or a bad setting)."""


@dataclass(frozen=True)
class MonitorConfig:
    realized_window_days: int
    levels: list[Level]
    reference_window_days: int = DEFAULT_REFERENCE_WINDOW_DAYS

    @classmethod
    def from_contracts(cls, contracts: Mapping[str, Any]) -> MonitorConfig:
        section = contracts.get("monitoring", {})
        return cls(realized_window_days=whole_days(section, "realized_window_days",
                                                   DEFAULT_REALIZED_WINDOW_DAYS),
                   reference_window_days=whole_days(section, "reference_window_days",
                                                    DEFAULT_REFERENCE_WINDOW_DAYS),
                   levels=levels(contracts))

    @classmethod
    def load(cls) -> MonitorConfig:
        from jobs.contracts.engine import load_contracts_config

        return cls.from_contracts(load_contracts_config())


def whole_days(section: Mapping[str, Any], name: str, default: int) -> int:
    days = section.get(name, default)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise MonitorError(f"monitoring.{name} must be a whole number of days, at least 1, "
                           f"got {days!r}")
    return days


@dataclass(frozen=True)
class MonitorResult:
    run_id: str
    metrics: Metrics
    crossings: list[Crossing]

    @property
    def retrain(self) -> bool:
        return any(crossing.level == "retrain" for crossing in self.crossings)

    def to_json(self) -> dict[str, Any]:
        """The agreed shape: the ``monitor`` task's XCom and the nightly result's record."""
        return {"run_id": self.run_id,
                "crossings": [{"metric": c.metric, "segment": c.segment, "value": c.value,
                               "level": c.level, "threshold": c.threshold,
                               "direction": c.direction} for c in self.crossings],
                "retrain": self.retrain}


@dataclass(frozen=True)
class RunFacts:
    run_id: str
    logical_date: date
    model_version: int
    trained_as_of: date
    publish_id: int | None
    k: int | None
    # The items the run scored against, as its scoring recorded them (None before that
    # was recorded).
    catalog_items: int | None = None


def monitor(engine: Engine, run_id: str, config: MonitorConfig | None = None) -> MonitorResult:
    """Compute, store and hold to its levels the metrics of the succeeded nightly ``run_id``.

    Run again, it replaces the run's rows: the metrics are always those of the
    data as it is now.
    """
    config = config or MonitorConfig.load()
    with engine.begin() as conn:
        facts = run_facts(conn, run_id)
        found: Metrics = {}
        drift, catalog = input_metrics(conn, facts, config.reference_window_days)
        found.update(drift)
        if facts.publish_id is not None:
            found.update(prediction_metrics(conn, facts, catalog))
        found.update(realized_metrics(conn, facts, config.realized_window_days))
        conn.execute(statement(conn, "DELETE FROM {schema}.run_metrics WHERE run_id = :id"),
                     {"id": run_id})
        store(conn, run_id, found)
        # Read back from what is stored, this run's first measurements included.
        share = ndcg_share(conn, facts.model_version, facts.logical_date)
        if share is not None:
            key = ("realized.ndcg_share", f"model:{facts.model_version}")
            found[key] = share
            store(conn, run_id, {key: share})
    crossed = crossings(found, config.levels)
    logger.info("run %s: %d metrics stored, %d level(s) crossed%s", run_id, len(found),
                len(crossed), "; retrain" if any(c.level == "retrain" for c in crossed) else "")
    for crossing in crossed:
        logger.warning("run %s: %s", run_id, crossing.describe())
    return MonitorResult(run_id=run_id, metrics=found, crossings=crossed)


def stored_result(engine: Engine, run_id: str, config: MonitorConfig | None = None
                  ) -> MonitorResult:
    """The metrics stored for ``run_id`` and the levels they cross now."""
    config = config or MonitorConfig.load()
    with engine.connect() as conn:
        rows = conn.execute(statement(conn,
            "SELECT metric, segment, value FROM {schema}.run_metrics WHERE run_id = :id"
            " ORDER BY metric, segment"), {"id": run_id}).all()
    found = {(metric, segment): float(value) for metric, segment, value in rows}
    return MonitorResult(run_id=run_id, metrics=found, crossings=crossings(found, config.levels))


def store(conn: Connection, run_id: str, found: Metrics) -> None:
    if found:
        conn.execute(statement(conn,
            "INSERT INTO {schema}.run_metrics (run_id, metric, segment, value)"
            " VALUES (:run_id, :metric, :segment, :value)"),
            [{"run_id": run_id, "metric": metric, "segment": segment, "value": value}
             for (metric, segment), value in found.items()])


def run_facts(conn: Connection, run_id: str) -> RunFacts:
    row = conn.execute(statement(conn,
        "SELECT r.status, r.logical_date, r.model_version, m.trained_as_of,"
        " (r.stats ->> 'predictions_catalog_items')::bigint,"
        " (SELECT v.publish_id FROM {schema}.prediction_versions v"
        "   WHERE v.run_id = r.run_id AND v.status NOT IN ('staged', 'dropped', 'failed')"
        "   ORDER BY v.publish_id DESC LIMIT 1) AS publish_id"
        " FROM {schema}.runs r LEFT JOIN {schema}.model_versions m"
        "  ON m.version = r.model_version WHERE r.run_id = :id"), {"id": run_id}).first()
    if row is None:
        raise MonitorError(f"no run {run_id!r} in {names_of(conn.engine).schema}.runs")
    status, logical_date, model_version, trained_as_of, catalog_items, publish_id = row
    if status != "succeeded":
        raise MonitorError(f"run {run_id} is {status}: only a succeeded run is monitored")
    if model_version is None or trained_as_of is None:
        raise MonitorError(f"run {run_id} records no model version it served with")
    k = None
    if publish_id is not None:
        k = conn.execute(statement(conn, "SELECT k FROM {schema}.prediction_versions"
                                 " WHERE publish_id = :p"), {"p": publish_id}).scalar_one()
    return RunFacts(run_id=run_id, logical_date=logical_date, model_version=model_version,
                    trained_as_of=trained_as_of, publish_id=publish_id, k=k,
                    catalog_items=catalog_items)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


# ---------------------------------------------------------------- input drift


def input_metrics(conn: Connection, facts: RunFacts,
                  reference_days: int = DEFAULT_REFERENCE_WINDOW_DAYS) -> tuple[Metrics, int]:
    """The day's volume and newcomers, and its item popularity and user activity against
    the serving model's training snapshot (its last ``reference_days`` days) and the
    previous day; and the catalogue the run scored against.

    Only events from the reference window's start, or ``reference_days`` before the
    day if that is earlier, are read: the cost is the window's, not the history's.
    """
    day = facts.logical_date
    training_end = facts.trained_as_of + timedelta(days=1)
    scan_start = min(training_end, day) - timedelta(days=reference_days)
    bounds = {"day": midnight(day), "day_end": midnight(day + timedelta(days=1)),
              "previous": midnight(day - timedelta(days=1)),
              "training_start": midnight(training_end - timedelta(days=reference_days)),
              "training_end": midnight(training_end),
              "scan_start": midnight(scan_start)}
    rows, active, new_users = conn.execute(statement(conn,
        "WITH today AS (SELECT user_id, count(*) AS events FROM {schema}.interactions"
        "  WHERE event_at >= :day AND event_at < :day_end GROUP BY user_id)"
        " SELECT coalesce(sum(events), 0), count(*),"
        "  count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {schema}.interactions i"
        "   WHERE i.user_id = today.user_id AND i.event_at < :day))"
        " FROM today"), bounds).one()
    found: Metrics = {("input.rows", ""): float(rows), ("input.active_users", ""): float(active)}
    if active:
        found[("input.new_user_share", "")] = new_users / active
    # One pass over the scanned days: each item's events in the training window, the
    # previous day and the day, and whether it was seen in the scanned days before it.
    items = conn.execute(statement(conn, "SELECT item_id,"
        " count(*) FILTER (WHERE event_at >= :training_start AND event_at < :training_end),"
        " count(*) FILTER (WHERE event_at >= :previous AND event_at < :day),"
        " count(*) FILTER (WHERE event_at >= :day),"
        " bool_or(event_at < :day)"
        " FROM {schema}.interactions WHERE event_at >= :scan_start AND event_at < :day_end"
        " GROUP BY item_id"), bounds).all()
    training = {int(i): float(n) for i, n, _, _, _ in items if n}
    previous = {int(i): float(n) for i, _, n, _, _ in items if n}
    today = {int(i): float(n) for i, _, _, n, _ in items if n}
    if today:
        found[("input.new_item_share", "")] = (
            sum(1 for i, _, _, n, seen in items if n and not seen) / len(today))
    if today and training:
        # Binned by the training snapshot's popularity: a single previous day is too
        # small a sample to rank a catalogue by.
        actual = measures.popularity_bins(training, today)
        for segment, reference in (("vs_training", training), ("vs_previous_day", previous)):
            if reference:
                expected = measures.popularity_bins(training, reference)
                found[("input.item_popularity_psi", segment)] = measures.psi(expected, actual)
                found[("input.item_popularity_js", segment)] = measures.js_divergence(
                    expected, actual)
    activity = conn.execute(statement(conn, "SELECT events,"
        " count(*) FILTER (WHERE event_day >= :training_start AND event_day < :training_end),"
        " count(*) FILTER (WHERE event_day >= :previous AND event_day < :day),"
        " count(*) FILTER (WHERE event_day >= :day)"
        " FROM (SELECT date_trunc('day', event_at, 'UTC') AS event_day, count(*) AS events"
        "  FROM {schema}.interactions WHERE event_at >= :scan_start AND event_at < :day_end"
        "  GROUP BY user_id, event_day) AS user_days GROUP BY events"), bounds).all()
    histograms = [measures.activity_histogram({int(row[0]): int(row[column])
                                               for row in activity if row[column]})
                  for column in (1, 2, 3)]
    training_users, previous_users, today_users = histograms
    if sum(today_users):
        for segment, reference in (("vs_training", training_users),
                                   ("vs_previous_day", previous_users)):
            if sum(reference):
                found[("input.user_activity_psi", segment)] = measures.psi(reference,
                                                                           today_users)
                found[("input.user_activity_js", segment)] = measures.js_divergence(
                    reference, today_users)
    return found, facts.catalog_items or len(items)


# ---------------------------------------------------------------- prediction drift


def sample_stride(users: int, sample_users: int = SAMPLE_USERS) -> int:
    """Users whose id is a multiple of this are about ``sample_users`` of ``users``
    (1: every user)."""
    return max(1, int(users) // sample_users)


def previous_version(conn: Connection, facts: RunFacts) -> int | None:
    """The newest kept, served version of an earlier date than the run's."""
    return conn.execute(statement(conn, "SELECT v.publish_id FROM {schema}.prediction_versions v"
        " WHERE v.logical_date < :day AND v.status = ANY(:kept)"
        "  AND EXISTS (SELECT 1 FROM {schema}.serving_history h"
        "              WHERE h.publish_id = v.publish_id)"
        " ORDER BY v.logical_date DESC, v.publish_id DESC LIMIT 1"),
        {"day": facts.logical_date, "kept": list(SERVED_KEPT)}).scalar()


def item_exposure(conn: Connection, publish_id: int) -> list[tuple[int, int, int]]:
    """Per item of version ``publish_id``'s lists: (item_id, the lists it is in, the sum
    of its ranks in them), as the publisher counted them while it loaded the version;
    counted from the lists for a version loaded by an earlier release, which has none."""
    counted = conn.execute(statement(conn,
        "SELECT item_id, users, rank_sum FROM {schema}.prediction_item_exposure"
        " WHERE publish_id = :p"), {"p": publish_id}).all() or conn.execute(statement(conn,
        "SELECT item_id, count(*), sum(rank) FROM {schema}.predictions"
        " WHERE publish_id = :p GROUP BY item_id"), {"p": publish_id}).all()
    return [(int(item), int(users), int(ranks)) for item, users, ranks in counted]


def prediction_metrics(conn: Connection, facts: RunFacts, catalog: int) -> Metrics:
    """The run's lists: their size, coverage of the ``catalog`` items and exposure
    concentration, and their scores and overlap against the previous version's."""
    publish_id = facts.publish_id
    # The publisher counted them as it loaded the version.
    users, rows = conn.execute(statement(conn,
        "SELECT coalesce(users, 0), coalesce(rows, 0) FROM {schema}.prediction_versions"
        " WHERE publish_id = :p"), {"p": publish_id}).one()
    found: Metrics = {("predictions.users", ""): float(users),
                      ("predictions.rows", ""): float(rows)}
    if not users:
        return found
    exposure = [float(users) for _, users, _ in item_exposure(conn, publish_id)]
    catalog = max(catalog, len(exposure))
    found[("predictions.catalog_coverage", "")] = len(exposure) / catalog
    found[("predictions.top_item_share", "")] = max(exposure) / users
    found[("predictions.exposure_gini", "")] = measures.gini(
        exposure + [0.0] * (catalog - len(exposure)))
    previous = previous_version(conn, facts)
    if previous is None:
        return found
    # Both comparisons over the same sample of users: every user up to SAMPLE_USERS,
    # else those whose id is a multiple of the stride that leaves about that many.
    sample = {"stride": sample_stride(users)}
    edges = conn.execute(statement(conn,
        "SELECT percentile_cont(CAST(:q AS float8[])) WITHIN GROUP (ORDER BY score)"
        " FROM {schema}.predictions WHERE publish_id = :p AND user_id % :stride = 0"),
        {"q": SCORE_DECILES, "p": previous, **sample}).scalar_one()
    if edges is None:
        return found
    counts = conn.execute(statement(conn,
        "SELECT publish_id, width_bucket(CAST(score AS float8), CAST(:edges AS float8[])),"
        " count(*) FROM {schema}.predictions WHERE publish_id IN (:p, :q)"
        " AND user_id % :stride = 0 GROUP BY 1, 2"),
        {"edges": list(edges), "p": publish_id, "q": previous, **sample}).all()
    histogram = {version: [0.0] * (len(edges) + 1) for version in (publish_id, previous)}
    for version, bucket, n in counts:
        histogram[version][bucket] += n
    found[("predictions.score_psi", "vs_previous_version")] = measures.psi(
        histogram[previous], histogram[publish_id])
    common, shared = conn.execute(statement(conn,
        "WITH cur AS (SELECT user_id, item_id FROM {schema}.predictions"
        "  WHERE publish_id = :p AND rank <= :k AND user_id % :stride = 0),"
        " prev AS (SELECT user_id, item_id FROM {schema}.predictions"
        "  WHERE publish_id = :q AND rank <= :k AND user_id % :stride = 0)"
        " SELECT (SELECT count(*) FROM (SELECT DISTINCT user_id FROM cur) a"
        "         JOIN (SELECT DISTINCT user_id FROM prev) b USING (user_id)),"
        "        (SELECT count(*) FROM cur JOIN prev USING (user_id, item_id))"),
        {"p": publish_id, "q": previous, "k": facts.k, **sample}).one()
    if common:
        found[("predictions.list_churn", "vs_previous_version")] = 1.0 - shared / (
            common * facts.k)
    return found


# ---------------------------------------------------------------- realized quality

# Per user who had a list of version :p and came back in [:start, :end) (of those whose
# id is a multiple of :stride): the distinct items they touched, and where those sit in
# their list (list 'model') and in the version's popularity list (list 'popularity');
# summed per arm. :ideal holds the ideal DCG for 1..K relevant items. A template
# (:func:`jobs.platform.db.statement`).
REALIZED_SQL = """
WITH came_back AS (
    SELECT DISTINCT i.user_id, i.item_id FROM {schema}.interactions i
    WHERE i.event_at >= :start AND i.event_at < :end AND i.user_id % :stride = 0),
relevant AS (
    SELECT c.user_id, count(*) AS n FROM came_back c
    WHERE EXISTS (SELECT 1 FROM {schema}.predictions p
                  WHERE p.publish_id = :p AND p.user_id = c.user_id AND p.rank = 1)
    GROUP BY c.user_id),
hits AS (
    SELECT 'model' AS list, p.user_id, p.rank FROM came_back c
    JOIN {schema}.predictions p
      ON p.publish_id = :p AND p.user_id = c.user_id AND p.item_id = c.item_id
    WHERE p.rank <= :k
    UNION ALL
    SELECT 'popularity', c.user_id, pi.rank FROM came_back c
    JOIN relevant r USING (user_id)
    JOIN {schema}.popular_items pi ON pi.publish_id = :p AND pi.item_id = c.item_id
    WHERE pi.rank <= :k),
ranked AS (
    SELECT list, user_id, rank,
           row_number() OVER (PARTITION BY list, user_id ORDER BY rank) AS nth
    FROM hits),
per_user AS (
    SELECT l.list, r.user_id, r.n, count(h.rank) AS hits,
           coalesce(sum(ln(2.0::float8) / ln(h.rank + 1.0::float8)), 0) AS dcg,
           coalesce(sum(CAST(h.nth AS float8) / h.rank), 0) AS ap
    FROM relevant r CROSS JOIN (VALUES ('model'), ('popularity')) AS l (list)
    LEFT JOIN ranked h ON h.list = l.list AND h.user_id = r.user_id
    GROUP BY l.list, r.user_id, r.n)
SELECT u.list,
       CASE WHEN cu.user_id IS NULL THEN 'control' ELSE 'canary' END AS arm,
       count(*) AS users,
       sum(CASE WHEN u.hits > 0 THEN 1 ELSE 0 END) AS hit_users,
       sum(CAST(u.hits AS float8) / u.n) AS recall,
       sum(u.dcg / (CAST(:ideal AS float8[]))[least(u.n, :k)]) AS ndcg,
       sum(u.ap / least(u.n, :k)) AS map
FROM per_user u
LEFT JOIN {schema}.canary_users cu ON cu.publish_id = :p AND cu.user_id = u.user_id
GROUP BY u.list, arm
"""


def realized_metrics(conn: Connection, facts: RunFacts, window_days: int) -> Metrics:
    """How every kept, served version of an earlier date did on the events since: those
    of the days after its date, up to ``window_days`` of them and the run's date."""
    versions = conn.execute(statement(conn,
        "SELECT v.publish_id, v.model_version, v.logical_date, v.k, v.canary_model_version,"
        " coalesce(v.users, 0)"
        " FROM {schema}.prediction_versions v"
        " WHERE v.logical_date < :day AND v.status = ANY(:kept)"
        "  AND EXISTS (SELECT 1 FROM {schema}.serving_history h"
        "              WHERE h.publish_id = v.publish_id)"
        " ORDER BY v.logical_date"),
        {"day": facts.logical_date, "kept": list(SERVED_KEPT)}).all()
    found: Metrics = {}
    for publish_id, model_version, logical_date, k, canary_model, listed in versions:
        last_day = min(logical_date + timedelta(days=window_days), facts.logical_date)
        rows = conn.execute(statement(conn, REALIZED_SQL), {
            "p": publish_id, "k": k, "stride": sample_stride(listed, REALIZED_SAMPLE_USERS),
            "start": midnight(logical_date + timedelta(days=1)),
            "end": midnight(last_day + timedelta(days=1)),
            "ideal": [measures.ideal_dcg(n, k) for n in range(1, k + 1)],
        }).all()
        groups: dict[str, list[tuple[str, list[float]]]] = {}
        for list_name, arm, users, *sums in rows:
            groups.setdefault(list_name, []).append((arm, [float(users), *map(float, sums)]))
        model = f"model:{model_version}/publish:{publish_id}"
        for list_name, arms in groups.items():
            total = [sum(column) for column in zip(*(values for _, values in arms),
                                                    strict=True)]
            segments = [(model if list_name == "model" else f"popularity/publish:{publish_id}",
                         total)]
            if list_name == "model" and canary_model is not None:
                segments += [(f"model:{canary_model}/publish:{publish_id}/arm:canary"
                              if arm == "canary" else f"{model}/arm:control", values)
                             for arm, values in arms]
            for segment, (users, hit_users, recall, ndcg, map_sum) in segments:
                found.update({("realized.users", segment): users,
                              ("realized.hit_rate", segment): hit_users / users,
                              ("realized.recall", segment): recall / users,
                              ("realized.ndcg", segment): ndcg / users,
                              ("realized.map", segment): map_sum / users})
    return found


def ndcg_share(conn: Connection, model_version: int, as_of: date) -> float | None:
    """The realized NDCG of the model's newest version over the mean of its first week's,
    from the runs up to ``as_of``.

    Each version counts with its first measurement (by the run of the day after
    its date), so every value covers the same one day of events; None until one
    exists.
    """
    row = conn.execute(statement(conn, "WITH first_measured AS ("
        "  SELECT DISTINCT ON (m.segment) m.value,"
        "   CAST(split_part(m.segment, 'publish:', 2) AS bigint) AS publish_id"
        "  FROM {schema}.run_metrics m JOIN {schema}.runs r USING (run_id)"
        "  WHERE m.metric = 'realized.ndcg' AND m.segment LIKE :prefix"
        "   AND m.segment NOT LIKE '%/arm:%' AND r.logical_date <= :as_of"
        "  ORDER BY m.segment, r.logical_date, m.computed_at),"
        " dated AS (SELECT f.value, v.logical_date FROM first_measured f"
        "  JOIN {schema}.prediction_versions v USING (publish_id))"
        " SELECT (SELECT value FROM dated ORDER BY logical_date DESC LIMIT 1),"
        "  (SELECT avg(value) FROM dated"
        "   WHERE logical_date < (SELECT min(logical_date) FROM dated) + :days)"),
        {"prefix": f"model:{model_version}/publish:%", "days": FIRST_WEEK_DAYS,
         "as_of": as_of}).one()
    latest, first_week = row
    if latest is None or not first_week:
        return None
    return float(latest) / float(first_week)


def run_record(engine: Engine, run_id: str, config: MonitorConfig | None = None
               ) -> dict[str, Any]:
    """``run_id``'s record (``bi.runs``) with its stored metrics, each marked with the
    level it crosses, if any; the ``crossings`` and ``retrain`` of the monitor step."""
    from jobs.platform import runs

    run = runs.get(engine, run_id)
    if run is None:
        raise MonitorError(f"no run {run_id!r}; `runs list` shows the recent ones")
    result = stored_result(engine, run_id, config)
    crossed = {(c.metric, c.segment): c for c in result.crossings}
    rows = []
    for (metric, segment), value in sorted(result.metrics.items()):
        crossing = crossed.get((metric, segment))
        rows.append({"metric": metric, "segment": segment, "value": value,
                     "level": crossing.level if crossing else None,
                     "threshold": crossing.threshold if crossing else None,
                     "direction": crossing.direction if crossing else None})
    return {"run": run.to_json(), "metrics": rows, **result.to_json()}
