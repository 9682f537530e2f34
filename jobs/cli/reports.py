"""`batchscore report`: a run's HTML report, written again on demand."""

from __future__ import annotations

import argparse

from jobs.cli.common import Commands, database
from jobs.platform.config import Settings


def add_commands(commands: Commands) -> None:
    report = commands.add("report", cmd_report,
                          "write a run's HTML report (plots included, nothing fetched) and the "
                          "index of recent runs under BATCHSCORE_HOME/reports; print its path")
    report.add_argument("run_id", nargs="?", default=None, metavar="RUN_ID",
                        help="the run (default: the newest nightly run; `batchscore runs list`)")
    report.add_argument("--open", action="store_true", help="open the report in a web browser")


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.monitoring.report import write_report

    path = write_report(database(settings), settings.home, args.run_id)
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(path.as_uri())
    return 0
