"""`batchscore train --reproduce V`: a version trained again on the events it saw.

One world for the module, used in order: version 1 is trained on generated
events and a day loaded from a file; then that day is reloaded with another
file, a nightly's input contract quarantines rows of another day, and
`data load --replace` swaps the whole table. Version 1 is still reproduced
on its kept training set; last, a missing or tampered set is refused.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from jobs.cli import main
from jobs.contracts.engine import Validator
from jobs.contracts.inputs import check_input, quarantine_and_load, read_input_file, table_batch
from jobs.lifecycle import registry
from jobs.platform import runs
from jobs.platform.artifacts import artifact_path, sha256_of
from jobs.training.train import TRAINING_SET, TRAINING_SET_FILE
from tests.e2e.conftest import cli_world

pytestmark = pytest.mark.spark

AS_OF = date(2026, 11, 20)
QUARANTINED_DAY = date(2026, 11, 18)
# ALS with the same seed on the same rows in local[1] came out identical to the last
# digit in every run measured; the tolerance only allows for a different BLAS.
TOLERANCE = 1e-9
METRICS = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "catalog_coverage")


def day_file(path, users: range, items: tuple[int, ...], hour: int) -> None:
    """A day's input file: every user of ``users`` meets every item of ``items``."""
    start = int(datetime(AS_OF.year, AS_OF.month, AS_OF.day, hour, tzinfo=UTC).timestamp())
    lines = [f"{user},{item},2,{start + user}" for user in users for item in items]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(lines) + "\n")


def load_day(engine, home, path) -> dict[str, int]:
    """Load a day's file as the nightly does: a reload replaces the date's earlier load."""
    batch = read_input_file(path)
    outcome = check_input(Validator(home), engine, AS_OF, batch)
    return quarantine_and_load(engine, runs.start(engine, "nightly", AS_OF, None), AS_OF,
                               batch, outcome)


def count_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM batchscore.interactions")).scalar()


@pytest.fixture(scope="module")
def world(spark, settings, endpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reproduce")
    with cli_world(settings, endpoints) as (engine, _):
        assert main(["data", "generate", "--users", "300", "--items", "120", "--days", "20",
                     "--seed", "5", "--end-date", "2026-11-19"]) == 0
        day_file(folder / "first.csv", range(1, 41), (3, 5, 8), 9)
        assert load_day(engine, settings.home, folder / "first.csv") == {"loaded": 120,
                                                                          "rejected": 0}
        assert main(["train", "--as-of", AS_OF.isoformat()]) == 0
        yield engine, settings.home, folder


@pytest.fixture(scope="module")
def changed(world):
    """Version 1's events changed every way the table's can: reload, quarantine, replace."""
    engine, home, folder = world
    before = count_rows(engine)
    # The day reloaded with another file: the first file's 120 rows are deleted. (The
    # new file has a day's volume: 60 users, 120 rows, against a median training day of
    # 128 users and 175 rows.)
    day_file(folder / "second.csv", range(50, 110), (4, 9), 15)
    assert load_day(engine, home, folder / "second.csv") == {"loaded": 120, "rejected": 0}
    assert count_rows(engine) == before
    # A nightly's input contract moves a row out of the table into the rejects (one in
    # 175 is under the 1% it may quarantine).
    with engine.begin() as conn:
        bad = set(conn.execute(sa.text(
            "UPDATE batchscore.interactions SET rating = 50 WHERE event_id IN (SELECT event_id"
            " FROM batchscore.interactions WHERE event_at >= :d AND event_at < :d + 1"
            " ORDER BY event_id LIMIT 1) RETURNING event_id"), {"d": QUARANTINED_DAY}).scalars())
    batch = table_batch(engine, QUARANTINED_DAY)
    outcome = check_input(Validator(home), engine, QUARANTINED_DAY, batch)
    assert set(outcome.rejected) == bad
    quarantine_and_load(engine, runs.start(engine, "nightly", QUARANTINED_DAY, None),
                        QUARANTINED_DAY, batch, outcome)
    assert count_rows(engine) == before - 1
    # And the whole table replaced by a file with a tenth of the events.
    with engine.connect() as conn:
        kept = conn.execute(sa.text(
            "SELECT user_id, item_id, rating, extract(epoch FROM event_at)::bigint"
            " FROM batchscore.interactions WHERE event_id % 10 = 0")).all()
    replacement = folder / "replacement.csv"
    replacement.write_text("user_id,item_id,rating,timestamp\n"
                           + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in kept))
    assert main(["data", "load", str(replacement), "--format", "csv", "--replace"]) == 0
    assert count_rows(engine) == len(kept)
    return engine


def test_a_version_keeps_its_training_set_in_its_model_folder(world, capsys) -> None:
    engine, _, _ = world
    version = registry.get(engine, 1)
    record = version.artifact(TRAINING_SET)
    path = artifact_path(record["uri"])
    assert path == artifact_path(version.artifact_uri) / TRAINING_SET_FILE
    assert record["sha256"] == sha256_of(path) and record["bytes"] == path.stat().st_size
    table = pq.read_table(path)
    assert table.schema.names == ["user_id", "item_id", "rating", "event_at"]
    assert record["rows"] == table.num_rows == version.data_snapshot["rows"] == count_rows(engine)
    assert main(["models", "show", "1"]) == 0
    assert f"artifact training_set: {record['uri']} sha256 {record['sha256']}" in (
        capsys.readouterr().out)


