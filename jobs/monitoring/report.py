"""The run report: one self-contained HTML page per nightly run, and an index of recent runs.

gather (the run's record, its published version, the last 30 runs' metrics,
the score distribution against the previous version over the monitor's sample
of users, the most recommended items from the counts the publisher stored per
item) -> render (plots drawn by matplotlib as inline SVG, into a Jinja2
template) -> write ``BATCHSCORE_HOME/reports/<run_id>.html`` and rewrite
``BATCHSCORE_HOME/reports/index.html``. The page fetches nothing: its
Content-Security-Policy allows no network source at all, so a plot that
needed one would show as an error in the browser, not as a silent fetch.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from jobs.monitoring.monitor import SAMPLE_USERS, item_exposure, sample_stride
from jobs.monitoring.thresholds import Crossing, Level, crossings, levels
from jobs.platform import runs
from jobs.platform.db import names_of, statement
from jobs.platform.names import Names

logger = logging.getLogger(__name__)

REPORTS_DIR = "reports"
INDEX_FILE = "index.html"
# How many runs the trends and the index go back.
HISTORY_RUNS = 30
TOP_ITEMS = 15
SCORE_BINS = 40
# Segments of the realized metrics (the names agreed with the metrics step).
MODEL_SEGMENT = re.compile(r"^model:(\d+)/publish:(\d+)(?:/arm:(canary|control))?$")
POPULARITY_SEGMENT = re.compile(r"^popularity/publish:(\d+)$")

# The trend plots: title, then the (metric, segment) lines drawn in it.
INPUT_PLOTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Input rows", (("input.rows", ""),)),
    ("Active users", (("input.active_users", ""),)),
    ("New users and items (share)", (("input.new_user_share", ""),
                                     ("input.new_item_share", ""))),
    *((title, ((metric, "vs_training"), (metric, "vs_previous_day")))
      for title, metric in (
          ("Item popularity drift (PSI)", "input.item_popularity_psi"),
          ("Item popularity drift (Jensen-Shannon)", "input.item_popularity_js"),
          ("User activity drift (PSI)", "input.user_activity_psi"),
          ("User activity drift (Jensen-Shannon)", "input.user_activity_js"))),
)
PREDICTION_PLOTS = (
    ("Score drift vs the previous version (PSI)",
     (("predictions.score_psi", "vs_previous_version"),)),
    ("List churn vs the previous version (1 - overlap@K)",
     (("predictions.list_churn", "vs_previous_version"),)),
)
COVERAGE_PLOTS = (
    ("Catalogue coverage", (("predictions.catalog_coverage", ""),)),
    ("Exposure concentration", (("predictions.top_item_share", ""),
                                ("predictions.exposure_gini", ""))),
)
REALIZED_METRICS = (("realized.ndcg", "NDCG"), ("realized.hit_rate", "hit rate"),
                    ("realized.recall", "recall"))


class ReportError(LookupError):
    """The report asked for cannot be made (no such run, no run yet)."""


@dataclass(frozen=True)
class Trend:
    """One line of a trend plot: a metric's value per run, by the run's date."""

    metric: str
    segment: str
    points: tuple[tuple[date, float], ...]

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.segment})" if self.segment else self.metric


@dataclass(frozen=True)
class Realized:
    """A realized metric of one published version, as last measured."""

    metric: str
    # "model 3", "model 4 (canary arm)", or "popularity".
    served_by: str
    publish_id: int
    published_for: date
    value: float


@dataclass(frozen=True)
class ScoreHistogram:
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    previous_counts: tuple[int, ...] | None
    previous_publish_id: int | None
    # Users whose id is a multiple of this were counted (1: every user).
    sampled_every: int = 1


@dataclass
class ReportData:
    """Everything one run's report shows, read from the database."""

    run: runs.Run
    version: dict[str, Any] | None
    history: list[tuple[str, date]]
    trends: dict[tuple[str, str], Trend]
    current: dict[tuple[str, str], float]
    held_to: list[Level]
    crossed: list[Crossing]
    realized: list[Realized]
    scores: ScoreHistogram | None
    top_items: list[dict[str, Any]]
    model_gates: dict[str, Any] = field(default_factory=dict)
    # The run before this one in ``history``, for the "since the previous run" line.
    previous: Previous | None = None


