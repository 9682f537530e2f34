"""Reading interaction exports: every line is parsed and checked, and a file with any
malformed line is rejected whole, with the line numbers and reasons. The events are
then held to the input contract and loaded by :func:`jobs.contracts.inputs.load_file`.
"""

from __future__ import annotations

import csv
import logging
import math
import numbers
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from jobs.platform.progress import progress

if TYPE_CHECKING:
    import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
# The documented bounds: ids fit a 32-bit signed integer, which Spark's ALS
# needs; times fit Python's datetime (years 1970 to 9999).
MAX_ID = 2**31 - 1
MAX_TIMESTAMP = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
# How often a parser tells its progress callback how far into the file it is:
# rarely enough to cost nothing per line, often enough for a bar to move.
PROGRESS_EVERY_LINES = 10_000
LOAD_FORMATS = ("movielens", "csv", "parquet")
# A parsed event: its line number (row index for Parquet), user, item, rating, Unix seconds.
Row = tuple[int, int, int, float, int]


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
    """The malformed lines (or, in a Parquet file, rows) of one file, the first few kept."""

    path: Path
    unit: str = "line"
    messages: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, line_number: int, reason: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_REPORTED_ERRORS:
            self.messages.append(f"{self.unit} {line_number}: {reason}")

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = self.count - len(self.messages)
        tail = f"\n  ... and {more} more" if more else ""
        raise InputError(
            f"{self.path}: {self.count} malformed {self.unit}(s), nothing loaded:\n  "
            + "\n  ".join(self.messages) + tail
        )


def file_format_of(path: Path, given: str | None, formats: tuple[str, ...],
                   default: str | None = None) -> str:
    """The format named by ``given``, else by the file's extension, else ``default``.

    ``.parquet`` is Parquet and ``.csv`` CSV; anything else needs ``--format``
    unless there is a default.
    """
    if given is None:
        given = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix.lower(), default)
        if given is None:
            raise InputError(f"{path}: cannot tell the format from the extension; "
                             f"name it with --format ({' or '.join(formats)})")
    if given not in formats:
        raise InputError(f"unknown format {given!r}; use {', '.join(formats)}")
    return given


def open_parquet(path: Path) -> pq.ParquetFile:
    """The Parquet file at ``path``; a missing or unreadable file is an :class:`InputError`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None


def parse_id(value: object, name: str) -> int:
    """An id: a whole number from 1 to 2^31 - 1 (text, or a typed integer or whole float)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} is missing")
    if isinstance(value, str):
        text = value.strip()
        # int() alone would also take "1_000" and non-ASCII digits.
        if not WHOLE_NUMBER.fullmatch(text):
            raise ValueError(f"{name} {text!r} is not a whole number")
        number = int(text)
    elif isinstance(value, bool):
        raise ValueError(f"{name} {value!r} is a boolean, not a whole number")
    elif isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError(f"{name} {value!r} is not a whole number")
        number = int(value)
    else:
        raise ValueError(f"{name} {value!r} is a {type(value).__name__}, not a whole number")
    if number <= 0:
        raise ValueError(f"{name} {number} is not a positive integer")
    if number > MAX_ID:
        raise ValueError(f"{name} {number} is not below 2^31 (at most {MAX_ID})")
    return number


def parse_rating(value: object, name: str = "rating") -> float:
    """A rating: a positive finite number (text, or a typed number)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} is missing")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{name} {text!r} is not a number") from None
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} {value!r} is a {type(value).__name__}, not a number")
    else:
        number = float(value)
        text = repr(number)
    if not math.isfinite(number):
        raise ValueError(f"{name} {text!r} is not a finite number")
    if number <= 0:
        raise ValueError(f"{name} {number:g} is not positive")
    return number


def parse_timestamp(value: object, name: str = "timestamp") -> int:
    """Whole Unix seconds from 1970 to the end of 9999: given as seconds, as an ISO 8601
    date-time (UTC when no offset is given) or as a typed date-time."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} is missing")
    shown = str(value)
    if isinstance(value, str):
        text = value.strip()
        shown = text
        if WHOLE_NUMBER.fullmatch(text):
            seconds = int(text)
        else:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"{name} {text!r} is neither Unix seconds nor an ISO 8601 date-time"
                ) from None
            seconds = _epoch_seconds(moment)
            shown = repr(text)
    elif isinstance(value, datetime):
        seconds = _epoch_seconds(value)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} {value!r} is a {type(value).__name__}, "
                         "not Unix seconds or a date-time")
    elif isinstance(value, numbers.Integral) or (math.isfinite(value)
                                                 and float(value).is_integer()):
        seconds = int(value)
    else:
        raise ValueError(f"{name} {value!r} is not whole Unix seconds")
    if seconds < 0:
        raise ValueError(f"{name} {shown} is before 1970")
    if seconds > MAX_TIMESTAMP:
        raise ValueError(f"{name} {shown} is after 9999 (at most {MAX_TIMESTAMP})")
    return seconds


