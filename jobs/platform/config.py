"""The one place that reads batchscore's environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
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
    under ``home`` should be used. ``database_url`` is the owner's (it applies
    the migrations); ``writer_database_url`` and ``bi_database_url`` are the
    logins of the nightly's role and of BI on the same configured server.
    """

    home: Path
    database_url: str | None
    redis_url: str | None
    spark_master: str
    top_k: int
    names: Names = field(default_factory=Names)
    writer_database_url: str | None = None
    bi_database_url: str | None = None

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
        redis_url = get("BATCHSCORE_REDIS_URL")
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"BATCHSCORE_REDIS_URL must be a redis:// URL, got {redis_url.split('://')[0]!r}"
            )
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
            writer_database_url=database_urls["BATCHSCORE_WRITER_DATABASE_URL"],
            bi_database_url=database_urls["BATCHSCORE_BI_DATABASE_URL"],
        )
