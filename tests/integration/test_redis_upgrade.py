"""A Redis the previous release wrote (JSON values, replaced versions expiring after 7 days,
no users records) is served by this release until its versions are retired by count, and
nothing of it is left behind."""

from datetime import date

from jobs.client import RecommendationClient
from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace
from jobs.orchestration.rollback import roll_back
from tests.integration.test_publish import publish_day

KEYS = Keyspace()  # the default prefix's keys

DAY1, DAY2, DAY3, DAY4, DAY5 = (date(2026, 11, day) for day in (16, 17, 18, 19, 20))
OLD_RETENTION_SECONDS = 7 * 86_400
# What the previous release wrote for a version, byte for byte as its encoder did: JSON
# pairs with float32 scores in their shortest form, the meta with sorted keys and no
# value_format. Versions 1 and 2 hold these lists; POPULAR is test_publish's fallback.
OLD_USERS = {1: {1: b"[[10,0.5],[11,0.25]]", 2: b"[[12,1.5]]"},
             2: {1: b"[[20,0.75],[21,0.125]]", 2: b"[[22,1]]"}}
OLD_POPULAR = b"[[100,9],[200,7]]"
RECS = {1: {1: [(10, 0.5), (11, 0.25)], 2: [(12, 1.5)]},
        2: {1: [(20, 0.75), (21, 0.125)], 2: [(22, 1.0)]}}


def old_meta(run_id: str, model_version: int, day: date) -> bytes:
    return (b'{"k":2,"logical_date":"' + day.isoformat().encode() + b'","model_version":'
            + str(model_version).encode() + b',"published_at":"2026-11-18T02:00:00+00:00",'
            b'"run_id":"' + run_id.encode() + b'","users":2}')


def write_as_the_previous_release(redis_admin, versions: dict) -> None:
    """Redis as the previous release left it after serving version 1, then version 2:
    version 2 served and permanent, version 1 expiring after its 7 days."""
    redis_admin.flushdb()
    for publish_id, (run_id, model_version, day) in versions.items():
        ttl = None if publish_id == 2 else OLD_RETENTION_SECONDS
        for user, value in OLD_USERS[publish_id].items():
            redis_admin.set(KEYS.user_key(publish_id, user), value, ex=ttl)
        redis_admin.set(KEYS.popular_key(publish_id), OLD_POPULAR, ex=ttl)
        redis_admin.set(KEYS.meta_key(publish_id), old_meta(run_id, model_version, day),
                        ex=ttl)
    redis_admin.sadd(KEYS.versions_key(), 1, 2)
    redis_admin.set(KEYS.pointer_key(), b"2")


def read(redis_client, user: int):
    recs = RecommendationClient(redis_client, KEYS).get_recommendations(user, k=5)
    return recs.source, [(item.item_id, item.score) for item in recs.items], recs.run_id


def test_a_redis_of_the_previous_release_is_served_then_retired_by_count(
        engine, redis_client, redis_admin, model_version) -> None:
    # PostgreSQL as the previous release left it (its layout is not this test's).
    first, _ = publish_day(engine, redis_client, model_version, DAY1, RECS[1])
    second, _ = publish_day(engine, redis_client, model_version, DAY2, RECS[2])
    assert (first.publish_id, second.publish_id) == (1, 2)
    write_as_the_previous_release(redis_admin, {
        1: (first.run_id, model_version, DAY1), 2: (second.run_id, model_version, DAY2)})

    # Served as it is: the read client reads the JSON values.
    assert read(redis_client, 1) == ("predictions", [(20, 0.75), (21, 0.125)], second.run_id)
    assert read(redis_client, 9) == ("fallback", [(100, 9.0), (200, 7.0)], second.run_id)

    # This release's first switch keeps version 2 (served before) as the previous
    # release wrote it, and retires version 1, which it was letting expire.
    third, _ = publish_day(engine, redis_client, model_version, DAY3, {1: [(30, 0.5)]})
    assert read(redis_client, 1) == ("predictions", [(30, 0.5)], third.run_id)
    assert redis_admin.exists(*(KEYS.user_key(1, user) for user in (1, 2)),
                              KEYS.popular_key(1), KEYS.meta_key(1)) == 0
    assert redis_admin.get(KEYS.user_key(2, 1)) == OLD_USERS[2][1]
    assert redis_admin.ttl(KEYS.user_key(2, 1)) == -1
    assert contract.decode_meta(redis_admin.get(KEYS.meta_key(3)))["value_format"] == "binary-1"

    # A rollback to it is a flip, JSON and all; then the next switch keeps it as the
    # version served before and retires the rolled-back one.
    roll_back(engine, redis_client, KEYS, "oncall", "back to the old release's version")
    assert read(redis_client, 1) == ("predictions", [(20, 0.75), (21, 0.125)], second.run_id)
    fourth, _ = publish_day(engine, redis_client, model_version, DAY4, {1: [(40, 0.5)]})
    assert redis_admin.exists(KEYS.meta_key(3), KEYS.users_key(3)) == 0
    assert redis_admin.get(KEYS.user_key(2, 2)) == OLD_USERS[2][2]

    # One more switch and nothing of the previous release is left.
    fifth, _ = publish_day(engine, redis_client, model_version, DAY5, {1: [(50, 0.5)]})
    assert read(redis_client, 1) == ("predictions", [(50, 0.5)], fifth.run_id)
    kept = (fourth.publish_id, fifth.publish_id)
    assert sorted(redis_admin.keys("*")) == sorted([
        KEYS.pointer_key(), KEYS.versions_key(),
        *(key for publish_id in kept
          for key in (KEYS.user_key(publish_id, 1), KEYS.popular_key(publish_id),
                      KEYS.meta_key(publish_id), KEYS.users_key(publish_id)))])
    assert redis_admin.smembers(KEYS.versions_key()) == {str(v).encode() for v in kept}
