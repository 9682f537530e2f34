"""Publishing to the embedded PostgreSQL and Redis: atomic switches, reruns, failures."""

from datetime import date

import pyarrow as pa
import pytest
import sqlalchemy as sa

from jobs.client import NoPublishedVersionError, RecommendationClient
from jobs.contracts.redis import Keyspace
from jobs.platform import runs
from jobs.publish.postgres import PostgresPublisher
from jobs.publish.protocol import publish_lock, switch
from jobs.publish.redis import RedisPublisher

KEYS = Keyspace()  # the default prefix's keys

DAY1, DAY2, DAY3 = date(2026, 11, 18), date(2026, 11, 19), date(2026, 11, 20)
POPULAR = pa.table({"rank": [1, 2], "item_id": [100, 200], "score": [9.0, 7.0]})


def block(recs: dict[int, list[tuple[int, float]]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "user_id": list(recs),
            "items": [[item for item, _ in pairs] for pairs in recs.values()],
            "scores": [[score for _, score in pairs] for pairs in recs.values()],
        },
        schema=pa.schema([("user_id", pa.int64()), ("items", pa.list_(pa.int64())),
                          ("scores", pa.list_(pa.float32()))]),
    )


def publish_day(engine, redis_client, model_version: int, day: date,
                recs: dict[int, list[tuple[int, float]]], blocks=None, keys: Keyspace = KEYS):
    """What the nightly's publish steps do: both stores written aside, then switched."""
    version = stage_day(engine, redis_client, model_version, day, recs, blocks, keys)
    with publish_lock(engine, "test"):
        outcome = switch(engine, redis_client, keys, version.publish_id, keep_versions=2)
    runs.succeed(engine, version.run_id, {})
    return version, outcome


def stage_day(engine, redis_client, model_version: int, day: date,
              recs: dict[int, list[tuple[int, float]]], blocks=None, keys: Keyspace = KEYS):
    """Both stores written aside for a new run of ``day``; nothing switched."""
    run_id = runs.start(engine, "nightly", day, model_version)
    postgres = PostgresPublisher(engine, keep_versions=2)
    version = postgres.allocate(run_id, model_version, day, k=2)
    postgres.prepare(version)
    try:
        for each in blocks if blocks is not None else [block(recs)]:
            postgres.write(each)
        postgres.write_fallback(POPULAR)
        postgres.finish_load()
    except BaseException:
        postgres.abort()
        raise
    redis_publisher = RedisPublisher(redis_client, keys)
    redis_publisher.prepare(version)
    for each in blocks if blocks is not None else [block(recs)]:
        redis_publisher.write(each)
    redis_publisher.write_fallback(POPULAR)
    redis_publisher.write_meta()
    return version


def test_the_nightlys_switch_keeps_as_many_versions_as_its_run_was_given(
        engine, redis_client, model_version, tmp_path) -> None:
    from jobs.orchestration.publish_steps import switched
    from jobs.orchestration.run_state import RunState

    for n, day in enumerate((DAY1, DAY2), start=10):
        publish_day(engine, redis_client, model_version, day, {1: [(n, 1.0)]})
    version = stage_day(engine, redis_client, model_version, DAY3, {1: [(12, 1.0)]})
    state = RunState(run_id=version.run_id, run_date=DAY3.isoformat(),
                     model_version=model_version, model_path="unused", k=2,
                     home=str(tmp_path), work_dir=str(tmp_path / "run"),
                     publish_id=version.publish_id, keep_versions=1)
    switched(engine, state, redis_client, shadow=False)
    # BATCHSCORE_KEEP_VERSIONS=1: the served version and one before it.
    assert kept_versions(engine) == [(DAY2, "published"), (DAY3, "published")]


def served_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT user_id, rank, item_id, score, logical_date FROM bi.recommendations"
            " ORDER BY user_id, rank"))]


def kept_versions(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT logical_date, status FROM batchscore.prediction_versions"
            " WHERE status = 'published' ORDER BY logical_date"))]


