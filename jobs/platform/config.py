"""The one place that reads batchscore's environment."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobs.platform.names import (
    DEFAULT_BI_SCHEMA,
    DEFAULT_REDIS_PREFIX,
    DEFAULT_SCHEMA,
    InvalidNameError,
    Names,
)

DEFAULT_HOME = ".batchscore"
DEFAULT_SPARK_MASTER = "local[*]"
DEFAULT_TOP_K = 50
# Published versions PostgreSQL keeps besides the served one, for history and rollback
# (about 5.4 GB each at 10,000,000 users and K = 50; README, Performance).
DEFAULT_KEEP_VERSIONS = 7
# 25,000 items: the EASE solve's float64 matrix is 5 GB and its float32 weights 2.5 GB,
# within a 24 GiB driver beside Spark (README, "Choosing a family").
DEFAULT_EASE_MAX_ITEMS = 25_000
# What a nightly does with a date that has no input events: both raise an alert.
EMPTY_DAY_POLICIES = ("skip", "fail")
DEFAULT_EMPTY_DAY = "skip"
ALERT_CHANNELS = ("log", "smtp")
DEFAULT_SMTP_CONN_ID = "smtp_default"
# A plain address: something@domain, no spaces, names or angle brackets.
EMAIL_PATTERN = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+")


class ConfigError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go (README, Alerts and the retraining signal).

    ``channel`` ``log`` writes them to the log; ``smtp`` sends them to
    ``emails`` through the Airflow SMTP connection ``smtp_conn_id``, which
    holds the server and its credentials (``from_email`` defaults to the
    connection's).
    """

    channel: str = "log"
    emails: tuple[str, ...] = ()
    smtp_conn_id: str = DEFAULT_SMTP_CONN_ID
    from_email: str | None = None


@dataclass(frozen=True)
class PrometheusSettings:
    """Where each run's metrics are written for Prometheus: a Pushgateway when
    ``pushgateway_url`` is set, else a textfile in ``textfile_dir`` for the node
    exporter's textfile collector (``None``: ``BATCHSCORE_HOME/metrics``)."""

    textfile_dir: Path | None = None
    pushgateway_url: str | None = None

    def folder(self, home: Path) -> Path:
        """The textfile's folder for a deployment whose state is in ``home``."""
        return self.textfile_dir or home / "metrics"


@dataclass(frozen=True)
class Settings:
    """Where batchscore keeps its state and which servers it talks to.

    ``database_url`` and ``redis_url`` are ``None`` when the embedded servers
    under ``home`` should be used. ``database_url`` is the owner's (it applies
    the migrations); ``writer_database_url`` and ``bi_database_url`` are the
    logins of the nightly's role and of BI on the same configured server.
    ``redis_url`` is the writer's (publishing, reconcile, rollback, status),
    ``redis_reader_url`` the reader's (``batchscore recs``, product services),
    each with its user's credentials.
    """

    home: Path
    database_url: str | None
    redis_url: str | None
    spark_master: str
    top_k: int
    names: Names = field(default_factory=Names)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    redis_reader_url: str | None = None
    writer_database_url: str | None = None
    bi_database_url: str | None = None
    # Where the interaction history's Parquet files are (jobs.data.history); None: a
    # folder under home named by the database.
    history_uri: str | None = None
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    empty_day: str = DEFAULT_EMPTY_DAY
    # The largest catalogue an EASE model is fitted over (jobs.training.ease).
    ease_max_items: int = DEFAULT_EASE_MAX_ITEMS

    @property
    def services_dir(self) -> Path:
        return self.home / "services"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``BATCHSCORE_*`` variables; blank values count as unset."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        top_k_text = get("BATCHSCORE_TOP_K") or str(DEFAULT_TOP_K)
        try:
            top_k = int(top_k_text)
        except ValueError:
            raise ConfigError(
                f"BATCHSCORE_TOP_K must be a whole number, got {top_k_text!r}"
            ) from None
        if top_k < 1:
            raise ConfigError(f"BATCHSCORE_TOP_K must be at least 1, got {top_k}")
        keep_text = get("BATCHSCORE_KEEP_VERSIONS") or str(DEFAULT_KEEP_VERSIONS)
        if not keep_text.isdigit() or int(keep_text) < 1:
            raise ConfigError("BATCHSCORE_KEEP_VERSIONS must be a whole number of at least 1 "
                              f"(published versions kept besides the served one), got "
                              f"{keep_text!r}")
        ease_text = get("BATCHSCORE_EASE_MAX_ITEMS") or str(DEFAULT_EASE_MAX_ITEMS)
        if not ease_text.isdigit() or int(ease_text) < 1:
            raise ConfigError("BATCHSCORE_EASE_MAX_ITEMS must be a whole number of at least 1 "
                              "(the largest catalogue an EASE model is fitted over), got "
                              f"{ease_text!r}")
        empty_day = (get("BATCHSCORE_EMPTY_DAY") or DEFAULT_EMPTY_DAY).lower()
        if empty_day not in EMPTY_DAY_POLICIES:
            raise ConfigError("BATCHSCORE_EMPTY_DAY must be skip (record the run as skipped) "
                              "or fail (fail the run); both raise an alert. Got "
                              f"{empty_day!r}")

        database_urls = {}
        for variable in ("BATCHSCORE_DATABASE_URL", "BATCHSCORE_WRITER_DATABASE_URL",
                         "BATCHSCORE_BI_DATABASE_URL"):
            url = get(variable)
            if url and not url.startswith(("postgresql://", "postgres://")):
                raise ConfigError(f"{variable} must be a postgresql:// URL, "
                                  f"got {url.split('://')[0]!r}")
            database_urls[variable] = url
        database_url = database_urls["BATCHSCORE_DATABASE_URL"]
        for variable in ("BATCHSCORE_WRITER_DATABASE_URL", "BATCHSCORE_BI_DATABASE_URL"):
            if database_urls[variable] and not database_url:
                raise ConfigError(f"{variable} is set but BATCHSCORE_DATABASE_URL is not: "
                                  "set the owner's URL too (it applies the migrations), or "
                                  "neither for the embedded server")
        redis_url = redis_setting(get, "BATCHSCORE_REDIS_URL")
        redis_reader_url = redis_setting(get, "BATCHSCORE_REDIS_READER_URL")
        if redis_reader_url and not redis_url:
            raise ConfigError("BATCHSCORE_REDIS_READER_URL is set but BATCHSCORE_REDIS_URL is "
                              "not: set both for a configured Redis, or neither for the "
                              "embedded one")
        try:
            names = Names(schema=get("BATCHSCORE_SCHEMA") or DEFAULT_SCHEMA,
                          bi_schema=get("BATCHSCORE_BI_SCHEMA") or DEFAULT_BI_SCHEMA,
                          redis_prefix=get("BATCHSCORE_REDIS_PREFIX") or DEFAULT_REDIS_PREFIX)
        except InvalidNameError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            home=Path(get("BATCHSCORE_HOME") or DEFAULT_HOME).expanduser().absolute(),
            alerts=alert_settings(get),
            prometheus=prometheus_settings(get),
            database_url=database_url,
            redis_url=redis_url,
            spark_master=get("BATCHSCORE_SPARK_MASTER") or DEFAULT_SPARK_MASTER,
            top_k=top_k,
            names=names,
            redis_reader_url=redis_reader_url,
            writer_database_url=database_urls["BATCHSCORE_WRITER_DATABASE_URL"],
            bi_database_url=database_urls["BATCHSCORE_BI_DATABASE_URL"],
            history_uri=get("BATCHSCORE_HISTORY_URI"),
            keep_versions=int(keep_text),
            empty_day=empty_day,
            ease_max_items=int(ease_text),
        )