@dataclass(frozen=True)
class Previous:
    """What the run before showed: its date, served model and version, users, coverage
    and how many levels its metrics crossed."""

    logical_date: date
    model_version: int | None
    publish_id: int | None
    users: int | None
    coverage: float | None
    crossed: int


def report_path(home: Path, run_id: str, names: Names | None = None) -> Path:
    """Where a run's report is: ``home/reports`` (a sub-folder of it for a deployment of
    other names, :meth:`Names.own_folder`)."""
    return (names or Names()).own_folder(home / REPORTS_DIR) / f"{run_id}.html"


def index_path(home: Path, names: Names | None = None) -> Path:
    return (names or Names()).own_folder(home / REPORTS_DIR) / INDEX_FILE


def write_report(engine: Engine, home: Path, run_id: str | None = None,
                 contracts: Mapping[str, Any] | None = None) -> Path:
    """Write the report of ``run_id`` (default: the newest nightly run), rewrite the index,
    and record the report's path in the run's stats (``report``); returns the path."""
    from jobs.contracts.engine import load_contracts_config

    run_id = run_id or newest_run_id(engine)
    held_to = levels(load_contracts_config() if contracts is None else contracts)
    data = gather(engine, run_id, held_to)
    path = report_path(home, run_id, names_of(engine))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    runs.annotate(engine, run_id, {"report": str(path)})
    write_index(engine, home, held_to)
    logger.info("run %s: report written to %s", run_id, path)
    return path


def write_report_logged(engine: Engine, home: Path, run_id: str) -> Path | None:
    """:func:`write_report`, for the nightly: a report that fails is logged, never raised,
    so that it neither fails nor unpublishes the run."""
    try:
        return write_report(engine, home, run_id)
    except Exception as err:
        logger.error("run %s: its report could not be written (%s: %s); the run stands; "
                     "`batchscore report %s` tries again", run_id, type(err).__name__, err,
                     run_id)
        return None


def write_index(engine: Engine, home: Path, held_to: Sequence[Level]) -> Path:
    """Rewrite the deployment's ``reports/index.html``: the recent nightly runs with their
    headline figures, the levels their metrics cross among them."""
    recent = [run for run in runs.list_runs(engine, limit=HISTORY_RUNS * 4)
              if run.kind == "nightly"][:HISTORY_RUNS]
    with engine.connect() as conn:
        metric_rows = conn.execute(statement(conn,
            "SELECT run_id, metric, segment, value FROM {schema}.run_metrics"
            " WHERE run_id = ANY(:ids)"), {"ids": [run.run_id for run in recent]}).all()
    metrics: dict[str, dict[tuple[str, str], float]] = {}
    for run_id, metric, segment, value in metric_rows:
        metrics.setdefault(run_id, {})[(metric, segment)] = float(value)
    rows = []
    for run in recent:
        report = report_path(home, run.run_id, names_of(engine))
        crossed = [c.level for c in crossings(metrics.get(run.run_id, {}), list(held_to))]
        rows.append({"run": run, "stats": run.stats,
                     "report": report.name if report.exists() else None,
                     "crossed": ", ".join(f"{crossed.count(level)} {level}"
                                          for level in ("retrain", "warn")
                                          if level in crossed)})
    path = index_path(home, names_of(engine))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_template("index.html.j2").render(rows=rows), encoding="utf-8")
    return path


def newest_run_id(engine: Engine) -> str:
    with engine.connect() as conn:
        run_id = conn.execute(statement(conn,
            "SELECT run_id FROM {schema}.runs WHERE kind = 'nightly'"
            " ORDER BY started_at DESC LIMIT 1")).scalar()
    if run_id is None:
        raise ReportError("there is no nightly run yet to report on; run `batchscore nightly`")
    return str(run_id)


# ---------------------------------------------------------------- gather


