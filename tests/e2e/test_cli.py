"""Every command of the CLI, run at least once on embedded servers of its own, and the
quick start in this process on a fresh home (through Airflow on a fresh home it runs in
tests/e2e/test_secrets.py, with passwords that need URL encoding).

The last test checks that each command the parser knows was run here, so a new command
without a test fails."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from jobs.cli import build_parser, main
from jobs.platform.services.ports import free_port

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "mleap-fixtures"
BIN = Path(sys.executable).parent
STARTUP_SECONDS = 240
RAN: set[tuple[str, ...]] = set()


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                  ) -> set[tuple[str, ...]]:
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, (*path, name))
    return found or {path}


def command_of(argv: list[str]) -> tuple[str, ...]:
    leaves = leaf_commands(build_parser())
    for length in range(len(argv), 0, -1):
        if tuple(argv[:length]) in leaves:
            return tuple(argv[:length])
    raise AssertionError(f"{argv} names no command")


STDERR: list[str] = [""]


def run(capsys, *argv: str, code: int = 0) -> str:
    """Run one command as a person would; what it printed (its stderr in STDERR[0])."""
    capsys.readouterr()
    returned = main(list(argv))
    captured = capsys.readouterr()
    assert returned == code, captured
    RAN.add(command_of(list(argv)))
    STDERR[0] = captured.err
    return captured.out


def fresh_home() -> Path:
    """A new folder for BATCHSCORE_HOME. Not under pytest's temporary folder, which each
    pytest session run as root makes private again, cutting the embedded PostgreSQL (run as
    its own user) off from its data."""
    return Path(tempfile.mkdtemp(prefix="batchscore-cli-home-"))


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A fresh BATCHSCORE_HOME: its own embedded servers, nothing in them yet."""
    home = fresh_home()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("BATCHSCORE_HOME", str(home))
    monkeypatch.delenv("BATCHSCORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("BATCHSCORE_REDIS_URL", raising=False)
    yield home
    main(["services", "stop"])
    monkeypatch.undo()
    shutil.rmtree(home, ignore_errors=True)


def test_the_quick_start_without_airflow_on_a_fresh_home(home, capsys) -> None:
    out = run(capsys, "quickstart", "--without-airflow")
    assert "1/3 generating a sample data set: 3000 users x 800 items over 60 days" in out
    assert "2/3 training a model (Spark ALS)" in out
    assert "3/3 nightly run for " in out
    assert "served:    version 1 for " in out
    assert "recs " in out and "bi.recommendations" in out
    again = run(capsys, "quickstart")  # through Airflow, but everything is there already
    assert "1/3 interactions already loaded: reusing them" in again
    assert "2/3 model version 1 already serving: reusing it" in again
    assert "already published (version 1): reusing it" in again


def test_reading_commands_show_what_was_published(home, capsys) -> None:
    status = json.loads(run(capsys, "status", "--json"))
    assert status["postgres_served"]["publish_id"] == 1
    assert status["redis_served"]["publish_id"] == 1 and status["stores_disagree"] is None
    assert "served:    version 1" in run(capsys, "status")
    runs = json.loads(run(capsys, "runs", "list", "--json"))
    assert [run_["status"] for run_ in runs] == ["succeeded"]
    assert runs[0]["run_id"] in run(capsys, "runs", "list", "--limit", "5")
    # The nightly wrote its report and recorded where; `report` writes it again.
    report = home / "reports" / f"{runs[0]['run_id']}.html"
    assert runs[0]["stats"]["report"] == str(report) and report.exists()
    assert run(capsys, "report") == f"{report}\n"
    assert run(capsys, "report", runs[0]["run_id"]) == f"{report}\n"
    assert "<svg" in report.read_text() and (home / "reports" / "index.html").exists()
    opened = home / "opened.txt"
    with pytest.MonkeyPatch.context() as patch:  # the browser webbrowser runs: one that notes
        patch.setenv("BROWSER", f"sh -c 'echo \"$0\" > {opened}' %s")
        assert run(capsys, "report", "--open") == f"{report}\n"
    assert opened.read_text() == f"{report.as_uri()}\n"
    assert run(capsys, "report", "nightly-nope", code=1) == ""
    assert "there is no run 'nightly-nope'" in STDERR[0]
    # The nightly's monitor step stored its metrics; a first night of the sample
    # crosses no level.
    shown = json.loads(run(capsys, "runs", "show", runs[0]["run_id"], "--json"))
    assert shown["run"]["status"] == "succeeded"
    assert (shown["crossings"], shown["retrain"]) == ([], False)
    metrics = {(m["metric"], m["segment"]): m["value"] for m in shown["metrics"]}
    assert metrics[("predictions.users", "")] == 3000
    assert 0 <= metrics[("input.item_popularity_psi", "vs_training")] < 0.1
    assert "predictions.exposure_gini" in run(capsys, "runs", "show", runs[0]["run_id"])
    versions = json.loads(run(capsys, "versions", "list", "--json"))
    assert [(v["publish_id"], v["status"], v["is_serving"]) for v in versions] == [
        (1, "published", True)]
    assert "<- served" in run(capsys, "versions", "list")
    models = json.loads(run(capsys, "models", "list", "--json"))
    assert [(m["version"], m["status"]) for m in models] == [(1, "serving")]
    assert run(capsys, "models", "list").startswith("v1    serving")
    shown = json.loads(run(capsys, "models", "show", "1", "--json"))
    assert shown["status_history"][0]["status"] == "serving"
    assert "status history:" in run(capsys, "models", "show", "1")
    recs = json.loads(run(capsys, "recs", "1", "-k", "3", "--json"))
    assert len(recs["items"]) == 3 and recs["model_version"] == 1
    assert "user 1: " in run(capsys, "recs", "1")
    assert "prediction contract passed for the served version" in run(
        capsys, "validate", "--predictions")
    assert "prediction contract passed for version 1" in run(
        capsys, "validate", "--predictions", "1")
    assert "input contract passed for " in run(capsys, "validate", "--input")
    assert run(capsys, "rejects", "list") == "no quarantined rows\n"
    assert json.loads(run(capsys, "rejects", "list", "--json")) == []
    assert run(capsys, "reconcile") == "both stores agree on version 1; nothing to do\n"
    assert json.loads(run(capsys, "reconcile", "--json"))["changed"] is False


def test_servers_database_and_data_commands(home, capsys, tmp_path) -> None:
    assert run(capsys, "services", "start").startswith("postgres: postgresql://")
    assert run(capsys, "db", "url").startswith("postgresql://")
    assert run(capsys, "redis", "url", "--role", "writer").startswith(
        "redis://batchscore_writer:")
    assert run(capsys, "redis", "url", "--role", "reader").startswith(
        "redis://batchscore_reader:")
    assert run(capsys, "db", "upgrade") == "applied 0 migration(s)\n"
    run_date = date.fromisoformat(
        json.loads(run(capsys, "status", "--json"))["postgres_served"]["logical_date"])
    day = tmp_path / "day.csv"
    day.write_text(f"user_id,item_id,rating,timestamp\n1,2,1.0,{run_date}T10:00:00Z\n"
                   f"3,4,2.0,{run_date}T11:00:00Z\n")
    loaded, written = run(capsys, "data", "load", str(day), "--format", "csv").splitlines()
    # Checked by the input contract, and recorded as a run of kind load.
    assert re.fullmatch(rf"loaded 2 interactions from {re.escape(str(day))} "
                        r"\(run load-\d{4}-\d\d-\d\d-[0-9a-f]{8}\)", loaded), loaded
    # The day it changed is written to the interaction history Spark reads.
    folder = rf"{re.escape(str(home))}/history/[0-9a-f-]{{36}}"
    assert re.fullmatch(rf"interaction history at {folder}: 1 day\(s\) written, 0 removed",
                        written), written
    # Every item of the sample data and of the generated set below: the nightly run later
    # in this module checks its events against this catalogue.
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"{item},Item {item}\n"
                                                 for item in range(1, 801)))
    assert run(capsys, "data", "load-items", str(items)) == (
        f"loaded 800 items from {items}: 800 new, 0 updated\n")
    users = tmp_path / "users.csv"
    users.write_text('user_id,attributes\n1,"{""plan"": ""free""}"\n')
    assert run(capsys, "data", "load-users", str(users), "--replace") == (
        f"loaded 1 users from {users}: 1 new, 0 updated; batchscore.users replaced\n")
    assert run(capsys, "data", "generate", "--users", "40", "--items", "30", "--days", "2",
               "--end-date", run_date.isoformat(), "--seed", "3").startswith("loaded ")
    error = run(capsys, "data", "generate", "--users", "0", "--items", "30", "--days", "2",
                code=1)
    assert error == "" and "error: " in STDERR[0]  # one line on stderr, nothing loaded