def alert_settings(get: Callable[[str], str | None]) -> AlertSettings:
    channel = (get("BATCHSCORE_ALERT_CHANNEL") or "log").lower()
    if channel not in ALERT_CHANNELS:
        raise ConfigError(f"BATCHSCORE_ALERT_CHANNEL must be one of {', '.join(ALERT_CHANNELS)}, "
                          f"got {channel!r}")
    emails = tuple(address.strip() for address in (get("BATCHSCORE_ALERT_EMAILS") or "").split(",")
                   if address.strip())
    for address in emails:
        if not EMAIL_PATTERN.fullmatch(address):
            raise ConfigError(f"BATCHSCORE_ALERT_EMAILS: {address!r} is not an email address "
                              "(give plain addresses, separated by commas)")
    if channel == "smtp" and not emails:
        raise ConfigError("BATCHSCORE_ALERT_CHANNEL=smtp needs BATCHSCORE_ALERT_EMAILS, the "
                          "addresses alerts go to, separated by commas")
    from_email = get("BATCHSCORE_ALERT_FROM")
    if from_email and not EMAIL_PATTERN.fullmatch(from_email):
        raise ConfigError(f"BATCHSCORE_ALERT_FROM: {from_email!r} is not an email address")
    return AlertSettings(channel=channel, emails=emails,
                         smtp_conn_id=get("BATCHSCORE_ALERT_SMTP_CONN_ID") or DEFAULT_SMTP_CONN_ID,
                         from_email=from_email)


def prometheus_settings(get: Callable[[str], str | None]) -> PrometheusSettings:
    url = get("BATCHSCORE_PUSHGATEWAY_URL")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("BATCHSCORE_PUSHGATEWAY_URL must be an http:// or https:// URL, "
                          f"got {url.split('://')[0]!r}")
    textfile_dir = get("BATCHSCORE_METRICS_DIR")
    return PrometheusSettings(
        textfile_dir=Path(textfile_dir).expanduser().absolute() if textfile_dir else None,
        pushgateway_url=url)


def redis_setting(get: Callable[[str], str | None], name: str) -> str | None:
    """A Redis URL setting, checked for its scheme (the message never shows the URL: it
    may hold a password)."""
    url = get(name)
    if url and not url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://",
                                   "rediss+cluster://")):
        raise ConfigError(f"{name} must be a redis:// URL (redis+cluster:// for a Redis "
                          f"Cluster), got {url.split('://')[0]!r}")
    return url
