"""Item and user metadata files, and loading them into ``batchscore.items`` and
``batchscore.users``.

A metadata file is CSV (a header naming the columns) or Parquet. Items have
``item_id``, an optional ``title`` and attributes; users have ``user_id`` and
attributes. Attributes come either as one ``attributes`` column holding a JSON
object per row, or as any other columns, each of which becomes a key (a blank
or null value leaves the key out).

:func:`read_metadata_file` reads a file into a frame for the contract
(:mod:`jobs.contracts.metadata`) to judge: values it cannot make sense of are
kept as they are (as text) so that the contract names them with their row.
:func:`upsert_metadata` then loads a checked frame in one transaction.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psycopg2 import sql
from sqlalchemy.engine import Engine

from jobs.data.load import WHOLE_NUMBER, InputError, file_format_of, read_parquet_frame
from jobs.data.store import copy_with_progress
from jobs.platform.db import cursor, names_of

logger = logging.getLogger(__name__)

METADATA_FORMATS = ("csv", "parquet")
ATTRIBUTES = "attributes"


@dataclass(frozen=True)
class MetadataKind:
    """One metadata table: its name in ``batchscore``, its id column, its text columns."""

    table: str
    id_column: str
    text_columns: tuple[str, ...] = ()


ITEMS = MetadataKind("items", "item_id", ("title",))
USERS = MetadataKind("users", "user_id")
KINDS = {kind.table: kind for kind in (ITEMS, USERS)}


@dataclass(frozen=True)
class MetadataFile:
    """A metadata file as read, for the contract to judge; the index names each row.

    ``frame`` has the id column (when the file has one), the kind's text
    columns the file has, and ``attributes`` when the file gives any.
    """

    kind: MetadataKind
    path: Path
    frame: pd.DataFrame
    row_label: str
    # The extra columns that became attribute keys (empty: none, or a JSON column).
    attribute_columns: tuple[str, ...] = ()

    @property
    def has_attributes(self) -> bool:
        return ATTRIBUTES in self.frame.columns

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(name for name in self.kind.text_columns if name in self.frame.columns)


@dataclass(frozen=True)
class MetadataLoad:
    """What a load did: rows in the file, of which new and updated; whether it replaced."""

    table: str
    rows: int
    inserted: int
    updated: int
    replaced: bool


def read_metadata_file(path: Path, kind: MetadataKind, file_format: str | None = None
                       ) -> MetadataFile:
    """Read ``path`` (csv or parquet; None: from the extension) as it is.

    Only a file that cannot be read at all, or that gives attributes both
    ways at once, fails here (:class:`InputError`); every other defect is left
    for the contract. Rows of a CSV file are named by line (the header is line
    1), rows of a Parquet file by their index (the first row is 0).
    """
    file_format = file_format_of(path, file_format, METADATA_FORMATS)
    if file_format == "parquet":
        raw = read_parquet_frame(path)
        raw.index = pd.RangeIndex(0, len(raw), name="row")
        row_label = "row"
    else:
        raw = _read_csv(path)
        raw.index = pd.RangeIndex(2, 2 + len(raw), name="line")
        row_label = "line"
    known = {kind.id_column, *kind.text_columns}
    extra = tuple(str(name) for name in raw.columns if name not in known and name != ATTRIBUTES)
    if ATTRIBUTES in raw.columns and extra:
        raise InputError(
            f"{path}: has an {ATTRIBUTES} column and other columns {list(extra)}; give "
            f"attributes either as one JSON column named {ATTRIBUTES} or as extra columns, "
            "not both")
    frame = pd.DataFrame(index=raw.index)
    if kind.id_column in raw.columns:
        frame[kind.id_column] = _objects(raw[kind.id_column], whole_number)
    for name in kind.text_columns:
        if name in raw.columns:
            frame[name] = _objects(raw[name])
    if ATTRIBUTES in raw.columns:
        frame[ATTRIBUTES] = _objects(raw[ATTRIBUTES], json_object)
    elif extra:
        records = raw[list(extra)].to_dict(orient="records")
        frame[ATTRIBUTES] = pd.Series([attributes_of(record) for record in records],
                                      index=raw.index, dtype=object)
    return MetadataFile(kind=kind, path=path, frame=frame, row_label=row_label,
                        attribute_columns=extra)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        # Every value as text, blanks as missing: the contract judges what the text says.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                            encoding="utf-8-sig", skipinitialspace=True)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty (expected a header line)") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: not a well-formed csv file: {err}") from None
    frame.columns = [str(name).strip() for name in frame.columns]
    return frame


def _objects(column: pd.Series, convert: Callable[[Any], Any] | None = None) -> pd.Series:
    """``column`` as plain Python values (``convert``-ed), in an object column: the type
    checks of the contract then judge each value, not the column's dtype."""
    values = [plain(value) for value in column]
    return pd.Series([convert(value) for value in values] if convert else values,
                     index=column.index, dtype=object)


