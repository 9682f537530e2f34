"""Alerts: a failed run, a nightly whose date had no input events (``empty``), or a run
whose metrics cross a warn or retrain level, is told to on-call on the configured
channel and recorded in ``batchscore.alerts``.

The ``smtp`` channel sends through the Airflow SMTP provider's notifier, so the
server and its credentials live in an Airflow connection; the ``log`` channel
writes the alert to the log. Delivery that fails is recorded (``delivered``
false, with the error) and logged, and never fails the run that raised it. No
password reaches an alert: URLs and ``password=`` pairs in error text are
masked before the message is built.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from jobs.monitoring.thresholds import Crossing
from jobs.platform.config import AlertSettings
from jobs.platform.db import statement

logger = logging.getLogger(__name__)

# scheme://user:password@host -> scheme://user:***@host
URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s]*@")
# password=..., passwd: ..., pwd=... (libpq DSNs, key-value error text)
KEY_PASSWORD = re.compile(r"(?i)\b(?P<key>password|passwd|pwd)(?P<sep>\s*[=:]\s*)[^\s,;&'\"]+")
MASK = "***"


class AlertError(ValueError):
    """An alert was asked for without anything to tell."""


@dataclass(frozen=True)
class RunInfo:
    """What an alert names about its run."""

    run_id: str | None
    logical_date: str | None
    model_version: int | None


@dataclass(frozen=True)
class Alert:
    """An alert as raised: what was sent, where, whether it arrived, and its rows."""

    level: str
    subject: str
    message: str
    channel: str
    delivered: bool
    delivery_error: str | None
    alert_ids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "subject": self.subject, "channel": self.channel,
                "delivered": self.delivered, "delivery_error": self.delivery_error,
                "alert_ids": list(self.alert_ids)}


def without_secrets(text: str) -> str:
    """``text`` with the passwords of URLs and ``password=`` pairs masked."""
    text = URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return KEY_PASSWORD.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)


def crossing_from_json(record: Mapping[str, Any]) -> Crossing:
    """A crossing as the ``monitor`` task's XCom carries it."""
    try:
        return Crossing(metric=str(record["metric"]), segment=str(record.get("segment") or ""),
                        value=float(record["value"]), level=record["level"],
                        threshold=float(record["threshold"]), direction=record["direction"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AlertError(f"a crossing needs metric, value, level, threshold and direction; "
                         f"got {dict(record)!r} ({exc})") from None


def compose(run: RunInfo, crossings: Sequence[Crossing] = (), failure: str | None = None,
            empty: str | None = None) -> tuple[str, str, str]:
    """The alert's level, subject and plain-text body, for a failed run, an empty day or
    crossings (a failure says most, then an empty day)."""
    if failure is None and empty is None and not crossings:
        raise AlertError("an alert needs a failure, an empty day or at least one crossed "
                         "level")
    where = (f"run {run.run_id} ({run.logical_date or 'date unknown'}, model "
             f"{run.model_version if run.model_version is not None else 'unknown'})"
             if run.run_id else "a nightly before its run began")
    if failure is not None:
        level = "failed"
        subject = f"batchscore: {where} failed"
    elif empty is not None:
        level = "empty"
        subject = f"batchscore: {where} had no input events"
    else:
        level = "retrain" if any(c.level == "retrain" for c in crossings) else "warn"
        subject = (f"batchscore: {len(crossings)} metric level(s) crossed by {where}, "
                   f"worst {level}")
    lines = [f"Run:           {run.run_id or '-'}",
             f"Date:          {run.logical_date or '-'}",
             f"Model version: {run.model_version if run.model_version is not None else '-'}",
             f"Level:         {level}", ""]
    if failure is not None:
        lines += ["The run failed:", without_secrets(failure)]
    elif empty is not None:
        lines += ["The run's date had no input events:", without_secrets(empty), "",
                  "An empty day is almost always a broken upstream feed: check what loads "
                  "the day's events, then run the date again. Nothing was published; the "
                  "served version stays. BATCHSCORE_EMPTY_DAY=skip records such a run as "
                  "skipped, =fail as failed."]
    else:
        worst_first = sorted(crossings, key=lambda c: c.level != "retrain")
        lines += ["Crossed levels, worst first:",
                  *(f"- [{c.level}] {c.describe()}" for c in worst_first)]
        if level == "retrain":
            lines += ["", "A retrain level was crossed: the retraining signal "
                          "(batchscore://signals/retrain) starts batchscore_train."]
    if run.run_id:
        lines += ["", f"Details: batchscore runs show {run.run_id}"]
    return level, without_secrets(subject), "\n".join(lines)


def run_info(engine: Engine, run_id: str | None) -> RunInfo:
    if run_id is None:
        return RunInfo(None, None, None)
    with engine.connect() as conn:
        row = conn.execute(statement(conn,
            "SELECT logical_date, model_version FROM {schema}.runs WHERE run_id = :id"),
            {"id": run_id}).first()
    if row is None:
        return RunInfo(run_id, None, None)
    return RunInfo(run_id, row.logical_date.isoformat(), row.model_version)


def raise_alert(engine: Engine, settings: AlertSettings, run_id: str | None, *,
                crossings: Sequence[Crossing] = (), failure: str | None = None,
                empty: str | None = None, context: Mapping[str, Any] | None = None) -> Alert:
    """Tell on-call about a failed run (``failure``: why), a date without input events
    (``empty``: what was found empty) or ``crossings``.

    Sends on ``settings.channel``, then records one ``batchscore.alerts`` row per
    crossing (one for a failure) with whether delivery worked. A delivery
    failure is logged and recorded, never raised. The alert is sent even when
    PostgreSQL is out of reach; recording it then raises. ``context`` is the
    Airflow task's, when there is one.
    """
    try:
        run = run_info(engine, run_id)
    except Exception as err:  # PostgreSQL may be what failed the run: tell on-call anyway
        logger.warning("alert for run %s: its date and model are unknown (%s)", run_id,
                       type(err).__name__)
        run = RunInfo(run_id, None, None)
    level, subject, body = compose(run, crossings, failure, empty)
    delivered, error = deliver(settings, subject, body, context or {})
    message = f"{subject}\n\n{body}"
    rows = ([{"level": level, "metric": None, "segment": None, "value": None,
              "threshold": None}] if failure is not None or empty is not None else
            [{"level": c.level, "metric": c.metric, "segment": c.segment, "value": c.value,
              "threshold": c.threshold} for c in crossings])
    with engine.begin() as conn:
        ids = tuple(conn.execute(statement(conn,
            "INSERT INTO {schema}.alerts (run_id, level, metric, segment, value, threshold,"
            " message, channel, delivered, delivery_error) VALUES (:run_id, :level, :metric,"
            " :segment, :value, :threshold, :message, :channel, :delivered, :error)"
            " RETURNING alert_id"),
            {"run_id": run_id, "message": message, "channel": settings.channel,
             "delivered": delivered, "error": error, **row}).scalar_one() for row in rows)
    logger.info("alert %s for run %s: %d row(s) recorded, %s on %s", level, run_id, len(ids),
                "delivered" if delivered else "NOT delivered", settings.channel)
    return Alert(level=level, subject=subject, message=message, channel=settings.channel,
                 delivered=delivered, delivery_error=error, alert_ids=ids)


def deliver(settings: AlertSettings, subject: str, body: str,
            context: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Send on the configured channel: ``(True, None)``, or ``(False, why)``."""
    if settings.channel == "log":
        logger.warning("ALERT %s\n%s", subject, body)
        return True, None
    try:
        send_email(settings, subject, body, context)
    except Exception as err:  # a lost alert is recorded; the run it is about goes on
        error = without_secrets(f"{type(err).__name__}: {err}")
        logger.error("alert %r could not be sent by smtp (connection %s): %s", subject,
                     settings.smtp_conn_id, error)
        return False, error
    return True, None


def send_email(settings: AlertSettings, subject: str, body: str,
               context: Mapping[str, Any]) -> None:
    """One email to ``settings.emails`` through the Airflow SMTP connection."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    notifier = SmtpNotifier(to=list(settings.emails), from_email=settings.from_email,
                            subject=subject, html_content=f"<pre>{html.escape(body)}</pre>",
                            smtp_conn_id=settings.smtp_conn_id)
    # notify(), not the notifier's __call__: that would render our text as a Jinja
    # template, and error messages may hold braces.
    notifier.notify(dict(context))
