"""What every command group shares: the error a command stops with, argument types,
the database in use, and printing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobs.data.store import newest_event_date
from jobs.platform import services
from jobs.platform.config import Settings

# A command: parses nothing more, calls one library function, prints its result.
Handler = Callable[[Settings, argparse.Namespace], int | None]


class CommandError(RuntimeError):
    """A command cannot go on; the message tells the user what to do."""


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends with each option's default, unless the help already says it or
    there is none to say (a flag, or a default computed at run time)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings
                or action.default in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)".strip()


class Commands:
    """Adds commands to a group of the parser, each with its handler and help."""

    def __init__(self, group: Any) -> None:
        self.group = group

    def add(self, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = self.group.add_parser(name, help=help_text, description=help_text,
                                    formatter_class=DefaultsFormatter)
        sub.set_defaults(handler=handler)
        return sub

    def subgroup(self, name: str, help_text: str) -> Commands:
        parser = self.group.add_parser(name, help=help_text, description=help_text)
        return Commands(parser.add_subparsers(title="commands", metavar="COMMAND",
                                              required=True))


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-20") from None


def database(settings: Settings) -> sa.engine.Engine:
    return services.database(settings)


def run_date_or_newest(engine: sa.engine.Engine, given: date | None) -> date:
    """The date given, or the day of the newest interaction."""
    if given is not None:
        return given
    newest = newest_event_date(engine)
    if newest is None:
        raise CommandError("there are no interactions; run `batchscore data generate` "
                           "or `batchscore data load` first")
    return newest


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def command_name() -> str:
    """How the person at the terminal can call this program again."""
    invoked = Path(sys.argv[0])
    on_path = shutil.which("batchscore")
    if on_path and Path(on_path).resolve() == invoked.resolve():
        return "batchscore"
    if invoked.name == "batchscore":
        return os.path.relpath(invoked)
    return "python -m jobs"
