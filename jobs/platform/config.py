"""The one place that reads batchscore's environment."""

from __future__ import annotations

import os
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


class ConfigError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    """Where batchscore keeps its state and which servers it talks to.

    ``database_url`` and ``redis_url`` are ``None`` when the embedded servers
    under ``home`` should be used. ``redis_url`` is the writer's (publishing,
    reconcile, rollback, status), ``redis_reader_url`` the reader's
    (``batchscore recs``, product services), each with its user's credentials.
    """

    home: Path
    database_url: str | None
    redis_url: str | None
    spark_master: str
    top_k: int
    names: Names = field(default_factory=Names)
    redis_reader_url: str | None = None

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

        database_url = get("BATCHSCORE_DATABASE_URL")
        if database_url and not database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "BATCHSCORE_DATABASE_URL must be a postgresql:// URL, "
                f"got {database_url.split('://')[0]!r}"
            )
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
            database_url=database_url,
            redis_url=redis_url,
            spark_master=get("BATCHSCORE_SPARK_MASTER") or DEFAULT_SPARK_MASTER,
            top_k=top_k,
            names=names,
            redis_reader_url=redis_reader_url,
        )


def redis_setting(get: Callable[[str], str | None], name: str) -> str | None:
    """A Redis URL setting, checked for its scheme (the message never shows the URL: it
    may hold a password)."""
    url = get(name)
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{name} must be a redis:// URL, got {url.split('://')[0]!r}")
    return url
