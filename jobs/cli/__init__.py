"""The ``batchscore`` command line: a thin layer over the library.

One module per group of commands (``servers``, ``data``, ``models``, ``runs``,
``reports``, ``tools``). A handler parses, calls one library function with typed
arguments and prints its result; it never calls another command's handler.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from jobs.cli import data, models, reports, runs, servers, tools
from jobs.cli.common import CommandError, Commands
from jobs.platform.config import ConfigError, Settings

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    # yoyo logs each statement of a migration at INFO; upgrade() names each migration.
    for noisy in ("py4j", "pyspark", "great_expectations", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env()
        return int(args.handler(settings, args) or 0)
    except expected_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchscore",
        description="Nightly per-user recommendations, published to Postgres and Redis.",
    )
    commands = Commands(parser.add_subparsers(title="commands", metavar="COMMAND"))
    for group in (servers, data, models, runs, reports, tools):
        group.add_commands(commands)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that end a command with their message alone: the user can act on them."""
    from jobs.bench.servers import MissingToolError
    from jobs.client import NoPublishedVersionError
    from jobs.contracts.engine import ContractError
    from jobs.contracts.inputs import EmptyDayError
    from jobs.data.load import InputError
    from jobs.lifecycle.registry import (
        NoServingModelError,
        PromotionRefusedError,
        UnknownVersionError,
    )
    from jobs.monitoring.report import ReportError
    from jobs.orchestration.local_airflow import AirflowError
    from jobs.orchestration.run_state import RunRequestError, StoreUnavailableError
    from jobs.platform.db import AuthenticationError, LockWaitError, MigrationError
    from jobs.platform.redis_client import RedisAccessError
    from jobs.platform.services.debian import MissingServerError
    from jobs.publish.postgres import LockTimeoutError, RollbackError, VersionStateError
    from jobs.publish.redis import MissingVersionError, PointerMovedError, RedisRefusesWritesError

    return (CommandError, ConfigError, InputError, MigrationError, NoServingModelError,
            NoPublishedVersionError, ContractError, FileNotFoundError, AirflowError,
            RollbackError, MissingVersionError, UnknownVersionError, RunRequestError,
            LockWaitError, LockTimeoutError, VersionStateError, PointerMovedError,
            StoreUnavailableError, PromotionRefusedError, MissingToolError, ReportError,
            RedisAccessError, AuthenticationError, EmptyDayError, MissingServerError,
            RedisRefusesWritesError)


if __name__ == "__main__":
    sys.exit(main())