def gather(engine: Engine, run_id: str, held_to: list[Level]) -> ReportData:
    """Read what the report of ``run_id`` shows."""
    run = runs.get(engine, run_id)
    if run is None:
        raise ReportError(f"there is no run {run_id!r} (`batchscore runs list` shows them)")
    with engine.connect() as conn:
        version = published_version(conn, run_id)
        history = [(str(r), d) for r, d in conn.execute(statement(conn,
            "SELECT run_id, logical_date FROM ("
            "  SELECT DISTINCT ON (logical_date) run_id, logical_date, started_at"
            "  FROM {schema}.runs WHERE kind = 'nightly' AND logical_date <= :d"
            "   AND (run_id = :id OR (status = 'succeeded' AND logical_date < :d))"
            "  ORDER BY logical_date, run_id = :id DESC, started_at DESC) latest"
            " ORDER BY logical_date DESC LIMIT :n"),
            {"id": run_id, "d": run.logical_date, "n": HISTORY_RUNS})][::-1]
        metric_rows = conn.execute(statement(conn,
            "SELECT m.run_id, r.logical_date, m.metric, m.segment, m.value"
            " FROM {schema}.run_metrics m JOIN {schema}.runs r USING (run_id)"
            " WHERE m.run_id = ANY(:ids) ORDER BY r.logical_date"),
            {"ids": [r for r, _ in history]}).all()
        published_for = dict(conn.execute(statement(conn,
            "SELECT publish_id, logical_date FROM {schema}.prediction_versions")).all())
        gates = conn.execute(statement(conn,
            "SELECT gates FROM {schema}.model_versions WHERE version = :v"),
            {"v": run.model_version}).scalar() if run.model_version is not None else None
    trends = collect_trends(metric_rows)
    current = metrics_of(metric_rows, run_id)
    earlier = [(rid, day) for rid, day in history if rid != run_id]
    previous = (previous_run(engine, earlier[-1][0], earlier[-1][1], metric_rows, held_to)
                if earlier else None)
    scores = top_items = None
    if version is not None:
        scores = score_histogram(engine, int(version["publish_id"]), version["logical_date"])
        top_items = most_recommended(engine, int(version["publish_id"]))
    return ReportData(
        run=run, version=dict(version) if version is not None else None, history=history,
        trends=trends, current=current, held_to=held_to,
        crossed=crossings(current, held_to),
        realized=latest_realized(metric_rows, published_for), scores=scores,
        top_items=top_items or [], model_gates=dict(gates or {}), previous=previous,
    )


def previous_run(engine: Engine, run_id: str, logical_date: date, metric_rows: Sequence[Any],
                 held_to: list[Level]) -> Previous:
    """The headline figures of the run before, as its own report showed them."""
    run = runs.get(engine, run_id)
    with engine.connect() as conn:
        version = published_version(conn, run_id)
    stats = run.stats if run is not None else {}
    return Previous(
        logical_date=logical_date,
        model_version=(version["model_version"] if version is not None
                       else run.model_version if run is not None else None),
        publish_id=version["publish_id"] if version is not None else None,
        users=version["users"] if version is not None else None,
        coverage=stats.get("predictions_catalog_coverage"),
        crossed=len(crossings(metrics_of(metric_rows, run_id), held_to)))


def published_version(conn: Any, run_id: str) -> Mapping[str, Any] | None:
    """The newest version ``run_id`` kept (not staged, not failed), or None."""
    return conn.execute(statement(conn,
        "SELECT publish_id, model_version, logical_date, k, status, users, rows,"
        " canary_model_version, canary_fraction FROM {schema}.prediction_versions"
        " WHERE run_id = :id AND status NOT IN ('staged', 'failed')"
        " ORDER BY publish_id DESC LIMIT 1"), {"id": run_id}).mappings().first()


def metrics_of(rows: Sequence[Any], run_id: str) -> dict[tuple[str, str], float]:
    """One run's metrics among ``(run_id, logical_date, metric, segment, value)`` rows."""
    return {(metric, segment): value for rid, _, metric, segment, value in rows
            if rid == run_id}


def collect_trends(rows: Sequence[Any]) -> dict[tuple[str, str], Trend]:
    """``(run_id, logical_date, metric, segment, value)`` rows, in date order, as trends."""
    points: dict[tuple[str, str], list[tuple[date, float]]] = {}
    for _, logical_date, metric, segment, value in rows:
        points.setdefault((metric, segment), []).append((logical_date, float(value)))
    return {key: Trend(key[0], key[1], tuple(found)) for key, found in points.items()}


