"""Debian's PostgreSQL 15 and Redis 7, the servers many users run: their packages'
programs started under a folder of our own on free loopback ports, with authentication
on, exactly as the embedded servers are (the tests' system servers, `make bench-scale
SERVERS=debian`)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobs.platform.names import Names
from jobs.platform.services.postgres import EmbeddedPostgres
from jobs.platform.services.redis import EmbeddedRedis

DEBIAN_POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
DEBIAN_REDIS_SERVER = Path("/usr/bin/redis-server")
INSTALL_HINT = "apt-get install postgresql-15 redis-server"


class MissingServerError(RuntimeError):
    """A Debian package's server program is not installed."""


def require_redis_server() -> Path:
    """Debian's ``redis-server``, or an error naming the package to install."""
    if not os.access(DEBIAN_REDIS_SERVER, os.X_OK):
        raise MissingServerError(f"Debian's Redis is missing ({DEBIAN_REDIS_SERVER}): "
                                 "apt-get install redis-server")
    return DEBIAN_REDIS_SERVER


@contextmanager
def debian_servers(root: Path) -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis]]:
    """Debian's PostgreSQL and Redis running with their data under ``root`` for as long
    as the block runs, stopped after (their data stays under ``root``)."""
    missing = [str(path) for path in (DEBIAN_POSTGRES_BIN / "pg_ctl", DEBIAN_REDIS_SERVER)
               if not os.access(path, os.X_OK)]
    if missing:
        raise MissingServerError(f"Debian's servers are missing ({', '.join(missing)}): "
                                 f"{INSTALL_HINT}")
    postgres = EmbeddedPostgres(root / "postgres", secrets.token_urlsafe(16),
                                bin_dir=DEBIAN_POSTGRES_BIN)
    redis_server = EmbeddedRedis(root / "redis", root, executable=DEBIAN_REDIS_SERVER)
    try:
        postgres.ensure_running()
        redis_server.ensure_running(Names(), "admin")
        yield postgres, redis_server
    finally:
        redis_server.stop()
        postgres.stop()
