"""The alert and Prometheus settings, and the alert text: what is masked and what is said."""

from pathlib import Path

import pytest

from jobs.monitoring.alerts import AlertError, RunInfo, compose, crossing_from_json, without_secrets
from jobs.platform.config import AlertSettings, ConfigError, PrometheusSettings, Settings


def test_alerts_default_to_the_log_and_metrics_to_a_textfile_under_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path)})
    assert settings.alerts == AlertSettings(channel="log", emails=(),
                                            smtp_conn_id="smtp_default", from_email=None)
    assert settings.prometheus == PrometheusSettings(textfile_dir=None, pushgateway_url=None)
    assert settings.prometheus.folder(settings.home) == tmp_path / "metrics"


def test_every_alert_and_prometheus_setting_is_read(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "BATCHSCORE_ALERT_CHANNEL": "SMTP",
        "BATCHSCORE_ALERT_EMAILS": " oncall@example.org ,ds@example.org,",
        "BATCHSCORE_ALERT_SMTP_CONN_ID": "mail_relay",
        "BATCHSCORE_ALERT_FROM": "batchscore@example.org",
        "BATCHSCORE_METRICS_DIR": str(tmp_path / "textfiles"),
        "BATCHSCORE_PUSHGATEWAY_URL": "http://127.0.0.1:9091",
    })
    assert settings.alerts == AlertSettings(
        channel="smtp", emails=("oncall@example.org", "ds@example.org"),
        smtp_conn_id="mail_relay", from_email="batchscore@example.org")
    assert settings.prometheus.folder(settings.home) == tmp_path / "textfiles"
    assert settings.prometheus.pushgateway_url == "http://127.0.0.1:9091"


@pytest.mark.parametrize(("env", "message"), [
    ({"BATCHSCORE_ALERT_CHANNEL": "pager"},
     "BATCHSCORE_ALERT_CHANNEL must be one of log, smtp, got 'pager'"),
    ({"BATCHSCORE_ALERT_CHANNEL": "smtp"},
     "BATCHSCORE_ALERT_CHANNEL=smtp needs BATCHSCORE_ALERT_EMAILS"),
    ({"BATCHSCORE_ALERT_EMAILS": "oncall@example.org;ds@example.org"},
     "BATCHSCORE_ALERT_EMAILS: 'oncall@example.org;ds@example.org' is not an email address"),
    ({"BATCHSCORE_ALERT_EMAILS": "On Call <oncall@example.org>"},
     "BATCHSCORE_ALERT_EMAILS: 'On Call <oncall@example.org>' is not an email address"),
    ({"BATCHSCORE_ALERT_FROM": "batchscore"},
     "BATCHSCORE_ALERT_FROM: 'batchscore' is not an email address"),
    ({"BATCHSCORE_PUSHGATEWAY_URL": "pushgw:9091"},
     "BATCHSCORE_PUSHGATEWAY_URL must be an http:// or https:// URL, got 'pushgw:9091'"),
])
def test_bad_alert_and_prometheus_settings_are_named(env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        Settings.from_env(env)


def test_passwords_in_urls_and_key_value_pairs_are_masked() -> None:
    assert without_secrets("postgresql://u:p%40ss@db:5432/x and redis://:rpw@cache:6379/0") == (
        "postgresql://u:***@db:5432/x and redis://:***@cache:6379/0")
    assert without_secrets("host=db password=s3cret user=u, PWD: other") == (
        "host=db password=*** user=u, PWD: ***")
    assert without_secrets("redis://cache:6379/0 has no password") == (
        "redis://cache:6379/0 has no password")


def test_an_alert_needs_something_to_tell_and_a_crossing_its_fields() -> None:
    with pytest.raises(AlertError, match="needs a failure, an empty day or at least one "
                                          "crossed level"):
        compose(RunInfo("r", "2026-11-20", 1))
    with pytest.raises(AlertError, match="a crossing needs metric, value, level, threshold"):
        crossing_from_json({"metric": "input.rows", "level": "warn"})


def test_a_crossing_from_the_monitor_xcom_reads_back_as_it_was() -> None:
    crossing = crossing_from_json({"metric": "realized.ndcg_share", "segment": "model:3",
                                   "value": 0.61, "level": "retrain", "threshold": 0.7,
                                   "direction": "below"})
    assert crossing.describe() == ("realized.ndcg_share (model:3) = 0.61 is below its retrain "
                                   "level 0.7")