def test_a_published_version_is_served_in_both_stores(engine, redis_client, model_version) -> None:
    version, outcome = publish_day(engine, redis_client, model_version, DAY1,
                                   {1: [(10, 0.5), (11, 0.25)], 2: [(12, 1.5), (10, 1.0)]})
    assert outcome.served
    assert served_rows(engine) == [
        (1, 1, 10, 0.5, DAY1), (1, 2, 11, 0.25, DAY1),
        (2, 1, 12, 1.5, DAY1), (2, 2, 10, 1.0, DAY1),
    ]
    assert redis_client.get(KEYS.pointer_key()) == str(version.publish_id).encode()
    assert redis_client.get(KEYS.user_key(version.publish_id, 1)) == bytes.fromhex(
        "0102" "0a000b00" "0000003f" "0000803e")  # 10, 11; 0.5, 0.25
    client = RecommendationClient(redis_client, KEYS)
    recs = client.get_recommendations(2, k=1)
    assert (recs.source, [(i.item_id, i.score) for i in recs.items]) == ("predictions",
                                                                         [(12, 1.5)])
    assert recs.model_version == model_version and recs.run_id == version.run_id
    unknown = client.get_recommendations(999, k=5)
    assert unknown.source == "fallback"
    assert [(i.item_id, i.score) for i in unknown.items] == [(100, 9.0), (200, 7.0)]


def test_rerunning_a_date_replaces_it(engine, redis_client, model_version) -> None:
    first, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    second, outcome = publish_day(engine, redis_client, model_version, DAY1, {1: [(11, 0.75)]})
    assert outcome.superseded == [first.publish_id]
    assert served_rows(engine) == [(1, 1, 11, 0.75, DAY1)]
    assert kept_versions(engine) == [(DAY1, "published")]
    with engine.connect() as conn:
        history = dict(conn.execute(sa.text(
            "SELECT DISTINCT publish_id, status FROM bi.recommendations_history")).all())
    # The replaced version stays, superseded, as a rollback target.
    assert history == {first.publish_id: "superseded", second.publish_id: "published"}
    # It was served: Redis keeps it whole, a rollback to it is a pointer flip.
    assert redis_client.ttl(KEYS.user_key(first.publish_id, 1)) == -1
    assert redis_client.ttl(KEYS.meta_key(first.publish_id)) == -1
    assert redis_client.ttl(KEYS.user_key(second.publish_id, 1)) == -1


def test_a_replaced_version_never_served_leaves_redis_at_once(engine, redis_client,
                                                              model_version) -> None:
    publish_day(engine, redis_client, model_version, DAY2, {1: [(10, 0.5)]})
    older, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(11, 0.5)]})
    _, outcome = publish_day(engine, redis_client, model_version, DAY1, {1: [(12, 0.5)]})
    assert outcome.superseded == [older.publish_id] and not outcome.served
    # No reader was ever pointed at it: it goes, its users record last.
    assert redis_client.exists(KEYS.user_key(older.publish_id, 1), KEYS.meta_key(older.publish_id),
                               KEYS.popular_key(older.publish_id),
                               KEYS.users_key(older.publish_id)) == 0


def test_an_older_date_is_kept_but_does_not_take_over(engine, redis_client,
                                                      model_version) -> None:
    newer, _ = publish_day(engine, redis_client, model_version, DAY2, {1: [(10, 0.5)]})
    older, outcome = publish_day(engine, redis_client, model_version, DAY1, {1: [(12, 0.1)]})
    assert not outcome.served
    assert served_rows(engine) == [(1, 1, 10, 0.5, DAY2)]
    assert redis_client.get(KEYS.pointer_key()) == str(newer.publish_id).encode()
    # PostgreSQL keeps it; Redis holds what is served and what was served before.
    assert redis_client.exists(KEYS.user_key(older.publish_id, 1),
                               KEYS.meta_key(older.publish_id)) == 0
    assert kept_versions(engine) == [(DAY1, "published"), (DAY2, "published")]


