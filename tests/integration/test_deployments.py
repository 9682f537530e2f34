"""Two deployments side by side in one database: each migrates, publishes and rolls back
in its own schemas, under its own publish lock, without touching the other."""

from __future__ import annotations

from datetime import date

import pytest
import redis
import sqlalchemy as sa

from jobs.client import RecommendationClient
from jobs.contracts.redis import Keyspace
from jobs.lifecycle import registry
from jobs.orchestration.rollback import roll_back
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import applied_migrations, engine_for, migrations, statement, upgrade
from jobs.platform.names import Names
from jobs.platform.redis_client import connect
from jobs.publish.protocol import publish_lock, publish_lock_key
from tests.integration.test_publish import publish_day
from tests.integration.test_rollback import new_model

ACME = Names(schema="acme", bi_schema="acme_bi", redis_prefix="acme")
ACME_KEYS = Keyspace(ACME.redis_prefix)
DAY1, DAY2 = date(2026, 11, 18), date(2026, 11, 19)


@pytest.fixture
def acme_settings(settings) -> Settings:
    return Settings.from_env({
        "BATCHSCORE_HOME": str(settings.home), "BATCHSCORE_SCHEMA": ACME.schema,
        "BATCHSCORE_BI_SCHEMA": ACME.bi_schema, "BATCHSCORE_REDIS_PREFIX": ACME.redis_prefix})


@pytest.fixture
def acme(engine, endpoints, acme_settings):
    """A second deployment in the same database as ``engine``'s, migrated afresh, and
    connected as its own writer role (acme_writer)."""
    admin = engine_for(endpoints.database_url, ACME)

    def drop() -> None:
        with admin.begin() as conn:
            # Composed with acme's names: these drop acme_bi and acme, never bi or batchscore.
            conn.execute(statement(conn, "DROP SCHEMA IF EXISTS {bi} CASCADE"))
            conn.execute(statement(conn, "DROP SCHEMA IF EXISTS {schema} CASCADE"))

    drop()
    services.upgrade(acme_settings)
    writer = services.database(acme_settings)
    yield writer
    writer.dispose()
    drop()
    admin.dispose()


def tables_of(engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": schema}).scalars())


def served(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(statement(
            conn, "SELECT user_id, rank, item_id, logical_date FROM {bi}.recommendations"
            " ORDER BY user_id, rank"))]


def test_a_second_deployment_migrates_into_its_own_schemas(engine, acme):
    assert applied_migrations(acme) == [m.version for m in migrations()]
    ours, theirs = tables_of(engine, "batchscore"), tables_of(engine, "acme")
    assert "runs" in theirs and "schema_migrations" in theirs and "_yoyo_migration" in theirs
    assert theirs == ours
    assert tables_of(engine, "acme_bi") == tables_of(engine, "bi")
    # The views of one deployment read that deployment's tables and views.
    with engine.connect() as conn:
        lists, ranks = (conn.execute(sa.text(
            f"SELECT pg_get_viewdef('acme_bi.{view}'::regclass)")).scalar_one()
            for view in ("recommendation_lists", "recommendations"))
    assert "acme.prediction_lists" in lists and "batchscore." not in lists
    assert "acme_bi.recommendation_lists" in ranks and " bi." not in ranks
    assert upgrade(engine_for(str(engine.url.render_as_string(hide_password=False)),
                              ACME)) == []  # and again finds nothing to do


def test_a_deployments_roles_reach_only_its_own_schemas(engine, acme, acme_settings):
    """acme's writer, asked for our schemas by name, is refused them by the server."""
    url = services.database_url(acme_settings, services.WRITER)
    assert "acme_writer" in url
    plain = engine_for(url)  # default names: the templates below name our schemas
    try:
        for template in ("SELECT count(*) FROM {schema}.runs",
                         "SELECT count(*) FROM {bi}.recommendations",
                         "SELECT {schema}.drop_version_table(1)"):
            with pytest.raises(sa.exc.ProgrammingError) as refused, plain.connect() as conn:
                conn.execute(statement(conn, template))
            assert refused.value.orig.pgcode == "42501", template
    finally:
        plain.dispose()
    # Its own tables it may use.
    with acme.connect() as conn:
        assert conn.execute(statement(conn, "SELECT count(*) FROM {schema}.runs")).scalar() == 0


def keys_and_values(admin, pattern: str) -> dict[bytes, bytes | set]:
    found = {}
    for key in admin.scan_iter(match=pattern, count=1000):
        found[key] = (admin.smembers(key) if admin.type(key) == b"set" else admin.get(key))
    return found


def test_publish_and_rollback_in_one_deployment_leave_the_other_alone(
        engine, acme, acme_settings, redis_client, redis_admin):
    # One Redis, one database: acme publishes as its own writer, under its own prefix.
    acme_redis = connect(services.redis_url(acme_settings, "writer"))
    ours = new_model(engine, DAY1)
    publish_day(engine, redis_client, ours, DAY1, {1: [(10, 0.9), (11, 0.5)]})
    ours_served = served(engine)
    ours_keys = keys_and_values(redis_admin, "batchscore:*")
    # Readers that read the pointer every time see the rollback at once.
    ours_reader = RecommendationClient(redis_client, Keyspace("batchscore"), pointer_ttl_seconds=0)
    assert ours_reader.get_recommendations(1).items[0].item_id == 10

    first = new_model(acme, DAY1)
    publish_day(acme, acme_redis, first, DAY1, {1: [(20, 0.9), (21, 0.5)]}, keys=ACME_KEYS)
    second = new_model(acme, DAY2)
    registry.promote(acme, second, "test", "gates passed")
    publish_day(acme, acme_redis, second, DAY2, {1: [(30, 0.9), (31, 0.5)]}, keys=ACME_KEYS)
    acme_reader = RecommendationClient(acme_redis, ACME_KEYS, pointer_ttl_seconds=0)
    assert served(acme) == [(1, 1, 30, DAY2), (1, 2, 31, DAY2)]
    assert acme_reader.get_recommendations(1).items[0].item_id == 30
    # Same publish ids in both deployments, and yet nothing of ours moved.
    assert served(engine) == ours_served == [(1, 1, 10, DAY1), (1, 2, 11, DAY1)]
    assert keys_and_values(redis_admin, "batchscore:*") == ours_keys

    done = roll_back(acme, acme_redis, ACME_KEYS, "oncall", "acme's second model is wrong")
    assert done.restored_model == first
    assert served(acme) == [(1, 1, 20, DAY1), (1, 2, 21, DAY1)]
    assert acme_reader.get_recommendations(1).items[0].item_id == 20
    assert served(engine) == ours_served
    assert keys_and_values(redis_admin, "batchscore:*") == ours_keys
    assert ours_reader.get_recommendations(1).items[0].item_id == 10
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.serving_history"
                                    " WHERE action = 'rollback'")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM acme.serving_history"
                                    " WHERE action = 'rollback'")).scalar_one() == 1
    # Each writer is held to its own keys by the server.
    with pytest.raises(redis.exceptions.NoPermissionError):
        acme_redis.get(Keyspace("batchscore").pointer_key())
    acme_redis.close()


def test_each_deployment_has_its_own_publish_lock(engine, acme):
    assert publish_lock_key(Names()) == (72_031, 1)
    assert publish_lock_key(ACME) != publish_lock_key(Names())
    # The other deployment's publisher does not wait for ours.
    with publish_lock(engine, "ours", wait_seconds=0.1), \
            publish_lock(acme, "acme's", wait_seconds=0.1):
        pass
