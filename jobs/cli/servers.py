"""`batchscore services ...`, `batchscore db ...` and `batchscore redis ...`: the servers,
the database and the Redis users."""

from __future__ import annotations

import argparse

from jobs.cli.common import Commands
from jobs.platform import services
from jobs.platform.config import Settings


def add_commands(commands: Commands) -> None:
    svc = commands.subgroup("services", "the embedded PostgreSQL and Redis")
    svc.add("start", cmd_services_start, "start the embedded servers")
    svc.add("stop", cmd_services_stop, "stop the embedded servers")
    db = commands.subgroup("db", "the batchscore database")
    db.add("upgrade", cmd_db_upgrade, "apply the migrations in sql/")
    url = db.add("url", cmd_db_url, "print the URL (password included) a role connects "
                 "with: psql \"$(batchscore db url --role bi)\"")
    url.add_argument("--role", choices=services.ROLES, default=services.OWNER,
                     help="owner applies migrations, writer runs the jobs, bi reads the views")
    redis_group = commands.subgroup("redis", "the Redis users")
    redis_url = redis_group.add("url", cmd_redis_url,
                                "print the URL a Redis user connects with, its password "
                                "included: the writer publishes, the reader serves products")
    redis_url.add_argument("--role", choices=("writer", "reader"), required=True,
                           help="whose URL")


def cmd_services_start(settings: Settings, args: argparse.Namespace) -> int:
    endpoints = services.resolve(settings)
    print(f"postgres: {services.redacted(endpoints.database_url)}")
    print(f"redis:    {services.redacted(endpoints.redis_url)}")
    return 0


def cmd_services_stop(settings: Settings, args: argparse.Namespace) -> int:
    for name, was_running in services.stop_embedded(settings).items():
        print(f"{name}: {'stopped' if was_running else 'was not running'}")
    return 0


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    applied = services.upgrade(settings)
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    return 0


def cmd_db_url(settings: Settings, args: argparse.Namespace) -> int:
    print(services.database_url(settings, args.role))
    return 0


def cmd_redis_url(settings: Settings, args: argparse.Namespace) -> int:
    print(services.redis_url(settings, args.role))
    return 0