def test_the_previous_version_is_kept_and_old_ones_are_dropped(engine, redis_client,
                                                              redis_admin,
                                                              model_version) -> None:
    versions = [publish_day(engine, redis_client, model_version, day, {1: [(n, 1.0)]})[0]
                for n, day in enumerate((DAY1, DAY2, DAY3, date(2026, 11, 21)), start=10)]
    # keep_versions=2 keeps the served version and two before it.
    assert [row[0] for row in kept_versions(engine)] == [DAY2, DAY3, date(2026, 11, 21)]
    with engine.connect() as conn:
        partitions = conn.execute(sa.text(
            "SELECT count(*) FROM pg_inherits"
            " WHERE inhparent = 'batchscore.prediction_lists'::regclass"
        )).scalar()
    assert partitions == 3
    # Each kept version's per-item counts stay with it; the dropped one's go with it.
    assert item_exposure(engine) == [(v.publish_id, item, 1, 1)
                                     for v, item in zip(versions[1:], (11, 12, 13), strict=True)]
    # Redis keeps the served version and the one before it, whole and permanent, and
    # nothing of the two before those: the pointer, the versions set, and per version its
    # user key, fallback, meta key and users record.
    served, previous = versions[3].publish_id, versions[2].publish_id
    assert sorted(redis_admin.keys("*")) == sorted([
        KEYS.pointer_key(), KEYS.versions_key(),
        *(key for publish_id in (previous, served)
          for key in (KEYS.user_key(publish_id, 1), KEYS.popular_key(publish_id),
                      KEYS.meta_key(publish_id), KEYS.users_key(publish_id)))])
    assert redis_client.ttl(KEYS.user_key(previous, 1)) == -1
    assert redis_client.smembers(KEYS.versions_key()) == {str(previous).encode(),
                                                          str(served).encode()}


def failing_blocks():
    yield block({1: [(99, 9.0)]})
    raise RuntimeError("the scorer died mid-way")


def test_a_failure_mid_publish_leaves_the_served_version_untouched(engine, redis_client,
                                                                   redis_admin,
                                                                   model_version) -> None:
    good, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    before_rows = served_rows(engine)
    before_keys = sorted(redis_admin.keys("*"))
    with pytest.raises(RuntimeError, match="the scorer died mid-way"):
        publish_day(engine, redis_client, model_version, DAY2, {}, blocks=failing_blocks())
    assert served_rows(engine) == before_rows
    assert sorted(redis_admin.keys("*")) == before_keys
    assert redis_client.get(KEYS.pointer_key()) == str(good.publish_id).encode()
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text(
            "SELECT logical_date, status FROM batchscore.prediction_versions")).all())
        tables = conn.execute(sa.text(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'batchscore'"
            " AND tablename LIKE 'prediction_lists_p%'")).scalar()
    assert statuses == {DAY1: "published", DAY2: "failed"}
    assert tables == 1
    # The failed load's block was counted as it was encoded, and never stored.
    assert item_exposure(engine) == [(good.publish_id, 10, 1, 1)]


def test_bi_reads_the_most_recommended_items_from_the_stored_counts(engine, redis_client,
                                                                   model_version) -> None:
    first, _ = publish_day(engine, redis_client, model_version, DAY1,
                           {1: [(10, 0.9), (11, 0.5)], 2: [(11, 0.8), (12, 0.1)],
                            3: [(11, 0.7), (10, 0.6)]})
    second, _ = publish_day(engine, redis_client, model_version, DAY2, {1: [(12, 0.3)]})
    with engine.connect() as conn:
        served = conn.execute(sa.text(
            "SELECT item_id, users, mean_rank, logical_date FROM bi.item_exposure"
            " ORDER BY users DESC, item_id")).all()
        history = conn.execute(sa.text(
            "SELECT publish_id, item_id, users, mean_rank, is_serving"
            " FROM bi.item_exposure_history ORDER BY publish_id, item_id")).all()
        unnested = conn.execute(sa.text(
            "SELECT item_id, count(*), avg(rank) FROM bi.recommendations_history"
            " WHERE publish_id = :p GROUP BY item_id ORDER BY item_id"),
            {"p": first.publish_id}).all()
    assert [tuple(row) for row in served] == [(12, 1, 1.0, DAY2)]
    # Item 11: rank 2 for user 1, rank 1 for users 2 and 3; item 10: ranks 1 and 2.
    assert [tuple(row) for row in history] == [
        (first.publish_id, 10, 2, 1.5, False), (first.publish_id, 11, 3, 4 / 3, False),
        (first.publish_id, 12, 1, 2.0, False), (second.publish_id, 12, 1, 1.0, True)]
    assert [(item, users, float(rank)) for item, users, rank in unnested] == [
        (10, 2, 1.5), (11, 3, 4 / 3), (12, 1, 2.0)]


