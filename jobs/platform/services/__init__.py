"""Which PostgreSQL and Redis batchscore talks to.

With URLs configured, those servers are used and nothing is started. Without
them, real embedded servers are started under ``BATCHSCORE_HOME`` and reused
by later commands until ``batchscore services stop``. Redis is reached as one of
three users (:data:`~jobs.platform.services.redis.Role`): the writer publishes,
the reader serves product services, the administrator (embedded server only)
starts, stops and resets it.

PostgreSQL is reached as one of three roles (``sql/009_roles.sql``):
``owner`` (applies migrations), ``writer`` (what every job connects as) and
``bi``. On the embedded server their logins get generated passwords
(:mod:`jobs.platform.secrets`) each time it is migrated.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.platform.config import ConfigError, Settings
from jobs.platform.secrets import secret
from jobs.platform.services.postgres import SUPERUSER, EmbeddedPostgres
from jobs.platform.services.redis import EmbeddedRedis, Role

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

OWNER, WRITER, BI = "owner", "writer", "bi"
ROLES = (OWNER, WRITER, BI)


@dataclass(frozen=True)
class Endpoints:
    """The servers in use. ``database_url`` is the one migrations run with: the configured
    owner's, or the embedded server's superuser's."""

    database_url: str
    redis_url: str
    embedded: bool


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.services_dir / "postgres", secret(settings.home, SUPERUSER))


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


def admin_url(settings: Settings) -> str:
    """The URL migrations run with: the configured owner's, or the embedded server's
    superuser's (the server started if needed)."""
    if settings.database_url:
        return settings.database_url
    with exclusive(settings):
        return embedded_postgres(settings).ensure_running()


def postgres_secret(role: str) -> str:
    """The name of the secret holding a PostgreSQL role's password (Redis users' are
    ``redis_<user>``: a writer of each may have the same name)."""
    return f"postgres_{role}"


def role_name(settings: Settings, role: str) -> str:
    """The PostgreSQL role that plays ``role`` (one of :data:`ROLES`) in this deployment."""
    names = settings.names
    roles = {OWNER: names.owner_role, WRITER: names.writer_role, BI: names.bi_role}
    if role not in roles:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return roles[role]


def upgrade(settings: Settings) -> list[str]:
    """Apply pending migrations (see :func:`jobs.platform.db.upgrade`); on the embedded
    server, then let each role log in with its generated password."""
    from jobs.platform.db import engine_for, set_logins
    from jobs.platform.db import upgrade as apply_migrations

    engine = engine_for(admin_url(settings), settings.names)
    try:
        applied = apply_migrations(engine)
        if settings.database_url is None:
            set_logins(engine, {role_name(settings, role):
                                secret(settings.home, postgres_secret(role_name(settings, role)))
                                for role in ROLES})
    finally:
        engine.dispose()
    return applied


def database_url(settings: Settings, role: str = OWNER) -> str:
    """The URL (password included) ``role`` connects with.

    Configured: BATCHSCORE_DATABASE_URL for the owner, BATCHSCORE_WRITER_DATABASE_URL
    (the owner's when unset, with a warning) and BATCHSCORE_BI_DATABASE_URL (required).
    Embedded: the server is started and migrated if needed, and the role's login is
    the one the migration made.
    """
    name = role_name(settings, role)
    if settings.database_url:
        if role == OWNER:
            return settings.database_url
        if role == WRITER:
            if settings.writer_database_url:
                return settings.writer_database_url
            logger.warning("BATCHSCORE_WRITER_DATABASE_URL is not set: connecting as the "
                           "owner (BATCHSCORE_DATABASE_URL); set it to %s's URL", name)
            return settings.database_url
        if settings.bi_database_url:
            return settings.bi_database_url
        raise ConfigError(f"BATCHSCORE_BI_DATABASE_URL is not set: give {name}'s URL "
                          "(postgresql://USER:PASSWORD@HOST:PORT/DB) for the configured server")
    upgrade(settings)
    return embedded_postgres(settings).url(name, secret(settings.home, postgres_secret(name)))


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
        database_url=admin_url(settings),
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


def database(settings: Settings, role: str = WRITER) -> Engine:
    """An engine for the database in use, connected as ``role``. The embedded one is
    migrated on first use; a configured one must already be (``batchscore db upgrade``),
    or this says so."""
    from jobs.platform.db import engine_for, ensure_schema

    engine = engine_for(database_url(settings, role), settings.names)
    if settings.database_url is not None and role != BI:
        ensure_schema(engine)
    return engine


def redacted(url: str) -> str:
    """A server URL with its password hidden, for printing."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)
