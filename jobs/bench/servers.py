"""Which PostgreSQL and Redis the benchmarks use, and the peers' command-line tools.

The system servers on 127.0.0.1 when they answer, else the embedded ones (or, for
the scale run, Debian's started for it); ours and the peers always target the same
server.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg2
from psycopg2 import sql

from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.services.debian import debian_servers

logger = logging.getLogger(__name__)

SYSTEM_POSTGRES = ("127.0.0.1", 5432)
SYSTEM_REDIS = ("127.0.0.1", 6379)
BENCH_DATABASE = "batchscore_bench"
# A Redis database of its own, so that benchmarks never touch anyone's keys.
BENCH_REDIS_DB = 15
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
JDBC_HINT = ("the PostgreSQL JDBC driver is missing: on Debian or Ubuntu, "
             "`apt-get install -y libpostgresql-jdbc-java` puts it at " + str(JDBC_JAR))


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str
    where: str

    @classmethod
    def redis_only(cls, redis_url: str, where: str) -> Servers:
        """A Redis the benchmark started for its Redis pairs alone (no PostgreSQL)."""
        return cls(database_url="", redis_url=redis_url, where=where)

    @property
    def redis_host_port_db(self) -> tuple[str, int, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379, int(
            (parts.path or "/0").lstrip("/") or 0)

    @property
    def redis_cli_auth(self) -> tuple[list[str], dict[str, str]]:
        """redis-cli's arguments and environment for the URL's user: the password goes in
        ``REDISCLI_AUTH``, never on the command line."""
        parts = urlsplit(self.redis_url)
        if not parts.password:
            return [], {}
        return (["--user", unquote(parts.username or "default")],
                {"REDISCLI_AUTH": unquote(parts.password)})

    @property
    def jdbc_url(self) -> str:
        parts = urlsplit(self.database_url)
        query = f"user={parts.username or 'postgres'}"
        if parts.password:
            query += f"&password={parts.password}"
        return (f"jdbc:postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"
                f"?{query}&reWriteBatchedInserts=true")


def answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def resolve(settings: Settings) -> Servers:
    """The system servers when both answer, else the embedded ones under ``settings.home``."""
    if answers(SYSTEM_POSTGRES) and answers(SYSTEM_REDIS):
        admin = "postgresql://postgres@{}:{}/postgres".format(*SYSTEM_POSTGRES)
        where = "system PostgreSQL and Redis on 127.0.0.1"
    else:
        embedded = replace(settings, database_url=None, redis_url=None, redis_reader_url=None)
        admin = services.resolve(embedded).database_url
        # The benchmark owns its database of the embedded Redis, as the administrator.
        redis_url = (services.redis_url(embedded, "admin").rsplit("/", 1)[0]
                     + f"/{BENCH_REDIS_DB}")
        where = "embedded PostgreSQL and Redis"
    database_url = create_database(admin, BENCH_DATABASE)
    if where.startswith("system"):
        redis_url = "redis://{}:{}/{}".format(*SYSTEM_REDIS, BENCH_REDIS_DB)
    return Servers(database_url=database_url, redis_url=redis_url, where=where)


@contextmanager
def debian_or_resolved(settings: Settings, work: Path, debian: bool) -> Iterator[Servers]:
    """With ``debian``, Debian's PostgreSQL 15 and Redis 7 started under ``work`` for the
    block and stopped after; else the servers :func:`resolve` finds."""
    if not debian:
        yield resolve(settings)
        return
    with debian_servers(work / "debian-servers") as (postgres, redis_server):
        yield Servers(
            database_url=create_database(postgres.url(), BENCH_DATABASE),
            redis_url=redis_server.admin_url().rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}",
            where="PostgreSQL 15 and Redis 7 from Debian's packages, started on loopback "
                  "for the run")


def create_database(admin_url: str, name: str) -> str:
    """Create ``name`` next to the database of ``admin_url`` if missing; its URL."""
    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()
    parts = urlsplit(admin_url)
    return parts._replace(path=f"/{name}").geturl()


# The peers the side-by-side benchmark runs (Debian: postgresql-client, redis-tools).
PEER_TOOLS = ("psql", "redis-cli", "redis-benchmark")


class MissingToolError(RuntimeError):
    """A program the benchmark compares against is not installed."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingToolError(f"`{name}` is not on PATH; the benchmark compares against it "
                               "(Debian: apt-get install postgresql-client redis-tools)")
    return path


def bench_spark(app_name: str, master: str = "local[*]", driver_memory: str = "6g"):
    """A Spark session with the PostgreSQL JDBC driver on its class path when present."""
    from jobs.platform.spark import spark_session

    if JDBC_JAR.exists():
        # Read when the JVM starts, before any session exists.
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"--jars {JDBC_JAR} pyspark-shell"
    return spark_session(app_name, master, driver_memory=driver_memory)