def _epoch_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Whole seconds, as from Unix seconds; floor, so that 1969-12-31T23:59:59.5 stays before 1970.
    return math.floor(moment.timestamp())


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
                    ) -> Iterator[Row]:
    """Rows of a MovieLens ``u.data`` file: user, item, rating, Unix time, tab-separated,
    each yielded after its line number.

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
                number,
                parse_id(fields[0], "user id"),
                parse_id(fields[1], "item id"),
                parse_rating(fields[2]),
                parse_timestamp(fields[3]),
            )
        except ValueError as err:
            errors.add(number, str(err))
    errors.raise_if_any()


def parse_csv(path: Path, layout: CsvLayout, bytes_read: Callable[[int], None] | None = None
              ) -> Iterator[Row]:
    """Rows of a CSV export with a header naming the columns in ``layout``, each after
    its line number; ``bytes_read`` as for :func:`parse_movielens`."""
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
                number,
                parse_id(fields[index["user"]], layout.user_col),
                parse_id(fields[index["item"]], layout.item_col),
                parse_rating(fields[index["rating"]], layout.rating_col),
                parse_timestamp(fields[index["timestamp"]], layout.timestamp_col),
            )
        except ValueError as err:
            errors.add(number, str(err))
    errors.raise_if_any()


def read_parquet_frame(path: Path) -> pd.DataFrame:
    """A Parquet file as a pandas frame, as it is but for its time and integer columns.

    A Parquet timestamp column becomes whole Unix seconds (UTC when it has no
    time zone; nulls stay null), the form the contracts and the tables expect;
    an integer column of any width becomes int64 (float64 when its values do
    not fit) and a floating-point one float64, the types the contracts know.
    A file that is not Parquet is an :class:`InputError`.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    source = open_parquet(path)
    try:
        table = source.read()
        for position, column in enumerate(table.schema):
            if pa.types.is_timestamp(column.type):
                # Floor to the second: 10:00:00.9 happened at 10:00:00, not 10:00:01.
                seconds = pc.floor_temporal(table.column(position), unit="second")
                seconds = seconds.cast(pa.timestamp("s", column.type.tz)).cast(pa.int64())
                table = table.set_column(position, column.name, seconds)
            elif pa.types.is_integer(column.type) and column.type != pa.int64():
                try:
                    widened = table.column(position).cast(pa.int64())
                except pa.ArrowInvalid:  # a uint64 beyond int64: the range checks name it
                    widened = table.column(position).cast(pa.float64(), safe=False)
                table = table.set_column(position, column.name, widened)
            elif pa.types.is_floating(column.type) and column.type != pa.float64():
                table = table.set_column(position, column.name,
                                         table.column(position).cast(pa.float64()))
        return table.to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None


def parse_parquet(path: Path, layout: CsvLayout, rows_read: Callable[[int], None] | None = None
                  ) -> Iterator[Row]:
    """Rows of a Parquet file with the columns named in ``layout``, checked as a CSV
    file's are, each after its index in the file (the first row is 0), which errors
    name too.

    Ids may be integer or whole floating-point columns, ratings any numeric
    column, timestamps Unix seconds or a Parquet timestamp type (UTC when it
    has no time zone). ``rows_read`` is told the rows read so far.
    """
    import pyarrow as pa

    source = open_parquet(path)
    wanted = [layout.user_col, layout.item_col, layout.rating_col, layout.timestamp_col]
    names = source.schema_arrow.names
    missing = [col for col in wanted if col not in names]
    if missing:
        raise InputError(
            f"{path}: lacks column(s) {missing}; found {names}. "
            "Name the columns with --user-col, --item-col, --rating-col, --timestamp-col"
        )
    errors = LineErrors(path, unit="row")
    row = 0
    try:
        for batch in source.iter_batches(columns=wanted):
            # Python values, not numpy's: a nanosecond timestamp becomes a datetime.
            columns = [batch.column(name).to_pylist() for name in wanted]
            for user, item, rating, moment in zip(*columns, strict=True):
                try:
                    yield (
                        row,
                        parse_id(user, layout.user_col),
                        parse_id(item, layout.item_col),
                        parse_rating(rating, layout.rating_col),
                        parse_timestamp(moment, layout.timestamp_col),
                    )
                except ValueError as err:
                    errors.add(row, str(err))
                row += 1
            if rows_read is not None:
                rows_read(row)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    errors.raise_if_any()


def read_events_file(path: Path, *, file_format: str | None = None,
                     layout: CsvLayout | None = None) -> tuple[pd.DataFrame, str]:
    """Check every line (or Parquet row) of ``path``; its events as a frame of ``user_id,
    item_id, rating, timestamp`` indexed by line number (row index for Parquet), and
    that index's name. Any malformed line is an :class:`InputError` naming each.

    ``file_format`` is movielens, csv or parquet (None: from the extension);
    ``layout`` names the columns of a csv or parquet file. The check shows its
    progress (see :mod:`jobs.platform.progress`): bytes of the file read, rows for
    Parquet. The frame holds the whole file: about 40 bytes an event.
    """
    file_format = file_format_of(path, file_format, LOAD_FORMATS)
    layout = layout or CsvLayout()
    if file_format == "parquet":
        source = open_parquet(path)
        with progress(f"checking {path.name}", source.metadata.num_rows, "rows",
                      verb="read") as read:
            frame = events_frame(parse_parquet(path, layout, read), "row")
    else:
        # A missing file is reported by the parser, with the other input errors.
        size = path.stat().st_size if path.is_file() else None
        with progress(f"checking {path.name}", size, "B", verb="read", scale=True) as read:
            rows = (parse_movielens(path, read) if file_format == "movielens"
                    else parse_csv(path, layout, read))
            frame = events_frame(rows, "line")
    if frame.empty:
        raise InputError(f"{path}: no interactions found, nothing loaded")
    return frame, frame.index.name


def events_frame(rows: Iterable[Row], label: str) -> pd.DataFrame:
    """Parsed rows as a frame of typed columns, indexed by their ``label`` numbers."""
    columns = [array("q"), array("q"), array("q"), array("d"), array("q")]
    appends = [column.append for column in columns]
    for row in rows:
        for append, value in zip(appends, row, strict=True):
            append(value)
    numbers, users, items, ratings, seconds = (
        np.frombuffer(column, dtype=np.float64 if column.typecode == "d" else np.int64)
        for column in columns)
    return pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings,
                         "timestamp": seconds}, index=pd.Index(numbers, name=label))
