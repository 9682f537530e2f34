"""Two deployments in one Redis, each with its own prefix, database and writer: publishing,
switching, rolling back and reconciling one never sees or touches the other's keys.

Both databases number their versions from 1, so the two deployments' versions
have the same publish ids: only the prefix keeps their keys apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import psycopg2
import pytest
import redis
import sqlalchemy as sa

from jobs.client import RecommendationClient
from jobs.contracts.redis import Keyspace
from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration.rollback import roll_back
from jobs.platform import runs, services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, upgrade
from jobs.platform.redis_client import connect
from jobs.publish.postgres import PostgresPublisher
from jobs.publish.reconcile import reconcile
from jobs.publish.redis import RedisPublisher
from tests.conftest import reset_database
from tests.integration.test_publish import POPULAR, block, publish_day

OURS, THEIRS = Keyspace("batchscore"), Keyspace("other")
DAY1, DAY2, DAY3 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)
OTHER_DATABASE = "batchscore_other"


@pytest.fixture
def other_engine(endpoints: services.Endpoints) -> Iterator[sa.engine.Engine]:
    """The other deployment's own database, on the same PostgreSQL."""
    admin = psycopg2.connect(endpoints.database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {OTHER_DATABASE} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {OTHER_DATABASE}")
    engine = engine_for(endpoints.database_url.rsplit("/", 1)[0] + f"/{OTHER_DATABASE}")
    reset_database(engine)
    upgrade(engine)
    yield engine
    engine.dispose()
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {OTHER_DATABASE} WITH (FORCE)")
    admin.close()


@pytest.fixture
def their_settings(settings: Settings) -> Settings:
    """The other deployment's settings: the same home, so the same embedded Redis."""
    return Settings.from_env({"BATCHSCORE_HOME": str(settings.home),
                              "BATCHSCORE_REDIS_PREFIX": THEIRS.prefix})


@pytest.fixture
def their_writer(their_settings: Settings, redis_admin: redis.Redis) -> Iterator[redis.Redis]:
    client = connect(services.redis_url(their_settings, "writer"))
    yield client
    client.close()


def model(engine: sa.engine.Engine) -> int:
    return register(engine, NewModel(
        created_by="test", trained_as_of=date(2026, 11, 17), params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere")).version


def snapshot(admin: redis.Redis, keys: Keyspace) -> dict[bytes, tuple[bytes | None, int]]:
    """Every key of a deployment, with its value (sets as sorted members) and whether it
    expires."""
    found = {}
    for key in admin.scan_iter(match=f"{keys.prefix}:*"):
        if admin.type(key) == b"set":
            value = b",".join(sorted(admin.smembers(key)))
        else:
            value = admin.get(key)
        found[key] = (value, -1 if admin.ttl(key) == -1 else 1)
    return found


def staged_version(engine, client: redis.Redis, keys: Keyspace, model_version: int) -> int:
    """A version written aside in both stores by a run that then failed: an orphan."""
    run_id = runs.start(engine, "nightly", DAY3, model_version)
    postgres = PostgresPublisher(engine)
    version = postgres.allocate(run_id, model_version, DAY3, k=2)
    postgres.prepare(version)
    postgres.write(block({1: [(70, 0.5)]}))
    postgres.write_fallback(POPULAR)
    postgres.finish_load()
    publisher = RedisPublisher(client, keys)
    publisher.prepare(version)
    publisher.write(block({1: [(70, 0.5)]}))
    publisher.write_fallback(POPULAR)
    publisher.write_meta()
    runs.fail(engine, run_id, "died before its switch", {})
    return version.publish_id


def test_two_prefixes_in_one_redis_never_touch_each_others_keys(
        settings, their_settings, engine, other_engine, redis_client, their_writer,
        redis_admin, tmp_path) -> None:
    ours_model, theirs_model = model(engine), model(other_engine)
    # They publish version 1 (and we a version 2): the same publish ids, other prefixes.
    theirs_v1, _ = publish_day(other_engine, their_writer, theirs_model, DAY1,
                               {1: [(900, 0.9)], 2: [(901, 0.8)]}, keys=THEIRS)
    theirs_orphan = staged_version(other_engine, their_writer, THEIRS, theirs_model)
    theirs_before = snapshot(redis_admin, THEIRS)
    assert theirs_v1.publish_id == 1 and theirs_orphan == 2

    ours_v1, _ = publish_day(engine, redis_client, ours_model, DAY1, {1: [(10, 0.5)]},
                             keys=OURS)
    ours_v2, _ = publish_day(engine, redis_client, ours_model, DAY2, {1: [(11, 0.5)]},
                             keys=OURS)
    assert (ours_v1.publish_id, ours_v2.publish_id) == (1, 2)
    ours_orphan = staged_version(engine, redis_client, OURS, ours_model)
    roll_back(engine, redis_client, OURS, "oncall", "v2 was bad")
    report = reconcile(engine, redis_client, OURS, tmp_path)

    # Ours: served v1 again, v2 kept as the version served before it, our orphan's keys gone.
    assert report.redis_pointer == 1
    assert report.versions_discarded == [ours_orphan]
    assert redis_admin.get(OURS.pointer_key()) == b"1"
    assert redis_admin.ttl(OURS.user_key(2, 1)) == -1
    assert not list(redis_admin.scan_iter(match=OURS.version_pattern(ours_orphan)))
    # Theirs, byte for byte as they left it: their v1 served and permanent, and even
    # their orphan (version 2, the id of the version we rolled back) is theirs to settle.
    assert snapshot(redis_admin, THEIRS) == theirs_before
    assert theirs_before[THEIRS.pointer_key()] == (b"1", -1)
    assert theirs_before[THEIRS.user_key(1, 1)] == (bytes.fromhex("0102" "8403" "6666663f"), -1)

    # Their reconcile, in turn, leaves ours alone.
    ours_after = snapshot(redis_admin, OURS)
    their_report = reconcile(other_engine, their_writer, THEIRS, tmp_path / "theirs")
    assert their_report.versions_discarded == [theirs_orphan]
    assert not list(redis_admin.scan_iter(match=THEIRS.version_pattern(theirs_orphan)))
    assert snapshot(redis_admin, OURS) == ours_after

    # Each reader reads its own deployment, and cannot read the other's.
    ours_reader = RecommendationClient.from_url(services.redis_url(settings, "reader"))
    theirs_reader = RecommendationClient.from_url(services.redis_url(their_settings, "reader"),
                                                  prefix=THEIRS.prefix)
    assert ours_reader.get_recommendations(1).items[0].item_id == 10
    assert theirs_reader.get_recommendations(2).items[0].item_id == 901
    with pytest.raises(redis.exceptions.NoPermissionError):
        RecommendationClient(theirs_reader.client, OURS).get_recommendations(1)