def item_exposure(engine) -> list[tuple[int, int, int, int]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT publish_id, item_id, users, rank_sum FROM batchscore.prediction_item_exposure"
            " ORDER BY publish_id, item_id")).all()]


def test_version_tables_are_left_alone_by_autovacuum(engine, redis_client, model_version
                                                   ) -> None:
    # Written once and ANALYZEd by the publisher: a vacuum PostgreSQL starts after the
    # load would hold the lock that attaching the table at the switch waits for.
    served, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    staged = stage_day(engine, redis_client, model_version, DAY2, {1: [(11, 0.5)]})
    with engine.connect() as conn:
        options = dict(conn.execute(sa.text(
            "SELECT c.relname, c.reloptions FROM pg_class c"
            " WHERE c.relnamespace = 'batchscore'::regnamespace"
            "  AND c.relname LIKE 'prediction_lists_p%' AND c.relkind = 'r'")).all())
    assert options == {
        f"prediction_lists_p{version.publish_id}": ["autovacuum_enabled=false"]
        for version in (served, staged)}


def test_readers_mid_switch_see_one_whole_version(engine, redis_client, model_version) -> None:
    publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)], 2: [(11, 0.5)]})
    with engine.connect() as reader:
        reader.execute(sa.text("BEGIN ISOLATION LEVEL REPEATABLE READ"))
        first = reader.execute(sa.text(
            "SELECT user_id, item_id FROM bi.recommendations ORDER BY user_id")).all()
        # A new version is switched in while the reader's snapshot is open.
        reader_sees_old = first == [(1, 10), (2, 11)]
        publish_day_in_thread(engine, redis_client, model_version)
        again = reader.execute(sa.text(
            "SELECT user_id, item_id FROM bi.recommendations ORDER BY user_id")).all()
        reader.execute(sa.text("COMMIT"))
    assert reader_sees_old and again == first
    assert [(row[0], row[2]) for row in served_rows(engine)] == [(1, 20), (2, 21)]


def publish_day_in_thread(engine, redis_client, model_version) -> None:
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            publish_day(engine, redis_client, model_version, DAY2,
                        {1: [(20, 0.5)], 2: [(21, 0.5)]})
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors


def test_no_published_version_is_a_clear_error(redis_client) -> None:
    with pytest.raises(NoPublishedVersionError, match="no recommendations are published"):
        RecommendationClient(redis_client, KEYS).get_recommendations(1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountedGets:
    """The GETs the Redis server has run, from its own command statistics."""

    def __init__(self, admin) -> None:
        self.admin = admin
        self.start = self.total()

    def total(self) -> int:
        return int(self.admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0))

    def since(self) -> int:
        """The GETs since the last call (or since this counter was made)."""
        now = self.total()
        done, self.start = now - self.start, now
        return done


