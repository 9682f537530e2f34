"""Which PostgreSQL and Redis batchscore talks to.

With URLs configured, those servers are used and nothing is started. Without
them, real embedded servers are started under ``BATCHSCORE_HOME`` and reused
by later commands until ``batchscore services stop``. Redis is reached as one of
three users (:data:`~jobs.platform.services.redis.Role`): the writer publishes,
the reader serves product services, the administrator (embedded server only)
starts, stops and resets it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.platform.config import ConfigError, Settings
from jobs.platform.services.postgres import EmbeddedPostgres
from jobs.platform.services.redis import EmbeddedRedis, Role

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    redis_url: str
    embedded: bool


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.services_dir / "postgres")


def embedded_redis(settings: Settings) -> EmbeddedRedis:
    return EmbeddedRedis(settings.services_dir / "redis", settings.home)


@contextmanager
def exclusive(settings: Settings) -> Iterator[None]:
    """Serialise starting and stopping, so two commands never start two servers."""
    settings.services_dir.mkdir(parents=True, exist_ok=True)
    with (settings.services_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def database_url(settings: Settings) -> str:
    """The configured database URL, or the embedded server's (started if needed)."""
    if settings.database_url:
        return settings.database_url
    with exclusive(settings):
        return embedded_postgres(settings).ensure_running()


def redis_url(settings: Settings, role: Role) -> str:
    """The URL ``role`` connects to Redis with: the configured one, or the embedded
    server's (started if needed, with this deployment's users)."""
    if settings.redis_url:
        if role == "writer":
            return settings.redis_url
        if role == "reader" and settings.redis_reader_url:
            return settings.redis_reader_url
        if role == "reader":
            raise ConfigError("BATCHSCORE_REDIS_READER_URL is not set: give the URL of the "
                              f"reader user ({settings.names.redis_reader_user}) of the "
                              "configured Redis")
        raise ConfigError("batchscore holds no administrator URL for a configured Redis; "
                          "its administrator manages the server")
    with exclusive(settings):
        return embedded_redis(settings).ensure_running(settings.names, role)


def resolve(settings: Settings) -> Endpoints:
    return Endpoints(
        database_url=database_url(settings),
        redis_url=redis_url(settings, "writer"),
        embedded=settings.database_url is None or settings.redis_url is None,
    )


def stop_embedded(settings: Settings) -> dict[str, bool]:
    """Stop whichever embedded servers run under ``settings.home``."""
    with exclusive(settings):
        return {
            "postgres": embedded_postgres(settings).stop(),
            "redis": embedded_redis(settings).stop(),
        }


def database(settings: Settings) -> Engine:
    """An engine for the database in use. The embedded one is migrated on first use; a
    configured one must already be (``batchscore db upgrade``), or this says so."""
    from jobs.platform.db import engine_for, ensure_schema, upgrade

    engine = engine_for(database_url(settings), settings.names)
    if settings.database_url is None:
        upgrade(engine)
    else:
        ensure_schema(engine)
    return engine


def redacted(url: str) -> str:
    """A server URL with its password hidden, for printing."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)
