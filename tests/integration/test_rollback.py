"""Rollback: both stores serve the previous version again, exactly, and the registry follows."""

from datetime import date

import pytest
import sqlalchemy as sa

from jobs.client import RecommendationClient
from jobs.contracts.redis import Keyspace
from jobs.lifecycle import registry
from jobs.lifecycle.registry import NewModel, register
from jobs.orchestration.rollback import roll_back
from jobs.publish.postgres import RollbackError
from jobs.publish.reconcile import disagreement, reconcile
from tests.integration.test_publish import publish_day

KEYS = Keyspace()  # the default prefix's keys

DAY1, DAY2, DAY3 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)
GOOD = {1: [(10, 0.9), (11, 0.5)], 2: [(12, 0.8), (10, 0.1)]}
BAD = {1: [(90, 0.7), (91, 0.6)], 2: [(92, 0.4), (93, 0.3)], 3: [(94, 0.2), (95, 0.1)]}
GATES = {"passed": True, "reason": "all gates passed", "serving_version": None, "checks": []}


def new_model(engine, day: date) -> int:
    return register(engine, NewModel(
        created_by="test", trained_as_of=day, params={}, metrics={}, data_snapshot={},
        code_version="test", artifact_uri="file:///nowhere", gates=GATES,
    )).version


def served_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT user_id, rank, item_id, score, run_id, model_version, logical_date"
            " FROM bi.recommendations ORDER BY user_id, rank"))]


def redis_reads(redis_client, users) -> list:
    client = RecommendationClient(redis_client, KEYS)
    return [client.get_recommendations(user, k=5) for user in users]


def test_rollback_restores_both_stores_exactly_and_marks_the_model(engine, redis_client):
    v1 = new_model(engine, DAY1)  # serving: the first version
    publish_day(engine, redis_client, v1, DAY1, GOOD)
    before_rows = served_rows(engine)
    before_reads = redis_reads(redis_client, [1, 2, 3])
    good_id = int(redis_client.get(KEYS.pointer_key()))
    good_values = {user: redis_client.get(KEYS.user_key(good_id, user)) for user in GOOD}

    v2 = new_model(engine, DAY2)
    registry.promote(engine, v2, "test", "gates passed")
    publish_day(engine, redis_client, v2, DAY2, BAD)
    bad_id = int(redis_client.get(KEYS.pointer_key()))
    assert served_rows(engine) != before_rows
    assert redis_reads(redis_client, [1])[0].items[0].item_id == 90

    done = roll_back(engine, redis_client, KEYS, "oncall", "v2 recommends junk")

    assert (done.rolled_back, done.restored) == (bad_id, good_id)
    assert done.rolled_back_models == [v2] and done.restored_model == v1
    assert served_rows(engine) == before_rows
    assert redis_reads(redis_client, [1, 2, 3]) == before_reads  # user 3: the fallback again
    assert {u: redis_client.get(KEYS.user_key(good_id, u)) for u in GOOD} == good_values
    # The restored keys no longer expire; the rolled-back ones stay as the version
    # served before, whole.
    assert redis_client.ttl(KEYS.user_key(good_id, 1)) == -1
    assert redis_client.ttl(KEYS.user_key(bad_id, 1)) == -1

    assert registry.get(engine, v2).status == "rolled_back"
    assert registry.get(engine, v1).status == "serving"
    last = registry.status_history(engine, v2)[-1]
    assert (last.status, last.changed_by) == ("rolled_back", "oncall")
    assert "v2 recommends junk" in last.reason
    decision = registry.promotion_decision(engine, registry.get(engine, v2))
    assert not decision.promote and "rolled back" in decision.reason
    with engine.connect() as conn:
        history = conn.execute(sa.text(
            "SELECT publish_id, previous_publish_id, action, switched_by, reason"
            " FROM bi.serving_history ORDER BY switched_at DESC LIMIT 1")).one()
        status = conn.execute(sa.text(
            "SELECT status FROM bi.prediction_versions WHERE publish_id = :id"),
            {"id": bad_id}).scalar()
    assert tuple(history) == (good_id, bad_id, "rollback", "oncall", "v2 recommends junk")
    assert status == "rolled_back"

    # Nothing served before the first version: a second rollback has nowhere to go.
    with pytest.raises(RollbackError, match="no earlier published version"):
        roll_back(engine, redis_client, KEYS, "oncall", "again")
    assert served_rows(engine) == before_rows


def test_a_rollback_further_back_writes_the_version_to_redis_again_from_postgres(
        engine, redis_client):
    v1 = new_model(engine, DAY1)
    publish_day(engine, redis_client, v1, DAY1, GOOD)
    good_id = int(redis_client.get(KEYS.pointer_key()))
    good_reads = redis_reads(redis_client, [1, 2, 3])
    good_values = {user: redis_client.get(KEYS.user_key(good_id, user)) for user in GOOD}
    publish_day(engine, redis_client, v1, DAY2, BAD)
    publish_day(engine, redis_client, v1, DAY3, BAD)
    # Two switches later Redis no longer holds it; PostgreSQL still does.
    assert redis_client.exists(KEYS.meta_key(good_id), KEYS.user_key(good_id, 1)) == 0

    done = roll_back(engine, redis_client, KEYS, "oncall", "back to the first", to=good_id)

    assert done.restored == good_id
    assert int(redis_client.get(KEYS.pointer_key())) == good_id
    assert {u: redis_client.get(KEYS.user_key(good_id, u)) for u in GOOD} == good_values
    assert redis_reads(redis_client, [1, 2, 3]) == good_reads
    assert redis_client.ttl(KEYS.user_key(good_id, 1)) == -1
    assert redis_client.ttl(KEYS.meta_key(good_id)) == -1
    assert disagreement(engine, redis_client, KEYS) is None


def test_reconcile_points_redis_at_what_postgres_serves(engine, redis_client, tmp_path):
    v1 = new_model(engine, DAY1)
    publish_day(engine, redis_client, v1, DAY1, GOOD)
    good_id = int(redis_client.get(KEYS.pointer_key()))
    publish_day(engine, redis_client, v1, DAY2, BAD)
    bad_id = int(redis_client.get(KEYS.pointer_key()))
    with engine.begin() as conn:  # Postgres switched back, Redis did not
        conn.execute(sa.text("UPDATE batchscore.serving SET publish_id = :id"), {"id": good_id})
    assert disagreement(engine, redis_client, KEYS) == (
        f"postgres serves version {good_id}, the redis pointer names {bad_id}")
    report = reconcile(engine, redis_client, KEYS, tmp_path)
    assert (report.redis_pointer_before, report.redis_pointer) == (bad_id, good_id)
    assert int(redis_client.get(KEYS.pointer_key())) == good_id
    assert redis_client.ttl(KEYS.user_key(good_id, 1)) == -1
    # Not served, nor served before the served one (PostgreSQL's history says): PostgreSQL
    # keeps it, Redis no longer does.
    assert redis_client.exists(KEYS.user_key(bad_id, 1), KEYS.meta_key(bad_id)) == 0
    assert report.redis_versions_retired == [bad_id]
    assert disagreement(engine, redis_client, KEYS) is None
