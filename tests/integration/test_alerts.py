"""Alerts sent through Airflow's SMTP provider to a real SMTP server on loopback, and
recorded in batchscore.alerts, against the embedded PostgreSQL."""

from __future__ import annotations

import email
import html
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from email.message import Message

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from jobs.monitoring.alerts import raise_alert
from jobs.monitoring.thresholds import Crossing
from jobs.platform import runs
from jobs.platform.config import AlertSettings
from jobs.platform.services.ports import free_port

SMTP_LOGIN = "alerts"
SMTP_PASSWORD = "smtp-pw-7f3k"
DB_PASSWORD = "db-pw-9q2x"
CONN_ID = "batchscore_alerts_smtp"
TO = ("oncall@example.org", "ds-team@example.org")
SETTINGS = AlertSettings(channel="smtp", emails=TO, smtp_conn_id=CONN_ID)
PSI = Crossing(metric="input.item_popularity_psi", segment="vs_training", value=0.41,
               level="retrain", threshold=0.25, direction="above")
COVERAGE = Crossing(metric="predictions.catalog_coverage", segment="", value=0.08,
                    level="warn", threshold=0.1, direction="below")


@dataclass
class Mailbox:
    """What the SMTP server received: each message, and the logins it was sent with."""

    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            ok = (auth_data.login.decode(), auth_data.password.decode()) == (SMTP_LOGIN,
                                                                             SMTP_PASSWORD)
            return AuthResult(success=ok)
        return AuthResult(success=False)


def smtp_connection(port: int) -> str:
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                       "login": SMTP_LOGIN, "password": SMTP_PASSWORD,
                       "extra": {"disable_tls": True, "disable_ssl": True, "timeout": 5,
                                 "retry_limit": 0, "from_email": "batchscore@example.org"}})