def latest_realized(rows: Sequence[Any], published_for: Mapping[int, date]) -> list[Realized]:
    """The realized metrics of every published version, each as last measured, by the
    version's date; segments not in the agreed shape are left out."""
    latest: dict[tuple[str, str], float] = {}
    for _, _, metric, segment, value in rows:
        if metric.startswith("realized.") and metric != "realized.ndcg_share":
            latest[(metric, segment)] = float(value)
    found = []
    for (metric, segment), value in latest.items():
        model, popularity = MODEL_SEGMENT.match(segment), POPULARITY_SEGMENT.match(segment)
        if model:
            arm = f" ({model[3]} arm)" if model[3] else ""
            served_by, publish_id = f"model {model[1]}{arm}", int(model[2])
        elif popularity:
            served_by, publish_id = "popularity", int(popularity[1])
        else:
            continue
        if publish_id in published_for:
            found.append(Realized(metric, served_by, publish_id, published_for[publish_id],
                                  value))
    return sorted(found, key=lambda r: (r.metric, r.served_by, r.published_for))


def score_histogram(engine: Engine, publish_id: int, logical_date: date,
                    sample_users: int = SAMPLE_USERS) -> ScoreHistogram | None:
    """This version's scores, and the previous kept version's, counted in the same bins,
    over the users the monitor samples (every user up to ``sample_users``, else those
    whose id is a multiple of the stride that leaves about that many)."""
    with engine.connect() as conn:
        previous = conn.execute(statement(conn,
            "SELECT publish_id FROM {schema}.prediction_versions"
            " WHERE publish_id < :id AND logical_date <= :d AND dropped_at IS NULL"
            "  AND status IN ('published', 'superseded', 'rolled_back')"
            " ORDER BY logical_date DESC, publish_id DESC LIMIT 1"),
            {"id": publish_id, "d": logical_date}).scalar()
        ids = [publish_id] + ([previous] if previous is not None else [])
        users = conn.execute(statement(conn,
            "SELECT coalesce(users, 0) FROM {schema}.prediction_versions"
            " WHERE publish_id = :id"), {"id": publish_id}).scalar_one()
        sample = {"ids": ids, "stride": sample_stride(users, sample_users)}
        low, high = conn.execute(statement(conn,
            "SELECT min(score), max(score) FROM {schema}.predictions"
            " WHERE publish_id = ANY(:ids) AND user_id % :stride = 0"), sample).one()
        if low is None:
            return None
        # width_bucket needs an upper bound above every score, the maximum included.
        top = float(high) + max(abs(float(high)) * 1e-6, 1e-6)
        counted = conn.execute(statement(conn,
            "SELECT publish_id, width_bucket(CAST(score AS double precision), :lo, :hi, :n),"
            " count(*) FROM {schema}.predictions"
            " WHERE publish_id = ANY(:ids) AND user_id % :stride = 0"
            " GROUP BY 1, 2"), {**sample, "lo": float(low), "hi": top, "n": SCORE_BINS}).all()
    counts = {pid: [0] * SCORE_BINS for pid in ids}
    for pid, bucket, count in counted:
        counts[pid][int(bucket) - 1] = int(count)
    step = (top - float(low)) / SCORE_BINS
    has_previous = previous is not None and any(counts[previous])
    return ScoreHistogram(
        edges=tuple(float(low) + step * i for i in range(SCORE_BINS + 1)),
        counts=tuple(counts[publish_id]),
        previous_counts=tuple(counts[previous]) if has_previous else None,
        previous_publish_id=previous if has_previous else None,
        sampled_every=sample["stride"])


def most_recommended(engine: Engine, publish_id: int, limit: int = TOP_ITEMS
                     ) -> list[dict[str, Any]]:
    """The items in the most users' lists of a version, with their titles when known."""
    with engine.connect() as conn:
        top = sorted(item_exposure(conn, publish_id), key=lambda row: (-row[1], row[0]))[:limit]
        titles = dict(conn.execute(statement(conn,
            "SELECT item_id, title FROM {schema}.items WHERE item_id = ANY(:ids)"),
            {"ids": [item for item, _, _ in top]}).all())
    return [{"item_id": item, "title": titles.get(item), "users": users,
             "mean_rank": rank_sum / users} for item, users, rank_sum in top]


