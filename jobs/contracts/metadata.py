"""The metadata contracts: an item or user file is checked whole before it is loaded.

The suites are ``schemas/items.suite.json`` and ``schemas/users.suite.json``.
Unlike a day's interactions, a metadata file has no quarantine: any failed
expectation rejects the file, and nothing is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import Engine

from jobs.contracts.engine import ContractError, Report, Validator, failure_message
from jobs.data.metadata import (
    ATTRIBUTES,
    KINDS,
    MetadataFile,
    MetadataLoad,
    read_metadata_file,
    upsert_metadata,
)

logger = logging.getLogger(__name__)


def check_metadata(validator: Validator, metadata: MetadataFile) -> Report:
    """Run the kind's suite on a file as read; raise :class:`ContractError` on any failure."""
    kind = metadata.kind
    frame = metadata.frame
    present = set(frame.columns)
    unavailable = {"title"} - present
    if kind.id_column not in present:
        unavailable |= {"ids", "whole_ids"}
    elif not frame[kind.id_column].map(lambda value: value is None or isinstance(value, int)
                                       ).all():
        # The range check compares numbers; the type check names the rows that are not.
        unavailable.add("whole_ids")
    if ATTRIBUTES not in present:
        unavailable.add("attributes")
    report = validator.validate(kind.table, frame, {}, unavailable=unavailable,
                                row_label=metadata.row_label)
    if report.failures:
        title = f"{kind.table} contract failed for {metadata.path}, nothing loaded"
        raise ContractError(
            failure_message(title, report.failures, [report])
            + f"\n  Fix the rows named above and load the file again (columns: "
            f"{describe_columns(metadata)}).", [report])
    return report


def describe_columns(metadata: MetadataFile) -> str:
    kind = metadata.kind
    optional = "".join(f", optional {name}" for name in kind.text_columns)
    found = (f"attributes from the columns {', '.join(metadata.attribute_columns)}"
             if metadata.attribute_columns else
             f"a JSON column {ATTRIBUTES}" if metadata.has_attributes else "no attributes")
    return (f"{kind.id_column}{optional}, then attributes as one JSON-object column "
            f"{ATTRIBUTES} or as extra columns; this file has {found}")


def load_metadata_file(validator: Validator, engine: Engine, table: str, path: Path, *,
                       file_format: str | None = None, replace: bool = False) -> MetadataLoad:
    """Read an item or user file (``table``: items or users), check it against its
    contract, and upsert it in one transaction; a failing file loads nothing."""
    metadata = read_metadata_file(path, KINDS[table], file_format)
    check_metadata(validator, metadata)
    return upsert_metadata(engine, metadata, replace=replace)