def test_a_read_is_one_get_while_the_pointer_is_fresh(engine, redis_client, redis_admin,
                                                      model_version) -> None:
    first, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    clock = Clock()
    reader = RecommendationClient(redis_client, KEYS, pointer_ttl_seconds=1.0, clock=clock)
    gets = CountedGets(redis_admin)
    assert reader.get_recommendations(1).items[0].item_id == 10
    # the pointer, the version's meta and fallback list, the user's key
    assert gets.since() == 4
    for _ in range(3):
        assert reader.get_recommendations(1).items[0].item_id == 10
    assert gets.since() == 3
    # A user without predictions: the user's key, then the meta key again.
    assert reader.get_recommendations(99).source == "fallback"
    assert gets.since() == 2

    second, _ = publish_day(engine, redis_client, model_version, DAY2, {1: [(20, 0.5)]})
    gets.since()
    # Within the second: still the version it read before, whole (kept for rollback).
    recs = reader.get_recommendations(1)
    assert (recs.items[0].item_id, recs.run_id) == (10, first.run_id)
    assert gets.since() == 1
    clock.now += 1.0
    recs = reader.get_recommendations(1)
    assert (recs.items[0].item_id, recs.run_id) == (20, second.run_id)
    assert gets.since() == 4


def test_threads_sharing_a_read_client_each_read_their_own_users_through_cut_connections(
        engine, redis_client, redis_admin, model_version) -> None:
    """Each thread's GETs go on a connection of its own: eight threads reading through
    one client never get another's reply, and a connection the server closes is
    made again without a failed read."""
    import threading

    recs = {user: [(user * 10, 0.5), (user * 10 + 1, 0.25)] for user in range(1, 201)}
    publish_day(engine, redis_client, model_version, DAY1, recs)
    reader = RecommendationClient(redis_client, KEYS)
    halfway, problems, reads = threading.Barrier(9), [], []

    def read(seed: int) -> None:
        done = 0
        for turn in range(400):
            if turn == 200:
                halfway.wait(timeout=60)  # the server cuts every connection here
                halfway.wait(timeout=60)
            user = (seed * 31 + turn * 7) % 200 + 1
            try:
                got = [(item.item_id, item.score) for item in
                       reader.get_recommendations(user, k=2).items]
            except Exception as err:  # a failed read is a finding
                problems.append(f"user {user}: {type(err).__name__}: {err}")
                continue
            if got != recs[user]:
                problems.append(f"user {user}: read {got}")
            done += 1
        reads.append(done)

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    halfway.wait(timeout=60)
    cut = redis_admin.client_kill_filter(_type="normal", skipme=True)
    halfway.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=60)
    assert problems == [] and reads == [400] * 8
    assert cut >= 8  # each thread's own connection at least


def test_a_read_on_a_retired_version_is_done_again_on_the_served_one(
        engine, redis_client, model_version) -> None:
    from jobs.publish.redis import retire_version

    first, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    reader = RecommendationClient(redis_client, KEYS, pointer_ttl_seconds=3600, clock=Clock())
    assert reader.get_recommendations(1).items[0].item_id == 10
    second, _ = publish_day(engine, redis_client, model_version, DAY2, {1: [(20, 0.5)]})
    with publish_lock(engine, "test"):
        retire_version(redis_client, KEYS, first.publish_id)  # meta key first
    recs = reader.get_recommendations(1)
    assert (recs.source, recs.items[0].item_id, recs.run_id) == ("predictions", 20,
                                                                 second.run_id)


def test_a_retirement_half_done_is_never_read_as_a_fallback(engine, redis_client,
                                                           model_version) -> None:
    """The meta key goes first: a reader that finds it gone reads the served version
    instead of taking the missing user key for a user without predictions."""
    first, _ = publish_day(engine, redis_client, model_version, DAY1, {1: [(10, 0.5)]})
    reader = RecommendationClient(redis_client, KEYS, pointer_ttl_seconds=3600, clock=Clock())
    reader.get_recommendations(1)
    publish_day(engine, redis_client, model_version, DAY2, {1: [(20, 0.5)]})
    # As a retirement stopped after its first steps leaves it: meta key and a user key gone.
    redis_client.unlink(KEYS.meta_key(first.publish_id), KEYS.user_key(first.publish_id, 1))
    recs = reader.get_recommendations(1)
    assert (recs.source, recs.items[0].item_id) == ("predictions", 20)


def test_a_negative_pointer_ttl_is_refused(redis_client) -> None:
    with pytest.raises(ValueError, match="pointer_ttl_seconds must be 0 or more, got -1"):
        RecommendationClient(redis_client, KEYS, pointer_ttl_seconds=-1)