# ---------------------------------------------------------------- render


def render_report(data: ReportData) -> str:
    """The report page: every section, its plots drawn, or a sentence where there is no
    data yet."""
    sections = [
        ("input", "Input volume and drift",
         trend_plots(INPUT_PLOTS, data.trends, data.held_to),
         "No input metrics recorded yet for these runs."),
        ("predictions", "Predictions against the previous version",
         ([("Score distribution", score_plot(data.scores))] if data.scores else [])
         + trend_plots(PREDICTION_PLOTS, data.trends, data.held_to),
         "No predictions kept for this run, and no prediction metrics yet."),
        ("realized", "Realized quality per model version and canary arm",
         realized_plots(data.realized)
         + trend_plots((("Realized NDCG against the first week of serving",
                         tuple((m, s) for m, s in data.trends
                               if m == "realized.ndcg_share")),),
                       data.trends, data.held_to),
         "No realized quality measured yet: it needs events after a published version's "
         "date."),
        ("coverage", "Coverage and the most recommended items",
         trend_plots(COVERAGE_PLOTS, data.trends, data.held_to)
         + ([("Most recommended items", top_items_plot(data.top_items))]
            if data.top_items else []),
         "No coverage metrics or kept predictions for this run yet."),
    ]
    stats = data.run.stats
    return _template("report.html.j2").render(
        run=data.run, stats=stats, version=data.version, crossed=data.crossed,
        sections=sections, history=data.history, top_items=data.top_items,
        data_docs=dict(stats.get("data_docs") or {}), gates=data.model_gates,
        has_levels=bool(data.held_to), index=INDEX_FILE, since=since_previous(data))


def since_previous(data: ReportData) -> str:
    """One line: what changed since the previous run (model and version, users and
    coverage with their change, the levels crossed)."""
    before = data.previous
    if before is None:
        return "First run in this history: nothing to compare with yet."
    version, stats = data.version or {}, data.run.stats
    parts = [f"Since the previous run ({before.logical_date}):"]
    model = version.get("model_version", data.run.model_version)
    parts.append(f"model {_moved(before.model_version, model)},"
                 f" version {_moved(before.publish_id, version.get('publish_id'))};")
    users = version.get("users")
    if users is not None:
        change = f" ({users - before.users:+,})" if before.users is not None else ""
        parts.append(f"users {users:,}{change};")
    coverage = stats.get("predictions_catalog_coverage")
    if coverage is not None:
        change = (f" ({(coverage - before.coverage) * 100:+.1f} pts)"
                  if before.coverage is not None else "")
        parts.append(f"coverage {coverage * 100:.1f}%{change};")
    parts.append(f"levels crossed {len(data.crossed)} (was {before.crossed}).")
    return " ".join(parts)


def _moved(before: object, now: object) -> str:
    shown = [str(value) if value is not None else "none" for value in (before, now)]
    return shown[1] if shown[0] == shown[1] else f"{shown[0]} -> {shown[1]}"


def trend_plots(specs: Sequence[tuple[str, Sequence[tuple[str, str]]]],
                trends: Mapping[tuple[str, str], Trend], held_to: Sequence[Level]
                ) -> list[tuple[str, str]]:
    """``(title, svg)`` of each plot with at least one recorded line."""
    plots = []
    for title, keys in specs:
        lines = [trends[key] for key in keys if key in trends]
        if lines:
            plots.append((title, trend_plot(lines, held_to)))
    return plots


