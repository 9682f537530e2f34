"""Progress of long steps: a bar at a terminal, a line at each tenth otherwise."""

import io
import logging
import re

from jobs.platform.progress import Bar, Lines, progress, to_terminal

LOGGER = "jobs.platform.progress"


class Terminal(io.StringIO):
    """What a person watches: a stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_only_a_terminal_gets_a_bar() -> None:
    assert to_terminal(Terminal()) is True
    assert to_terminal(io.StringIO()) is False
    closed = io.StringIO()
    closed.close()
    assert to_terminal(closed) is False
    with progress("redis", 10, "users", stream=Terminal()) as bar:
        assert isinstance(bar, Bar)
    with progress("redis", 10, "users", stream=io.StringIO()) as lines:
        assert isinstance(lines, Lines)


def test_a_line_at_each_tenth_of_the_users(caplog) -> None:
    report = progress("redis", 1_000, "users", verb="written", stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for users in range(30, 1_001, 30):   # blocks of 30 users
            report(users)
        report(1_000)                         # the last, smaller block
    lines = logged(caplog)
    assert lines[0] == "redis: 120 / 1000 users written"
    assert lines[-1] == "redis: 1000 / 1000 users written"
    assert len(lines) == 10


def test_fewer_users_than_ten_still_report(caplog) -> None:
    report = progress("postgres", 3, "users", verb="written", stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger=LOGGER):
        report(2)
        report(3)
    assert logged(caplog) == [
        "postgres: 2 / 3 users written", "postgres: 3 / 3 users written"]


def test_a_step_that_ends_between_tenths_says_where(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            progress("postgres", 1_000, "users", verb="written", stream=io.StringIO()) as report:
        report(120)
        report(150)
    assert logged(caplog) == ["postgres: 120 / 1000 users written",
                              "postgres: 150 / 1000 users written"]


def test_without_a_total_lines_stay_quiet(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            progress("loading interactions", None, "rows", stream=io.StringIO()) as report:
        report(5_000_000)
    assert logged(caplog) == []


def test_bytes_are_shown_scaled(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            progress("checking u.data", 12_345_678, "B", verb="read", scale=True,
                     stream=io.StringIO()) as report:
        report(1_234_568)
        report(12_345_678)
    assert logged(caplog) == ["checking u.data: 1.23MB / 12.3MB read",
                              "checking u.data: 12.3MB / 12.3MB read"]


def test_a_bar_shows_each_block_written_of_the_total(caplog) -> None:
    """What the publishers' callbacks draw at a terminal: users written after each block."""
    terminal = Terminal()
    with caplog.at_level(logging.INFO, logger=LOGGER), \
            progress("redis", 1_000, "users", verb="written", stream=terminal,
                     refresh_seconds=0) as written:
        for users in (250, 500, 750, 1_000):
            written(users)
    shown = terminal.getvalue()
    # drawn when it starts, after each block, and once more as it closes
    assert [int(count) for count in re.findall(r"(\d+)/1000 ", shown)] == [
        0, 250, 500, 750, 1_000, 1_000]
    assert "redis:  25%|" in shown and "redis: 100%|" in shown
    assert shown.endswith("\n")   # the finished bar stays on the screen
    assert logged(caplog) == []   # a bar instead of lines, not both


def test_a_bar_without_a_total_counts(caplog) -> None:
    terminal = Terminal()
    with progress("loading interactions", None, "rows", stream=terminal,
                  refresh_seconds=0) as sent:
        sent(1_500)
    assert "loading interactions: 1500rows [" in terminal.getvalue()


def test_a_bar_of_bytes_is_scaled() -> None:
    terminal = Terminal()
    with progress("checking u.data", 12_345_678, "B", scale=True, stream=terminal,
                  refresh_seconds=0) as read:
        read(5_000_000)
    assert "checking u.data:  41%|" in terminal.getvalue()
    assert "5.00M/12.3M [" in terminal.getvalue()
