"""The model lifecycle through the CLI: shadow, canary, rollback, and the promotion gates.

One world for the module, used in order: version 1 serves and is published
for the run date; version 2 (trained three days later) is tried as a shadow,
then as a canary, then rolled back; last, a model trained on shuffled
interactions is refused.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.client import RecommendationClient
from jobs.contracts.canary import in_canary
from jobs.contracts.redis import Keyspace
from tests.e2e.conftest import cli_world

KEYS = Keyspace()  # the default prefix's keys

pytestmark = pytest.mark.spark

FIRST_AS_OF, RUN_DATE = "2026-11-17", "2026-11-20"
K = 10
FRACTION = 0.3


@pytest.fixture(scope="module")
def world(spark, settings, endpoints):
    with cli_world(settings, endpoints) as (engine, client):
        assert main(["data", "generate", "--users", "600", "--items", "200", "--days", "30",
                     "--seed", "11", "--end-date", RUN_DATE]) == 0
        assert main(["train", "--as-of", FIRST_AS_OF]) == 0
        assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K)]) == 0
        assert main(["train", "--as-of", RUN_DATE]) == 0
        yield engine, client


def model_statuses(engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT version, status FROM bi.model_versions")).all())


def served_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT user_id, rank, item_id, score, run_id, model_version, logical_date"
            " FROM bi.recommendations ORDER BY user_id, rank"))]


def redis_state(client) -> dict[bytes, bytes]:
    """Every key of the served version and the pointer, with their values."""
    pointer = client.get(KEYS.pointer_key())
    keys = sorted(client.scan_iter(match=KEYS.version_pattern(int(pointer))))
    return {KEYS.pointer_key(): pointer, **{key: client.get(key) for key in keys}}


def test_version_two_passes_its_gates_against_the_serving_model(world, capsys) -> None:
    engine, _ = world
    assert model_statuses(engine) == {1: "serving", 2: "candidate"}
    assert main(["models", "show", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    gates = shown["gates"]
    assert gates["passed"] and gates["serving_version"] == 1
    assert [c["name"] for c in gates["checks"]] == [
        "beats_popularity", "keeps_up_with_serving", "overlap_at_k", "rank_correlation",
        "score_shift"]
    for model in ("model", "popularity", "serving"):
        assert set(shown["metrics"][model]) >= {"precision_at_k", "recall_at_k", "ndcg_at_k",
                                                "map_at_k", "catalog_coverage",
                                                "ips_recall_at_k", "ips_ndcg_at_k", "novelty"}
        assert 0.0 <= shown["metrics"][model]["ips_ndcg_at_k"] <= 1.0
    assert shown["metrics"]["serving"]["version"] == 1
    kinds = {artifact["kind"]: artifact for artifact in shown["artifacts"]}
    assert set(kinds) == {"spark_als_model", "mleap_bundle", "training_set"}
    assert kinds["mleap_bundle"]["uri"].endswith(".zip")
    assert all(len(artifact["sha256"]) == 64 for artifact in kinds.values())
    fairness = shown["reports"]["fairness"]
    assert [row["segment"].split()[0] for row in fairness["quality"]["activity"]] == [
        "low", "medium", "high"]
    assert [row["band"] for row in fairness["exposure"]] == ["head", "torso", "tail"]
    assert [h["status"] for h in shown["status_history"]] == ["candidate"]


def test_a_shadow_run_stores_predictions_and_changes_nothing_served(world, capsys) -> None:
    engine, client = world
    rows_before, redis_before = served_rows(engine), redis_state(client)
    assert main(["nightly", "--run-date", RUN_DATE, "--shadow", "1"]) == 1
    assert "model version 1 already serves" in capsys.readouterr().err

    assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K), "--shadow", "2"]) == 0

    out = capsys.readouterr().out
    assert "stored beside the served one, not served" in out
    assert served_rows(engine) == rows_before
    assert redis_state(client) == redis_before
    with engine.connect() as conn:
        shadow = conn.execute(sa.text(
            "SELECT publish_id, model_version, users, is_serving FROM bi.prediction_versions"
            " WHERE status = 'shadow'")).one()
        history_rows = conn.execute(sa.text(
            "SELECT count(*) FROM bi.recommendations_history WHERE publish_id = :id"),
            {"id": shadow.publish_id}).scalar()
        stats = conn.execute(sa.text(
            "SELECT stats FROM bi.runs WHERE stats -> 'shadow' IS NOT NULL")).scalar_one()
    assert shadow.model_version == 2 and not shadow.is_serving
    assert history_rows == shadow.users * K
    assert not list(client.scan_iter(match=KEYS.version_pattern(shadow.publish_id)))
    differential = stats["shadow"]["differential"]
    assert stats["shadow"]["compared_with"] == int(redis_before[KEYS.pointer_key()])
    assert 0 <= differential["overlap_at_k"] <= 1 and differential["users"] > 0
    assert model_statuses(engine)[2] == "shadow"


def canary_assignment(engine) -> tuple[int, dict[int, int]]:
    with engine.connect() as conn:
        publish_id = conn.execute(sa.text(
            "SELECT publish_id FROM bi.prediction_versions WHERE is_serving")).scalar_one()
        versions = dict(conn.execute(sa.text(
            "SELECT DISTINCT user_id, model_version FROM bi.recommendations")).all())
    return publish_id, versions


def test_a_canary_serves_a_stable_fraction_in_both_stores(world) -> None:
    engine, client = world
    assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K), "--canary", "2",
                 "--canary-fraction", str(FRACTION)]) == 0
    publish_id, versions = canary_assignment(engine)
    users = np.array(sorted(versions))
    expected = dict(zip(users.tolist(), np.where(in_canary(users, FRACTION), 2, 1).tolist(),
                        strict=True))
    assert versions == expected
    share = sum(1 for v in versions.values() if v == 2) / len(versions)
    assert share == pytest.approx(FRACTION, abs=0.06)  # 600 users: three standard deviations
    with engine.connect() as conn:
        recorded = dict(conn.execute(sa.text(
            "SELECT user_id, model_version FROM bi.canary_users WHERE publish_id = :id"),
            {"id": publish_id}).all())
        canary = conn.execute(sa.text(
            "SELECT canary_model_version, canary_fraction FROM bi.prediction_versions"
            " WHERE publish_id = :id"), {"id": publish_id}).one()
        by_user: dict[int, list[int]] = defaultdict(list)
        for user, item in conn.execute(sa.text(
                "SELECT user_id, item_id FROM bi.recommendations ORDER BY user_id, rank")):
            by_user[user].append(item)
    assert recorded == {user: 2 for user, v in expected.items() if v == 2}
    assert tuple(canary) == (2, FRACTION)
    reader = RecommendationClient(client, KEYS)
    for user in users[:60].tolist():
        recs = reader.get_recommendations(user, k=K)
        assert recs.model_version == expected[user]
        assert [item.item_id for item in recs.items] == by_user[user]
    assert model_statuses(engine)[2] == "canary"

    # The same users again on the next run.
    assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K), "--canary", "2",
                 "--canary-fraction", str(FRACTION)]) == 0
    assert canary_assignment(engine)[1] == versions


def last_switch(engine) -> tuple:
    with engine.connect() as conn:
        return tuple(conn.execute(sa.text(
            "SELECT publish_id, previous_publish_id, action FROM bi.serving_history"
            " ORDER BY switched_at DESC LIMIT 1")).one())


def test_rollback_steps_back_through_the_canary_runs(world, capsys) -> None:
    engine, client = world
    second_canary, first_canary, _ = last_switch(engine)
    # Back to the first canary run: it used model 2 too, so model 2 stays a canary.
    assert main(["rollback", "--reason", "second canary run looks off"]) == 0
    assert last_switch(engine) == (first_canary, second_canary, "rollback")
    assert int(client.get(KEYS.pointer_key())) == first_canary
    assert model_statuses(engine) == {1: "serving", 2: "canary"}
    capsys.readouterr()

    # Back to the version before any canary: model 2 is rolled back.
    _, before_canary, _ = next(row for row in history(engine) if row[0] == first_canary)
    assert main(["rollback", "--reason", "canary hurts watch time"]) == 0
    assert "model version 2 marked rolled back" in capsys.readouterr().out
    assert last_switch(engine) == (before_canary, first_canary, "rollback")
    assert int(client.get(KEYS.pointer_key())) == before_canary
    with engine.connect() as conn:
        models = conn.execute(sa.text(
            "SELECT DISTINCT model_version FROM bi.recommendations")).scalars().all()
    assert models == [1]
    assert RecommendationClient(client, KEYS).get_recommendations(1).model_version == 1
    assert model_statuses(engine) == {1: "serving", 2: "rolled_back"}
    assert main(["models", "promote", "2"]) == 1
    assert "was rolled back" in capsys.readouterr().err


def history(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text(
            "SELECT publish_id, previous_publish_id, action FROM bi.serving_history"
            " ORDER BY switched_at"))]


def test_a_model_trained_on_shuffled_interactions_is_refused(world, capsys) -> None:
    engine, _ = world
    with engine.begin() as conn:  # same users, items and counts; the pairs are random
        conn.execute(sa.text(
            "WITH shuffled AS (SELECT event_id, row_number() OVER (ORDER BY md5(event_id::text))"
            "  AS n FROM batchscore.interactions),"
            " items AS (SELECT item_id, row_number() OVER (ORDER BY event_id) AS n"
            "  FROM batchscore.interactions)"
            " UPDATE batchscore.interactions i SET item_id = items.item_id"
            " FROM shuffled JOIN items USING (n) WHERE i.event_id = shuffled.event_id"))
    assert main(["train", "--as-of", RUN_DATE]) == 0
    capsys.readouterr()
    assert main(["models", "show", "3", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    failed = {c["name"] for c in shown["gates"]["checks"] if not c["passed"]}
    assert shown["status"] == "rejected"
    assert "beats_popularity" in failed  # promotion refuses it
    assert "overlap_at_k" in failed  # the differential test flags it
    assert shown["gates"]["differential"]["overlap_at_k"] < 0.5
    assert main(["models", "promote", "3"]) == 1
    assert "beats_popularity failed" in capsys.readouterr().err
