"""The nightly publishing to a Redis Cluster, and a product service reading through it.

A fresh home whose Redis is the test session's three-master cluster
(``BATCHSCORE_REDIS_URL=redis+cluster://...``; PostgreSQL stays the embedded
one): the quick start trains and publishes, a second night publishes again, and
``recs``, ``status``, ``rollback`` and ``reconcile`` work on the cluster as on one
server. What a product service reads through the cluster is what PostgreSQL
serves, for every user.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.client import RecommendationClient
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.names import Names
from jobs.platform.services.redis_cluster import LocalRedisCluster
from tests.conftest import healthy_cluster
from tests.e2e.test_cli import fresh_home


def run(capsys, *argv: str) -> str:
    capsys.readouterr()
    returned = main(list(argv))
    captured = capsys.readouterr()
    assert returned == 0, captured
    return captured.out


@pytest.fixture
def cluster_home(redis_cluster: LocalRedisCluster) -> Iterator[tuple[Path, LocalRedisCluster]]:
    cluster = healthy_cluster(redis_cluster)
    home = fresh_home()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("BATCHSCORE_HOME", str(home))
    monkeypatch.delenv("BATCHSCORE_DATABASE_URL", raising=False)
    monkeypatch.setenv("BATCHSCORE_REDIS_URL", cluster.url(Names(), "writer"))
    monkeypatch.setenv("BATCHSCORE_REDIS_READER_URL", cluster.url(Names(), "reader"))
    try:
        yield home, cluster
    finally:
        services.stop_embedded(Settings.from_env())
        monkeypatch.undo()
        shutil.rmtree(home, ignore_errors=True)


def served_lists(home: Path) -> dict[int, list[int]]:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(home)})
    engine = services.database(settings, services.BI)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT user_id, item_id FROM bi.recommendations ORDER BY user_id, rank"))
            lists: dict[int, list[int]] = {}
            for user_id, item_id in rows:
                lists.setdefault(user_id, []).append(item_id)
            return lists
    finally:
        engine.dispose()


def test_a_nightly_publishes_to_a_cluster_and_products_read_through_it(cluster_home,
                                                                       capsys) -> None:
    home, cluster = cluster_home
    run(capsys, "quickstart", "--without-airflow")
    first = json.loads(run(capsys, "status", "--json"))
    assert first["redis_served"]["publish_id"] == first["postgres_served"]["publish_id"]
    assert first["stores_disagree"] is None
    # Every user PostgreSQL serves reads the same list through the cluster, and the
    # version's keys are on every master.
    reader = RecommendationClient.from_url(cluster.url(Names(), "reader"))
    served = served_lists(home)
    assert len(served) > 100
    for user, items in served.items():
        recs = reader.get_recommendations(user, k=len(items))
        assert (recs.source, [item.item_id for item in recs.items]) == ("predictions", items)
    for node in cluster.masters_now():
        admin = cluster.node_admin(node)
        try:
            assert admin.dbsize() > len(served) // 5
        finally:
            admin.close()
    shown = json.loads(run(capsys, "recs", str(min(served)), "-k", "3", "--json"))
    assert [item["item_id"] for item in shown["items"]] == served[min(served)][:3]

    # The night again (a rerun), then a rollback to the first: a pointer flip.
    run(capsys, "nightly", "--run-date", first["postgres_served"]["logical_date"], "--k", "5")
    second = json.loads(run(capsys, "status", "--json"))
    assert second["redis_served"]["publish_id"] == second["postgres_served"]["publish_id"]
    assert second["redis_served"]["publish_id"] != first["redis_served"]["publish_id"]
    assert "rolled back" in run(capsys, "rollback", "--reason", "the cluster test rolls back")
    after = json.loads(run(capsys, "status", "--json"))
    assert after["redis_served"]["publish_id"] == first["redis_served"]["publish_id"] == (
        after["postgres_served"]["publish_id"])
    assert json.loads(run(capsys, "reconcile", "--json"))["changed"] is False
    reader = RecommendationClient.from_url(cluster.url(Names(), "reader"), pointer_ttl_seconds=0)
    user = min(served)
    assert [item.item_id for item in reader.get_recommendations(user, k=3).items] == (
        served[user][:3])
