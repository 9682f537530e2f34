"""Configurable names: the strict pattern, and the translation of SQL to a deployment's names."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize(("sql", "translated"), [
    ("SELECT r.run_id FROM batchscore.runs r JOIN bi.runs b USING (run_id)",
     "SELECT r.run_id FROM acme.runs r JOIN acme_bi.runs b USING (run_id)"),
    ('COPY "batchscore"."items" (item_id) FROM STDIN', 'COPY "acme"."items" (item_id) FROM STDIN'),
    ("CREATE SCHEMA IF NOT EXISTS batchscore", "CREATE SCHEMA IF NOT EXISTS acme"),
    ("DROP SCHEMA IF EXISTS bi CASCADE", "DROP SCHEMA IF EXISTS acme_bi CASCADE"),
    ("GRANT SELECT ON ALL TABLES IN SCHEMA bi TO batchscore_bi",
     "GRANT SELECT ON ALL TABLES IN SCHEMA acme_bi TO acme_bi"),
    ("SELECT 1 FROM pg_roles WHERE rolname = 'batchscore_writer'",
     "SELECT 1 FROM pg_roles WHERE rolname = 'acme_writer'"),
    ("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
     " WHERE n.nspname = 'batchscore'",
     "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
     " WHERE n.nspname = 'acme'"),
    ("EXECUTE format('DROP TABLE IF EXISTS batchscore.%I', 'predictions_p' || id)",
     "EXECUTE format('DROP TABLE IF EXISTS acme.%I', 'predictions_p' || id)"),
    ("WHERE c.relnamespace IN ('batchscore'::regnamespace, 'bi'::regnamespace)",
     "WHERE c.relnamespace IN ('acme'::regnamespace, 'acme_bi'::regnamespace)"),
    ("SET ROLE batchscore_owner", "SET ROLE acme_owner"),
    ("SELECT to_regclass('batchscore.schema_migrations')",
     "SELECT to_regclass('acme.schema_migrations')"),
    # Not schema names: a column of an alias, longer identifiers, other literals.
    ("SELECT abi.x, mybatchscore.y, batchscore_writers, 'batchscore://models/serving'",
     "SELECT abi.x, mybatchscore.y, batchscore_writers, 'batchscore://models/serving'"),
])
def test_sql_is_translated_to_the_deployments_names(sql, translated):
    assert ACME.sql(sql) == translated


def test_the_default_names_leave_sql_alone():
    sql = "SELECT * FROM batchscore.runs JOIN bi.runs USING (run_id)"
    assert Names().sql(sql) is sql
    assert Names().cursor_factory() is None