def test_reproduce_trains_again_on_the_events_the_version_saw(changed, capsys) -> None:
    engine = changed
    original = registry.get(engine, 1)
    assert count_rows(engine) != original.data_snapshot["rows"]
    capsys.readouterr()
    assert main(["train", "--reproduce", "1"]) == 0
    out = capsys.readouterr().out
    reproduced = registry.get(engine, 2)
    assert reproduced.status == "candidate"
    assert reproduced.trained_as_of == original.trained_as_of == AS_OF
    assert reproduced.params == original.params
    assert reproduced.data_snapshot == original.data_snapshot
    for model in ("model", "popularity"):
        for name in METRICS:
            assert reproduced.metrics[model][name] == pytest.approx(
                original.metrics[model][name], abs=TOLERANCE), (model, name)
    report = reproduced.reports["reproduction"]
    assert report["of_version"] == 1
    assert report["content_hash"] == report["original_content_hash"] == (
        original.data_snapshot["content_hash"])
    assert report["largest_metric_difference"] <= TOLERANCE
    # Its own copy of the set, byte for byte the same, goes with its own artifacts.
    kept = reproduced.artifact(TRAINING_SET)
    assert kept["sha256"] == original.artifact(TRAINING_SET)["sha256"]
    assert artifact_path(kept["uri"]).parent == artifact_path(reproduced.artifact_uri)
    assert (f"reproduces version 1: data hash {original.data_snapshot['content_hash']} "
            f"(v1: {original.data_snapshot['content_hash']})") in out
    ndcg = original.metrics["model"]["ndcg_at_k"]
    assert "v1 model" in out and "v2 model" in out and f"{ndcg:.4f}" in out


@pytest.fixture
def kept_set(changed):
    """Version 1's training set, put back as it was after the test changes it."""
    engine = changed
    version = registry.get(engine, 1)
    path = artifact_path(version.artifact(TRAINING_SET)["uri"])
    saved = path.with_name("saved.parquet")
    shutil.copyfile(path, saved)
    yield engine, version, path
    shutil.copyfile(saved, path)
    saved.unlink()
    set_artifacts(engine, 1, version.artifacts)


def set_artifacts(engine, version: int, artifacts: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(
            "UPDATE batchscore.model_versions SET artifacts = :a WHERE version = :v"),
            {"a": json.dumps(artifacts), "v": version})


def refusal(engine, capsys, *argv: str) -> str:
    """Run a reproduction that must be refused; its error, with nothing registered."""
    versions = len(registry.list_versions(engine))
    capsys.readouterr()
    assert main(["train", *argv]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert len(registry.list_versions(engine)) == versions
    return captured.err.strip().splitlines()[-1]


def tamper(path) -> None:
    """One rating changed, in a file that is still good Parquet."""
    table = pq.read_table(path)
    ratings = table.column("rating").to_pylist()
    ratings[0] += 1.0
    pq.write_table(table.set_column(2, "rating", pa.array(ratings, pa.float64())), path)


def test_a_missing_training_set_is_refused(kept_set, capsys) -> None:
    engine, _, path = kept_set
    path.unlink()
    assert refusal(engine, capsys, "--reproduce", "1") == (
        f"error: the training set of model version 1 is missing: {path} is gone (removed with "
        "the version's artifacts?), so it cannot be reproduced")


def test_a_tampered_training_set_is_refused_by_its_sha256(kept_set, capsys) -> None:
    engine, version, path = kept_set
    tamper(path)
    recorded = version.artifact(TRAINING_SET)["sha256"]
    assert refusal(engine, capsys, "--reproduce", "1") == (
        f"error: the training set of model version 1 was changed: {path} has SHA-256 "
        f"{sha256_of(path)}, the registry recorded {recorded}; not reproducing")


def test_a_training_set_with_other_rows_is_refused_by_its_content_hash(kept_set,
                                                                       capsys) -> None:
    engine, version, path = kept_set
    tamper(path)
    # Someone replaced the file and its recorded checksum: the rows still give them away.
    set_artifacts(engine, 1, [{**record, "sha256": sha256_of(path)}
                              if record["kind"] == TRAINING_SET else record
                              for record in version.artifacts])
    error = refusal(engine, capsys, "--reproduce", "1")
    assert error.startswith("error: the training set of model version 1 hashes to xxhash64-sum:")
    assert error.endswith(f"but the version was trained on "
                          f"{version.data_snapshot['content_hash']} "
                          f"({version.data_snapshot['rows']} rows); not reproducing")


def test_a_version_without_a_kept_training_set_is_refused(kept_set, capsys) -> None:
    engine, version, _ = kept_set
    set_artifacts(engine, 1, [record for record in version.artifacts
                              if record["kind"] != TRAINING_SET])
    assert refusal(engine, capsys, "--reproduce", "1") == (
        "error: model version 1 has no kept training set (it was trained before training "
        "sets were kept), so it cannot be reproduced")


def test_reproduce_refuses_options_it_would_ignore(kept_set, capsys) -> None:
    engine, _, _ = kept_set
    assert refusal(engine, capsys, "--reproduce", "1", "--rank", "8", "--as-of",
                   "2026-11-19") == (
        "error: --reproduce uses version 1's recorded as-of date and parameters; drop "
        "--as-of, --rank")
    assert refusal(engine, capsys, "--reproduce", "9") == "error: model version 9 does not exist"
