"""The names a deployment gives its schemas, roles and Redis keys, checked in one place.

Two deployments can share one database and one Redis when each sets its own
schema names and key prefix. Every name must match :data:`NAME_PATTERN`, so a
name can never carry a quote, a space, a glob character or a semicolon into
SQL or into a Redis pattern. SQL, in code and in the migrations alike, is
written as a template whose schemas and roles are fields, and
:meth:`Names.compose` builds each statement from it with
``psycopg2.sql.Identifier``; no statement is rewritten on its way to the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from psycopg2.sql import SQL, Composable, Composed, Identifier, Literal

# Lower-case letters, digits and underscores, starting with a letter; short
# enough that the roles derived from a schema name stay within PostgreSQL's
# 63-byte identifiers.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
DEFAULT_SCHEMA = "batchscore"
DEFAULT_BI_SCHEMA = "bi"
DEFAULT_REDIS_PREFIX = "batchscore"


class InvalidNameError(ValueError):
    """A configured name does not match :data:`NAME_PATTERN`."""


def checked(setting: str, value: str) -> str:
    """``value`` if it is a safe name, else an error naming ``setting`` and the rule."""
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidNameError(
            f"{setting} must be 1 to 40 lower-case letters, digits or underscores, "
            f"starting with a letter; got {value!r}")
    return value


@dataclass(frozen=True)
class Names:
    """A deployment's schema names and Redis key prefix, and the roles derived from them.

    The roles carry the core schema's name, so two deployments in one
    database never share a login.
    """

    schema: str = DEFAULT_SCHEMA
    bi_schema: str = DEFAULT_BI_SCHEMA
    redis_prefix: str = DEFAULT_REDIS_PREFIX

    def __post_init__(self) -> None:
        checked("BATCHSCORE_SCHEMA", self.schema)
        checked("BATCHSCORE_BI_SCHEMA", self.bi_schema)
        checked("BATCHSCORE_REDIS_PREFIX", self.redis_prefix)
        if self.schema == self.bi_schema:
            raise InvalidNameError(f"BATCHSCORE_SCHEMA and BATCHSCORE_BI_SCHEMA must differ; "
                             f"both are {self.schema!r}")

    @property
    def owner_role(self) -> str:
        """Owns the schemas and their objects; applies the migrations."""
        return f"{self.schema}_owner"

    @property
    def writer_role(self) -> str:
        """What the nightly, training and rollback connect as."""
        return f"{self.schema}_writer"

    @property
    def bi_role(self) -> str:
        """A login that reads the BI views and nothing else."""
        return f"{self.schema}_bi"

    @property
    def redis_writer_user(self) -> str:
        """The Redis ACL user that publishes: this prefix's keys, publishing's commands."""
        return f"{self.redis_prefix}_writer"

    @property
    def redis_reader_user(self) -> str:
        """The Redis ACL user product services read as: GET on the serving keys only."""
        return f"{self.redis_prefix}_reader"

    def own_folder(self, folder: Path) -> Path:
        """Where this deployment keeps what it writes to ``folder`` of a home that several
        deployments may share: ``folder`` itself for the default names, else a
        sub-folder named after the core schema."""
        return folder if self.is_default else folder / self.schema

    @property
    def is_default(self) -> bool:
        return (self.schema, self.bi_schema) == (DEFAULT_SCHEMA, DEFAULT_BI_SCHEMA)

    def compose(self, template: str, **more: Composable) -> Composed:
        """``template`` with this deployment's schemas and roles composed in.

        A template is SQL with ``psycopg2.sql.SQL.format`` fields (so a literal
        brace is written twice: ``'{{}}'::jsonb``). Identifiers, quoted:
        ``{schema}`` and ``{bi}`` for the two schemas, ``{owner}``, ``{writer}``
        and ``{bi_role}`` for the roles. The same names as string literals, for
        catalogue lookups: ``{schema_name}``, ``{bi_name}``, ``{owner_name}``,
        ``{writer_name}``, ``{bi_role_name}``. ``more`` adds fields of the
        caller's own (an ``sql.Identifier`` of a table, say). Nothing is
        rewritten: the statement is built from the template and the names.
        """
        return SQL(template).format(**self.fields(), **more)

    def fields(self) -> dict[str, Composable]:
        """The fields :meth:`compose` fills, by name."""
        roles = {"owner": self.owner_role, "writer": self.writer_role, "bi_role": self.bi_role}
        names = {"schema": self.schema, "bi": self.bi_schema, **roles}
        return {**{field: Identifier(name) for field, name in names.items()},
                **{f"{field}_name": Literal(name) for field, name in names.items()}}