def plain(value: Any) -> Any:
    """A Python value for a pandas or numpy one; None for any kind of missing value."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def whole_number(value: Any) -> Any:
    """An int for a whole number (digits, an integer, a whole float); anything else as text."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return int(text) if WHOLE_NUMBER.fullmatch(text) else text
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return str(value)


def json_object(value: Any) -> Any:
    """A dict for a JSON object (as text, or a Parquet struct); anything else as text."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            parsed = json.loads(value, parse_constant=_no_constant)
        except ValueError:
            return value
        # A number too large for a float (1e999) parses as infinity: _as_json refuses it.
        return _as_json(parsed) if isinstance(parsed, dict) else value
    if isinstance(value, dict):
        return _as_json(value)
    return str(value)


def attributes_of(record: dict[Any, Any]) -> Any:
    """The attributes of one row given as extra columns: a key for each value present."""
    attributes = {str(name): plain(value) for name, value in record.items()}
    return _as_json({name: value for name, value in attributes.items() if value is not None})


def _as_json(value: dict[Any, Any]) -> Any:
    """``value`` as it will be stored, or as text when jsonb cannot hold it (NaN, bytes...)."""
    if not all(isinstance(key, str) for key in value):
        return str(value)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return str(value)
    # PostgreSQL's jsonb cannot hold the NUL character.
    return str(value) if "\\u0000" in text else json.loads(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def upsert_metadata(engine: Engine, checked: MetadataFile, *, replace: bool = False
                    ) -> MetadataLoad:
    """Insert or update every row of a checked file, in one transaction.

    An id already in the table gets the file's values for the columns the
    file has (a file without titles keeps the titles); ``replace`` empties the
    table first, in the same transaction, so readers see the old contents or
    the new ones.
    """
    kind = checked.kind
    columns = [kind.id_column, *checked.text_columns]
    if checked.has_attributes:
        columns.append(ATTRIBUTES)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for values in checked.frame[columns].itertuples(index=False):
        writer.writerow([json.dumps(value) if isinstance(value, dict) else value
                         for value in values])
    buffer.seek(0)
    table = sql.Identifier(names_of(engine).schema, kind.table)
    staged = sql.Identifier(f"staged_{kind.table}")
    listed = sql.SQL(", ").join(map(sql.Identifier, columns))
    updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
               for name in columns[1:]]
    on_conflict = (sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(updates) if updates
                   else sql.SQL("DO NOTHING"))
    with cursor(engine) as cur:
        if replace:
            cur.execute(sql.SQL("TRUNCATE {}").format(table))
        cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS)"
                            " ON COMMIT DROP").format(staged, table))
        copy_with_progress(cur, "COPY {staged} ({columns}) FROM STDIN WITH (FORMAT csv)",
                           buffer, f"loading {kind.table}", len(checked.frame),
                           staged=staged, columns=listed)
        # xmax is 0 on a row this statement inserted, and set on one it updated.
        cur.execute(sql.SQL(
            "WITH upserted AS (INSERT INTO {table} ({names}) SELECT {names} FROM {staged}"
            " ON CONFLICT ({id}) {action} RETURNING xmax = 0 AS inserted)"
            " SELECT count(*) FILTER (WHERE inserted) FROM upserted").format(
            table=table, names=listed, staged=staged, id=sql.Identifier(kind.id_column),
            action=on_conflict))
        inserted = int(cur.fetchone()[0])
    load = MetadataLoad(table=kind.table, rows=len(checked.frame), inserted=inserted,
                        updated=len(checked.frame) - inserted, replaced=replace)
    logger.info("loaded %d %s rows from %s (%d new, %d updated)", load.rows, kind.table,
                checked.path, load.inserted, load.updated)
    return load
