"""The names a deployment gives its schemas, roles and Redis keys, checked in one place.

Two deployments can share one database and one Redis when each sets its own
schema names and key prefix. Every name must match :data:`NAME_PATTERN`, so a
name can never carry a quote, a space, a glob character or a semicolon into
SQL or into a Redis pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Lower-case letters, digits and underscores, starting with a letter; short
# enough that the roles derived from a schema name stay within PostgreSQL's
# 63-byte identifiers.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
DEFAULT_SCHEMA = "batchscore"
DEFAULT_BI_SCHEMA = "bi"
DEFAULT_REDIS_PREFIX = "batchscore"


# SQL in batchscore, code and migrations alike, names its schemas and roles by
# their default names; a deployment with other names gets them translated
# here, at execution (see :meth:`Names.sql`). These are the forms translated:
# a qualified name, schema or quoted schema before a dot ...
# (``%`` for a name formatted in by plpgsql's format(): ``batchscore.%I``) ...
_QUALIFIED = re.compile(r'(?<![\w."$])("?)(batchscore|bi)\1(?=\.[A-Za-z_"%])')
# ... a schema after SCHEMA (CREATE/DROP/ALTER SCHEMA, ON/IN SCHEMA) ...
_AFTER_SCHEMA = re.compile(
    r'(?i)(\bSCHEMA\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?)"?(batchscore|bi)"?(?![\w.$])')
# ... a schema's name as a string (``nspname = 'batchscore'``) ...
_SCHEMA_LITERAL = re.compile(r"'(batchscore|bi)'")
# ... and the roles, bare or as strings.
_ROLE = re.compile(r"\bbatchscore_(owner|writer|bi)\b")


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

    @property
    def is_default(self) -> bool:
        return (self.schema, self.bi_schema) == (DEFAULT_SCHEMA, DEFAULT_BI_SCHEMA)

    def sql(self, text: str) -> str:
        """``text`` with the default schema and role names replaced by this deployment's.

        The names matched are the schemas before a dot (``batchscore.runs``,
        ``"bi".runs``), after ``SCHEMA`` (``CREATE SCHEMA IF NOT EXISTS bi``,
        ``ON SCHEMA batchscore``), as whole string literals (``'batchscore'``),
        and the roles ``batchscore_owner``, ``batchscore_writer`` and
        ``batchscore_bi``. Names are safe by construction (:data:`NAME_PATTERN`),
        so they need no quoting.
        """
        if self.is_default:
            return text
        schemas = {DEFAULT_SCHEMA: self.schema, DEFAULT_BI_SCHEMA: self.bi_schema}
        roles = {"owner": self.owner_role, "writer": self.writer_role, "bi": self.bi_role}
        text = _ROLE.sub(lambda m: roles[m.group(1)], text)
        text = _QUALIFIED.sub(lambda m: m.group(1) + schemas[m.group(2)] + m.group(1), text)
        text = _AFTER_SCHEMA.sub(lambda m: m.group(1) + schemas[m.group(2)], text)
        return _SCHEMA_LITERAL.sub(lambda m: f"'{schemas[m.group(1)]}'", text)

    def cursor_factory(self) -> type | None:
        """A psycopg2 cursor class whose statements are translated by :meth:`sql`;
        ``None`` for the default names, which need no translation."""
        if self.is_default:
            return None
        return _translating_cursor(self)


def _translating_cursor(names: Names) -> type:
    import psycopg2.extensions

    def translated(cursor: Any, query: Any) -> Any:
        if isinstance(query, bytes):
            return names.sql(query.decode()).encode()
        if not isinstance(query, str):  # a psycopg2.sql.Composed
            query = query.as_string(cursor)
        return names.sql(query)

    class TranslatingCursor(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            return super().execute(translated(self, query), vars)

        def executemany(self, query: Any, vars_list: Any) -> Any:
            return super().executemany(translated(self, query), vars_list)

        def mogrify(self, query: Any, vars: Any = None) -> Any:
            return super().mogrify(translated(self, query), vars)

        def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
            return super().copy_expert(translated(self, sql), file, size)

    TranslatingCursor.__name__ = f"TranslatingCursor[{names.schema},{names.bi_schema}]"
    return TranslatingCursor
