"""The whole flow through the CLI at small scale: generate, train, nightly, read.

Checks the published rows themselves, in both stores.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.contracts import redis as contract
from jobs.contracts.redis import Keyspace
from tests.conftest import write_lines
from tests.e2e.conftest import cli_world

KEYS = Keyspace()  # the default prefix's keys

pytestmark = pytest.mark.spark

RUN_DATE = "2026-11-20"
K = 10


@pytest.fixture(scope="module")
def pipeline(spark, settings, endpoints, tmp_path_factory):
    """Run the quick-start flow once for the module; yield (engine, redis client)."""
    with cli_world(settings, endpoints) as (engine, client):
        assert main(["data", "generate", "--users", "300", "--items", "120", "--days", "30",
                     "--seed", "5", "--end-date", RUN_DATE]) == 0
        assert main(["train", "--as-of", RUN_DATE]) == 0
        assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K)]) == 0
        yield engine, client


def served(engine) -> dict[int, list[tuple[int, float]]]:
    rows: dict[int, list[tuple[int, float]]] = defaultdict(list)
    with engine.connect() as conn:
        for user_id, item_id, score in conn.execute(sa.text(
            "SELECT user_id, item_id, score FROM bi.recommendations ORDER BY user_id, rank"
        )):
            rows[user_id].append((item_id, score))
    return dict(rows)


def seen_until_run_date(engine) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = defaultdict(set)
    with engine.connect() as conn:
        for user_id, item_id in conn.execute(sa.text(
            "SELECT user_id, item_id FROM batchscore.interactions"
            " WHERE event_at < CAST(:d AS date) + 1"), {"d": RUN_DATE}):
            seen[user_id].add(item_id)
    return seen


def test_every_active_user_gets_k_distinct_unseen_items_best_first(pipeline) -> None:
    engine, _ = pipeline
    recs = served(engine)
    seen = seen_until_run_date(engine)
    assert set(recs) == set(seen)  # the model was trained as of the run date: all are known
    for user_id, pairs in recs.items():
        items = [item for item, _ in pairs]
        scores = [score for _, score in pairs]
        assert len(items) == K
        assert len(set(items)) == K
        assert not set(items) & seen[user_id], f"user {user_id} got an item already seen"
        assert scores == sorted(scores, reverse=True)
        assert all(np.isfinite(scores))


def test_postgres_and_redis_agree(pipeline) -> None:
    engine, client = pipeline
    with engine.connect() as conn:
        publish_id, run_id, model_version = conn.execute(sa.text(
            "SELECT publish_id, run_id, model_version FROM bi.prediction_versions"
            " WHERE is_serving")).one()
    assert client.get(KEYS.pointer_key()) == str(publish_id).encode()
    meta = contract.decode_meta(client.get(KEYS.meta_key(publish_id)))
    assert (meta["run_id"], meta["model_version"], meta["k"]) == (run_id, model_version, K)
    recs = served(engine)
    for user_id, pairs in recs.items():
        stored = contract.decode_items(client.get(KEYS.user_key(publish_id, user_id)))
        assert [item for item, _ in stored] == [item for item, _ in pairs]
        # Postgres keeps float32 (real); Redis keeps the same float32.
        assert [np.float32(s) for _, s in stored] == [np.float32(s) for _, s in pairs]
    user_keys = list(client.scan_iter(match=KEYS.version_prefix(publish_id) + b"u:*"))
    assert len(user_keys) == len(recs)
    with engine.connect() as conn:
        popular = conn.execute(sa.text("SELECT item_id FROM bi.popular_items ORDER BY rank")
                               ).scalars().all()
    assert [item for item, _ in contract.decode_items(
        client.get(KEYS.popular_key(publish_id)))] == popular


def test_recs_command_reads_the_published_version(pipeline, capsys) -> None:
    engine, _ = pipeline
    user_id = min(served(engine))
    capsys.readouterr()
    assert main(["recs", str(user_id), "-k", "3", "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert set(output) == {"user_id", "items", "run_id", "model_version", "source"}
    assert output["source"] == "predictions"
    assert [entry["item_id"] for entry in output["items"]] == [
        item for item, _ in served(engine)[user_id][:3]]
    assert main(["recs", "999999", "--json"]) == 0
    fallback = json.loads(capsys.readouterr().out)
    assert fallback["source"] == "fallback" and len(fallback["items"]) == 10


def test_status_runs_and_models_report_what_was_done(pipeline, capsys) -> None:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["serving_model"] == 1
    assert status["postgres_served"]["publish_id"] == status["redis_served"]["publish_id"]
    assert status["migrations"]["pending"] == []
    assert main(["models", "list", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)
    assert [m["status"] for m in models] == ["serving"]
    snapshot = models[0]["data_snapshot"]
    assert snapshot["rows"] > 0 and snapshot["content_hash"].startswith("xxhash64-sum:")
    for name in ("model", "popularity"):
        assert set(models[0]["metrics"][name]) >= {"precision_at_k", "recall_at_k",
                                                   "ndcg_at_k", "catalog_coverage"}
    assert main(["runs", "list", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["status"]) for r in runs] == [("nightly", "succeeded")]
    assert runs[0]["stats"]["scored_users"] == len(served(pipeline[0]))


def test_rerunning_the_same_date_leaves_one_version(pipeline) -> None:
    engine, client = pipeline
    before = served(engine)
    assert main(["nightly", "--run-date", RUN_DATE, "--k", str(K)]) == 0
    with engine.connect() as conn:
        kept = conn.execute(sa.text(
            "SELECT publish_id FROM batchscore.prediction_versions"
            " WHERE logical_date = :d AND status = 'published'"), {"d": RUN_DATE}).scalars().all()
        history = dict(conn.execute(sa.text(
            "SELECT status, count(DISTINCT publish_id) FROM bi.recommendations_history"
            " WHERE logical_date = :d GROUP BY status"), {"d": RUN_DATE}).all())
    # One served version of the date; the replaced one is kept aside for a rollback.
    assert len(kept) == 1 and history == {"published": 1, "superseded": 1}
    assert served(engine) == before  # same model, same data: same predictions
    assert client.get(KEYS.pointer_key()) == str(kept[0]).encode()


def store_contents(engine, client) -> tuple:
    with engine.connect() as conn:
        versions = conn.execute(sa.text(
            "SELECT publish_id, status FROM batchscore.prediction_versions ORDER BY 1")).all()
    keys = {key: client.smembers(key) if key.endswith(b":versions") else client.get(key)
            for key in client.scan_iter(match=b"batchscore:*")}
    return served(engine), versions, keys


BAD_FILES = [
    ("movielens", ["1\t2\t3\t881250949", "1\tx\t3\t881250949"],
     "line 2: item id 'x' is not a whole number"),
    ("movielens", ["1\t2\t-3\t881250949"], "line 1: rating -3 is not positive"),
    ("movielens", ["1\t2\t\t881250949"], "line 1: rating is missing"),
    ("movielens", [], "no interactions found, nothing loaded"),
    ("csv", ["user,item,rating,timestamp", "1,2,3,4"],
     "header lacks column(s) ['user_id', 'item_id']"),
    ("csv", [], "the file is empty"),
]


@pytest.mark.parametrize(("file_format", "lines", "message"), BAD_FILES)
def test_bad_files_are_rejected_by_name(pipeline, tmp_path: Path, capsys, file_format: str,
                                        lines: list[str], message: str) -> None:
    engine, client = pipeline
    before = store_contents(engine, client)
    with engine.connect() as conn:
        rows_before = conn.execute(sa.text("SELECT count(*) FROM batchscore.interactions")
                                   ).scalar()
    capsys.readouterr()
    path = write_lines(tmp_path / "input", lines)
    assert main(["data", "load", "--format", file_format, str(path)]) == 1
    assert message in capsys.readouterr().err
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.interactions")
                            ).scalar() == rows_before
    assert store_contents(engine, client) == before


def test_bad_runs_publish_nothing(pipeline, tmp_path: Path, capsys) -> None:
    engine, client = pipeline
    before = store_contents(engine, client)
    capsys.readouterr()
    assert main(["data", "load", "--format", "movielens", str(tmp_path / "missing")]) == 1
    assert "file not found" in capsys.readouterr().err
    assert main(["nightly", "--run-date", RUN_DATE, "--k", "0"]) == 1
    assert "--k must be at least 1, got 0" in capsys.readouterr().err
    assert main(["nightly", "--run-date", "2020-01-01"]) == 1
    assert ("no model trained as of 2020-01-01 or earlier has served (the serving version 1 was"
            " trained as of 2026-11-20); pin one with --model-version") in capsys.readouterr().err
    # A date without events has nothing new to score: recorded as skipped, not a failure,
    # with an alert.
    assert main(["nightly", "--run-date", "2020-01-01", "--model-version", "1"]) == 0
    assert capsys.readouterr().out.strip() == (
        "nothing new to score for 2020-01-01: table holds no events; nothing was published, "
        "the served version stays\nan empty-day alert was raised; the run is recorded as "
        "skipped (BATCHSCORE_EMPTY_DAY=fail fails it instead)")
    bad = write_lines(tmp_path / "day.csv", ["user,item,rating,timestamp", "1,2,3.0,1577836800"])
    assert main(["nightly", "--run-date", "2020-01-01", "--model-version", "1",
                 "--input", str(bad)]) == 1
    error = capsys.readouterr().err
    assert "input contract failed for 2020-01-01 (file:day.csv)" in error
    assert "expect_table_columns_to_match_set: exactly the columns" in error
    assert store_contents(engine, client) == before
    with engine.connect() as conn:
        ended = conn.execute(sa.text(
            "SELECT status, error, stats FROM batchscore.runs WHERE logical_date = '2020-01-01'"
            " ORDER BY started_at")).all()
    assert [run.status for run in ended] == ["skipped", "failed"]
    failed = ended[1]
    assert failed.error.startswith("ContractError: input contract failed for 2020-01-01")
    docs = Path(failed.stats["data_docs"]["interactions"].removeprefix("file://"))
    page = " ".join(re.sub(r"<[^>]+>", " ", docs.read_text()).split())
    assert "nightly-2020-01-01" in page and "Must have exactly these columns" in page


def test_quickstart_reuses_what_is_there(pipeline, capsys) -> None:
    engine, _ = pipeline
    with engine.connect() as conn:
        runs_before = conn.execute(sa.text("SELECT count(*) FROM batchscore.runs")).scalar()
    capsys.readouterr()
    assert main(["quickstart"]) == 0
    out = capsys.readouterr().out
    assert "1/3 interactions already loaded: reusing them" in out
    assert "2/3 model version 1 already serving: reusing it" in out
    assert f"3/3 {RUN_DATE} already published" in out
    first_user = min(served(engine))
    assert f"recs {first_user}" in out
    assert "SELECT * FROM bi.recommendations WHERE user_id" in out
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.runs")).scalar() == runs_before