@pytest.fixture
def mailbox(monkeypatch) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 with LOGIN auth, and the Airflow
    connection pointing at it."""
    box = Mailbox()
    port = free_port()
    server = Controller(box, hostname="127.0.0.1", port=port, authenticator=box.authenticate,
                        auth_require_tls=False)
    server.start()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", smtp_connection(port))
    yield box
    server.stop()


@pytest.fixture
def run_id(engine, model_version) -> str:
    return runs.start(engine, "nightly", date(2026, 11, 20), model_version)


def body_of(message: Message) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/html")
    text = part.get_payload(decode=True).decode()
    return html.unescape(text.removeprefix("<pre>").removesuffix("</pre>"))


def alert_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text(
            "SELECT b.run_id, b.level, b.metric, b.segment, b.value, b.threshold, b.channel,"
            " b.delivered, b.message, a.delivery_error FROM bi.alerts b"
            " JOIN batchscore.alerts a USING (alert_id) ORDER BY alert_id"))]


def test_a_failed_run_is_mailed_through_the_airflow_connection_and_recorded(
        engine, mailbox, run_id, model_version) -> None:
    failure = (f"task switch failed: OperationalError: could not connect to "
               f"postgresql://batchscore:{DB_PASSWORD}@db:5432/batchscore; dsn: host=db "
               f"password={DB_PASSWORD} user=batchscore")

    alert = raise_alert(engine, SETTINGS, run_id, failure=failure)

    assert (alert.level, alert.channel, alert.delivered, alert.delivery_error) == (
        "failed", "smtp", True, None)
    # The connection's credentials logged in; the message went to every recipient.
    assert mailbox.logins == [(SMTP_LOGIN, SMTP_PASSWORD)]
    [(recipients, message)] = mailbox.messages
    assert recipients == list(TO)
    assert message["To"] == ", ".join(TO)
    assert message["From"] == "batchscore@example.org"
    assert message["Subject"] == (f"batchscore: run {run_id} (2026-11-20, model "
                                  f"{model_version}) failed")
    body = body_of(message)
    assert f"Run:           {run_id}" in body
    assert "Date:          2026-11-20" in body
    assert f"Model version: {model_version}" in body
    assert "Level:         failed" in body
    assert ("could not connect to postgresql://batchscore:***@db:5432/batchscore; dsn: "
            "host=db password=*** user=batchscore") in body
    [row] = alert_rows(engine)
    assert {k: row[k] for k in ("run_id", "level", "metric", "channel", "delivered",
                                "delivery_error")} == {
        "run_id": run_id, "level": "failed", "metric": None, "channel": "smtp",
        "delivered": True, "delivery_error": None}
    assert row["message"] == f"{message['Subject']}\n\n{body}"
    for secret in (DB_PASSWORD, SMTP_PASSWORD):
        assert secret not in body and secret not in row["message"]


def test_crossings_are_one_mail_naming_each_metric_and_a_row_each(engine, mailbox, run_id,
                                                                    model_version) -> None:
    alert = raise_alert(engine, SETTINGS, run_id, crossings=[COVERAGE, PSI])

    assert alert.level == "retrain" and alert.delivered
    [(_, message)] = mailbox.messages
    assert message["Subject"] == (f"batchscore: 2 metric level(s) crossed by run {run_id} "
                                  f"(2026-11-20, model {model_version}), worst retrain")
    body = body_of(message)
    # Worst first, each in the words of Crossing.describe().
    assert ("Crossed levels, worst first:\n"
            "- [retrain] input.item_popularity_psi (vs_training) = 0.41 is above its retrain "
            "level 0.25\n"
            "- [warn] predictions.catalog_coverage = 0.08 is below its warn level 0.1") in body
    assert "batchscore://signals/retrain" in body
    rows = alert_rows(engine)
    assert [(r["level"], r["metric"], r["segment"], r["value"], r["threshold"], r["delivered"])
            for r in rows] == [
        ("warn", "predictions.catalog_coverage", "", 0.08, 0.1, True),
        ("retrain", "input.item_popularity_psi", "vs_training", 0.41, 0.25, True)]
    assert len(alert.alert_ids) == 2


def test_a_server_that_is_down_records_the_alert_undelivered_without_raising(
        engine, monkeypatch, run_id, caplog) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", smtp_connection(free_port()))
    with caplog.at_level(logging.ERROR, logger="jobs.monitoring.alerts"):
        alert = raise_alert(engine, SETTINGS, run_id, crossings=[COVERAGE])

    assert alert.delivered is False
    assert alert.delivery_error.startswith("ConnectionRefusedError: ")
    [row] = alert_rows(engine)
    assert (row["level"], row["delivered"], row["delivery_error"]) == (
        "warn", False, alert.delivery_error)
    assert "could not be sent by smtp (connection batchscore_alerts_smtp)" in caplog.text
    assert SMTP_PASSWORD not in caplog.text and SMTP_PASSWORD not in row["delivery_error"]


def test_a_missing_smtp_connection_is_recorded_as_the_delivery_error(engine, run_id) -> None:
    settings = AlertSettings(channel="smtp", emails=TO, smtp_conn_id="no_such_smtp")
    alert = raise_alert(engine, settings, run_id, failure="boom")
    assert alert.delivered is False
    assert "SMTP connection is not found" in alert.delivery_error


def test_the_log_channel_logs_the_alert_and_counts_it_delivered(engine, run_id,
                                                                caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="jobs.monitoring.alerts"):
        alert = raise_alert(engine, AlertSettings(), run_id, crossings=[PSI])
    assert (alert.channel, alert.delivered) == ("log", True)
    assert "ALERT batchscore: 1 metric level(s) crossed" in caplog.text
    assert "input.item_popularity_psi (vs_training) = 0.41 is above its retrain" in caplog.text
    [row] = alert_rows(engine)
    assert (row["channel"], row["level"], row["delivered"]) == ("log", "retrain", True)


def test_an_alert_without_a_run_is_recorded_without_one(engine) -> None:
    alert = raise_alert(engine, AlertSettings(), None, failure="task reconcile failed: boom")
    assert alert.subject == "batchscore: a nightly before its run began failed"
    [row] = alert_rows(engine)
    assert (row["run_id"], row["level"]) == (None, "failed")