def trend_plot(lines: Sequence[Trend], held_to: Sequence[Level]) -> str:
    """Each trend by run date, with the warn and retrain levels that apply drawn across."""
    figure, axes = _figure()
    for trend in lines:
        days, values = zip(*trend.points, strict=True)
        axes.plot(days, values, marker="o", markersize=3, label=trend.label)
    drawn = set()
    for trend in lines:
        for level in held_to:
            if level.metric != trend.metric or level.segment not in (None, trend.segment):
                continue
            for name, threshold, style in (("warn", level.warn, "#e69f00"),
                                           ("retrain", level.retrain, "#d55e00")):
                if threshold is None or (name, threshold) in drawn:
                    continue
                drawn.add((name, threshold))
                # The id names the line in the SVG, for a reader's tools and the tests.
                axes.axhline(threshold, color=style, linestyle="--", linewidth=1,
                             label=f"{name} level {threshold:g}",
                             gid=f"level-{level.metric}-{name}")
    date_axis(axes, [day for trend in lines for day, _ in trend.points])
    axes.legend(fontsize=7)
    return _svg(figure)


# At most this many date ticks on an axis; more run dates get every n-th.
MAX_DATE_TICKS = 8


def date_axis(axes: Any, days: Sequence[date]) -> None:
    """An axis for daily runs: ticks at the run dates only (every n-th of many), labelled
    by day, and a day of room either side, so one point is not lost in years of axis."""
    from datetime import timedelta

    from matplotlib.dates import DateFormatter, date2num

    dates = sorted(set(days))
    step = -(-len(dates) // MAX_DATE_TICKS)
    ticks = dates[::step]
    if ticks[-1] != dates[-1]:
        ticks.append(dates[-1])
    axes.set_xticks([date2num(day) for day in ticks])
    axes.xaxis.set_major_formatter(DateFormatter("%m-%d"))
    axes.set_xlim(date2num(dates[0] - timedelta(days=1)),
                  date2num(dates[-1] + timedelta(days=1)))
    axes.tick_params(axis="x", labelrotation=30)


def realized_plots(found: Sequence[Realized]) -> list[tuple[str, str]]:
    plots = []
    for metric, name in REALIZED_METRICS:
        mine = [r for r in found if r.metric == metric]
        if not mine:
            continue
        figure, axes = _figure()
        for served_by in sorted({r.served_by for r in mine}, key=lambda s: (s == "popularity", s)):
            points = sorted((r.published_for, r.value) for r in mine if r.served_by == served_by)
            days, values = zip(*points, strict=True)
            axes.plot(days, values, marker="o", markersize=3, label=served_by,
                      **({"color": "grey", "linestyle": ":"} if served_by == "popularity"
                         else {}))
        axes.set_xlabel("published for", fontsize=8)
        date_axis(axes, [r.published_for for r in mine])
        axes.legend(fontsize=7)
        plots.append((f"Realized {name} by published date", _svg(figure)))
    return plots


def score_plot(scores: ScoreHistogram) -> str:
    figure, axes = _figure()
    edges = list(scores.edges)
    axes.stairs(scores.counts, edges, label="this version", fill=True, alpha=0.5)
    if scores.previous_counts is not None:
        axes.stairs(scores.previous_counts, edges, label=f"previous ({scores.previous_publish_id})",
                    linewidth=1.5)
    axes.set_xlabel("score", fontsize=8)
    axes.set_ylabel("recommendations" if scores.sampled_every == 1 else
                    f"recommendations\n(user id % {scores.sampled_every} = 0)", fontsize=8)
    axes.legend(fontsize=7)
    return _svg(figure)


def top_items_plot(items: Sequence[dict[str, Any]]) -> str:
    figure, axes = _figure(height=max(2.5, 0.22 * len(items) + 0.8))
    names = [f"{item['item_id']} {item['title'] or ''}".strip()[:32] for item in items][::-1]
    axes.barh(names, [item["users"] for item in items][::-1], color="#0072b2")
    axes.set_xlabel("users it is recommended to", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    return _svg(figure)


def _figure(height: float = 2.6) -> tuple[Any, Any]:
    # A Figure without pyplot: no global state, no GUI backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, height), layout="constrained")
    axes = figure.add_subplot()
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    return figure, axes


def _svg(figure: Any) -> str:
    """The figure as an inline ``<svg>`` element: text drawn as paths, so no font is
    fetched."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _template(name: str) -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    environment = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                              autoescape=select_autoescape(["j2", "html"]),
                              undefined=StrictUndefined)
    return environment.get_template(name)
