"""Configurable names: the strict pattern, and SQL composed with a deployment's names."""

from __future__ import annotations

import pytest
from psycopg2.sql import SQL, Composed, Identifier, Literal

from jobs.platform.config import ConfigError, Settings
from jobs.platform.names import Names

ACME = Names(schema="acme", bi_schema="acme_bi", redis_prefix="acme")


@pytest.mark.parametrize("setting", ["BATCHSCORE_SCHEMA", "BATCHSCORE_BI_SCHEMA",
                                     "BATCHSCORE_REDIS_PREFIX"])
@pytest.mark.parametrize("value", [
    'acme"; DROP SCHEMA batchscore CASCADE; --', "acme'", "ac me", "acme;", "acme*", "ac?me",
    "acme[1]", "Acme", "1acme", "_acme", "acme-bi", "acme.bi", "acme:recs", "a" * 41, "ümlaut",
])
def test_every_configurable_name_refuses_anything_but_the_pattern(setting, value):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({setting: value})
    assert str(refused.value).startswith(f"{setting} must be 1 to 40 lower-case letters")
    assert repr(value) in str(refused.value)


def test_the_longest_and_shortest_names_pass():
    names = Settings.from_env({"BATCHSCORE_SCHEMA": "a" * 40, "BATCHSCORE_BI_SCHEMA": "b",
                               "BATCHSCORE_REDIS_PREFIX": "r0_"}).names
    assert (names.schema, names.bi_schema, names.redis_prefix) == ("a" * 40, "b", "r0_")
    assert names.writer_role == "a" * 40 + "_writer"  # 47 bytes: within PostgreSQL's 63


def test_the_two_schemas_must_differ():
    with pytest.raises(ConfigError, match="BATCHSCORE_SCHEMA and BATCHSCORE_BI_SCHEMA must differ"):
        Settings.from_env({"BATCHSCORE_SCHEMA": "acme", "BATCHSCORE_BI_SCHEMA": "acme"})


def test_roles_carry_the_core_schema_name():
    assert (ACME.owner_role, ACME.writer_role, ACME.bi_role) == (
        "acme_owner", "acme_writer", "acme_bi")
    assert (Names().owner_role, Names().writer_role, Names().bi_role) == (
        "batchscore_owner", "batchscore_writer", "batchscore_bi")


def parts(composed: Composed) -> list:
    """``composed``'s pieces, the plain SQL between fields joined into one string."""
    joined: list = []
    for piece in composed.seq:
        if isinstance(piece, SQL) and joined and isinstance(joined[-1], str):
            joined[-1] += piece.string
        else:
            joined.append(piece.string if isinstance(piece, SQL) else piece)
    return joined


def test_a_template_is_composed_with_quoted_identifiers_and_literals():
    assert ACME.compose(
        "SELECT r.run_id FROM {schema}.runs r JOIN {bi}.runs b USING (run_id)"
    ) == Composed([SQL("SELECT r.run_id FROM "), Identifier("acme"), SQL(".runs r JOIN "),
                   Identifier("acme_bi"), SQL(".runs b USING (run_id)")])
    assert ACME.compose("GRANT USAGE ON SCHEMA {bi} TO {writer}, {bi_role}") == Composed([
        SQL("GRANT USAGE ON SCHEMA "), Identifier("acme_bi"), SQL(" TO "),
        Identifier("acme_writer"), SQL(", "), Identifier("acme_bi")])
    assert ACME.compose("SET ROLE {owner}") == Composed([SQL("SET ROLE "),
                                                         Identifier("acme_owner")])
    assert ACME.compose("WHERE rolname = {owner_name} AND nspname = {bi_name}") == Composed([
        SQL("WHERE rolname = "), Literal("acme_owner"), SQL(" AND nspname = "),
        Literal("acme_bi")])


def test_the_default_names_are_composed_the_same_way():
    assert Names().compose("SELECT * FROM {schema}.runs JOIN {bi}.runs USING (run_id)") == (
        Composed([SQL("SELECT * FROM "), Identifier("batchscore"), SQL(".runs JOIN "),
                  Identifier("bi"), SQL(".runs USING (run_id)")]))


def test_nothing_outside_a_field_is_touched():
    # An alias, a literal and a comment that read like the default names stay as written:
    # only fields are filled, and a doubled brace is one brace.
    text = ("SELECT bi.x, 'bi', 'batchscore' FROM {schema}.t AS bi -- batchscore.t\n"
            "WHERE a = '{{}}'::jsonb")
    assert parts(ACME.compose(text)) == [
        "SELECT bi.x, 'bi', 'batchscore' FROM ", Identifier("acme"),
        ".t AS bi -- batchscore.t\nWHERE a = '{}'::jsonb"]


def test_a_callers_own_fields_join_the_deployments():
    assert ACME.compose("SELECT {schema}.{function}(%s)", function=Identifier("f")) == (
        Composed([SQL("SELECT "), Identifier("acme"), SQL("."), Identifier("f"),
                  SQL("(%s)")]))
