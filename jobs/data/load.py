"""Loading interaction exports into the interactions table.

Every line is checked before anything is written: a file with any malformed
line is rejected whole, with the line numbers and reasons, and the table is
left as it was.
"""

from __future__ import annotations

import csv
import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from jobs.data.store import copy_interactions, rows_to_csv
from jobs.platform.progress import progress

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
# How often a parser tells its progress callback how far into the file it is:
# rarely enough to cost nothing per line, often enough for a bar to move.
PROGRESS_EVERY_LINES = 10_000


class InputError(ValueError):
    """The input cannot be loaded; the message says why and where."""


@dataclass(frozen=True)
class CsvLayout:
    """Which columns of a CSV export hold the interaction fields."""

    user_col: str = "user_id"
    item_col: str = "item_id"
    rating_col: str = "rating"
    timestamp_col: str = "timestamp"
    delimiter: str = ","


@dataclass
class LineErrors:
    path: Path
    messages: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, line_number: int, reason: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_REPORTED_ERRORS:
            self.messages.append(f"line {line_number}: {reason}")

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = self.count - len(self.messages)
        tail = f"\n  ... and {more} more" if more else ""
        raise InputError(
            f"{self.path}: {self.count} malformed line(s), nothing loaded:\n  "
            + "\n  ".join(self.messages) + tail
        )


def parse_id(text: str, name: str) -> int:
    value = text.strip()
    if not value:
        raise ValueError(f"{name} is missing")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a whole number") from None
    if number <= 0:
        raise ValueError(f"{name} {number} is not a positive integer")
    return number


def parse_rating(text: str, name: str = "rating") -> float:
    value = text.strip()
    if not value:
        raise ValueError(f"{name} is missing")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} {value!r} is not a finite number")
    if number <= 0:
        raise ValueError(f"{name} {number:g} is not positive")
    return number


def parse_timestamp(text: str, name: str = "timestamp") -> int:
    """Unix seconds, or an ISO 8601 date-time (UTC when no offset is given)."""
    value = text.strip()
    if not value:
        raise ValueError(f"{name} is missing")
    try:
        seconds = int(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{name} {value!r} is neither Unix seconds nor an ISO 8601 date-time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp())
    if seconds < 0:
        raise ValueError(f"{name} {seconds} is before 1970")
    return seconds


def _open_lines(path: Path, bytes_read: Callable[[int], None] | None = None
                ) -> Iterator[tuple[int, str]]:
    """Numbered lines of ``path``; ``bytes_read`` is told how far into the file it is."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line
                if bytes_read is not None and number % PROGRESS_EVERY_LINES == 0:
                    # The text layer's own tell() is off while iterating; the
                    # bytes under it are read ahead by at most one chunk.
                    bytes_read(handle.buffer.tell())
            if bytes_read is not None:
                bytes_read(handle.buffer.tell())
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def parse_movielens(path: Path, bytes_read: Callable[[int], None] | None = None
                    ) -> Iterator[tuple[int, int, float, int]]:
    """Rows of a MovieLens ``u.data`` file: user, item, rating, Unix time, tab-separated.

    Valid rows are yielded as they are read; once the file is read, any
    malformed line raises :class:`InputError`, so a consumer that reads to the
    end before writing never writes a partly bad file. ``bytes_read`` is told
    the bytes of the file read so far, every few thousand lines and at the end.
    """
    errors = LineErrors(path)
    for number, line in _open_lines(path, bytes_read):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) != 4:
            errors.add(number, f"expected 4 tab-separated fields, found {len(fields)}")
            continue
        try:
            yield (
                parse_id(fields[0], "user id"),
                parse_id(fields[1], "item id"),
                parse_rating(fields[2]),
                parse_timestamp(fields[3]),
            )
        except ValueError as err:
            errors.add(number, str(err))
    errors.raise_if_any()


def parse_csv(path: Path, layout: CsvLayout, bytes_read: Callable[[int], None] | None = None
              ) -> Iterator[tuple[int, int, float, int]]:
    """Rows of a CSV export with a header naming the columns in ``layout``;
    ``bytes_read`` as for :func:`parse_movielens`."""
    lines = _open_lines(path, bytes_read)
    reader = csv.reader((line for _, line in lines), delimiter=layout.delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: the file is empty (expected a header line)") from None
    wanted = {
        "user": layout.user_col,
        "item": layout.item_col,
        "rating": layout.rating_col,
        "timestamp": layout.timestamp_col,
    }
    names = [name.strip() for name in header]
    missing = [col for col in wanted.values() if col not in names]
    if missing:
        raise InputError(
            f"{path}: header lacks column(s) {missing}; found {names}. "
            "Name the columns with --user-col, --item-col, --rating-col, --timestamp-col"
        )
    index = {key: names.index(col) for key, col in wanted.items()}
    errors = LineErrors(path)
    for fields in reader:
        number = reader.line_num
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(names):
            errors.add(number, f"expected {len(names)} fields, found {len(fields)}")
            continue
        try:
            yield (
                parse_id(fields[index["user"]], layout.user_col),
                parse_id(fields[index["item"]], layout.item_col),
                parse_rating(fields[index["rating"]], layout.rating_col),
                parse_timestamp(fields[index["timestamp"]], layout.timestamp_col),
            )
        except ValueError as err:
            errors.add(number, str(err))
    errors.raise_if_any()


def load_file(
    engine: Engine,
    path: Path,
    *,
    file_format: str,
    layout: CsvLayout | None = None,
    replace: bool = False,
) -> int:
    """Check every line of ``path``, then load all of it in one transaction.

    Both passes show their progress (see :mod:`jobs.platform.progress`): the
    check in bytes of the file read, the load in rows sent to the database.
    """
    if file_format not in ("movielens", "csv"):
        raise InputError(f"unknown format {file_format!r}; use movielens or csv")
    # A missing file is reported by the parser, with the other input errors.
    size = path.stat().st_size if path.is_file() else None
    with tempfile.TemporaryFile("w+", encoding="utf-8") as staged:
        with progress(f"checking {path.name}", size, "B", verb="read", scale=True) as read:
            rows = (parse_movielens(path, read) if file_format == "movielens"
                    else parse_csv(path, layout or CsvLayout(), read))
            count = rows_to_csv(rows, staged)
        if count == 0:
            raise InputError(f"{path}: no interactions found, nothing loaded")
        staged.seek(0)
        return copy_interactions(engine, staged, replace=replace, rows=count)