def test_train_promote_nightly_and_roll_back(home, capsys) -> None:
    run_date = json.loads(run(capsys, "status", "--json"))["postgres_served"]["logical_date"]
    trained = run(capsys, "train", "--as-of", run_date, "--max-iter", "3")
    assert trained.startswith("model version 2 (")
    promoted = run(capsys, "models", "promote", "2", "--force", "--reason", "the CLI test")
    assert promoted == "model version 2 now serving; the next nightly run uses it\n"
    published = run(capsys, "nightly", "--run-date", run_date, "--k", "10")
    assert f"published version 2 for {run_date} (model 2)" in published
    assert f"  report: {home / 'reports'}/nightly-{run_date}-" in published
    rolled = run(capsys, "rollback", "--reason", "the CLI test rolls back")
    assert rolled.startswith("rolled back version 2; version 1 (model 1) is served again")
    assert json.loads(run(capsys, "status", "--json"))["postgres_served"]["publish_id"] == 1


def test_bundle_score_and_the_benchmark(home, capsys) -> None:
    scored = json.loads(run(capsys, "bundle", "score", str(FIXTURES / "airbnb.model.lr.zip"),
                            "--frame", str(FIXTURES / "frame.airbnb.json")))
    assert "price_prediction" in [field["name"] for field in scored["schema"]["fields"]]
    from jobs.bench.servers import PEER_TOOLS

    missing = [tool for tool in PEER_TOOLS if shutil.which(tool) is None]
    assert not missing, (f"the benchmark's peers {missing} are not on PATH: apt-get install "
                         "redis-tools postgresql-client (.ci/run does)")
    # In a process of its own: the benchmark stops the Spark session it used, which in
    # this process would be the one the other tests share.
    bench = subprocess.run([str(BIN / "batchscore"), "bench", "--size", "small"],
                           capture_output=True, text=True, timeout=600, check=False)
    assert bench.returncode == 0, bench.stderr[-3000:]
    assert "redis load vs redis-cli --pipe" in bench.stdout
    assert "reading a nightly's interactions vs CSV export and parse" in bench.stdout
    RAN.add(("bench",))  # only a run that did the work counts


def test_the_benchmark_names_a_missing_peer_at_once(home, tmp_path) -> None:
    from jobs.bench.servers import PEER_TOOLS

    bench = subprocess.run([str(BIN / "batchscore"), "bench", "--size", "small"],
                           capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "PATH": str(tmp_path)})
    assert bench.returncode == 1
    assert f"`{PEER_TOOLS[0]}` is not on PATH" in bench.stderr


def test_airflow_nightly_and_airflow_start(home, capsys) -> None:
    run_date = json.loads(run(capsys, "status", "--json"))["postgres_served"]["logical_date"]
    out = run(capsys, "airflow", "nightly", "--run-date", run_date)
    assert f"(Airflow): published version 3 for {run_date}" in out
    port = free_port()
    server = subprocess.Popen([str(BIN / "batchscore"), "airflow", "start", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not answers(port):
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "airflow start did not answer in time"
            time.sleep(2)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    RAN.add(("airflow", "start"))


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_services_stop_stops_both_servers(home, capsys) -> None:
    assert run(capsys, "services", "stop") == "postgres: stopped\nredis: stopped\n"


def test_every_command_was_run() -> None:
    assert leaf_commands(build_parser()) - RAN == set()
