"""Each run's metrics for Prometheus: the node exporter textfile, parsed back with
prometheus_client's own parser, and a push to a real Pushgateway (Debian's
prometheus-pushgateway, started on loopback)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from jobs.monitoring.prometheus import export, gauge_name
from jobs.platform import runs
from jobs.platform.config import PrometheusSettings, Settings
from jobs.platform.services.ports import free_port

COMPUTED_AT = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)
METRICS = [("input.rows", "", 4120.0),
           ("input.item_popularity_psi", "vs_training", 0.31),
           ("input.item_popularity_psi", "vs_previous_day", 0.02),
           ("realized.ndcg", "model:1/publish:3", 0.118)]


def record_run(engine, model_version: int, day: date, metrics) -> str:
    run_id = runs.start(engine, "nightly", day, model_version)
    with engine.begin() as conn:
        for metric, segment, value in metrics:
            conn.execute(sa.text(
                "INSERT INTO batchscore.run_metrics (run_id, metric, segment, value, computed_at)"
                " VALUES (:r, :m, :s, :v, :t)"),
                {"r": run_id, "m": metric, "s": segment, "v": value, "t": COMPUTED_AT})
    return run_id


def samples(text: str, job: str | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition text: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "instance"}
            if job is not None and labels.pop("job", None) != job:
                continue
            found[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return found


def expected(run_id: str, model_version: int) -> dict[tuple[str, tuple], float]:
    return {
        ("batchscore_input_rows", (("segment", ""),)): 4120.0,
        ("batchscore_input_item_popularity_psi", (("segment", "vs_training"),)): 0.31,
        ("batchscore_input_item_popularity_psi", (("segment", "vs_previous_day"),)): 0.02,
        ("batchscore_realized_ndcg", (("segment", "model:1/publish:3"),)): 0.118,
        ("batchscore_run_info", (("logical_date", "2026-11-20"),
                                 ("model_version", str(model_version)),
                                 ("run_id", run_id))): 1.0,
        ("batchscore_run_metrics_timestamp_seconds", ()): COMPUTED_AT.timestamp(),
    }


def test_gauge_names_are_the_metric_names_with_underscores() -> None:
    assert gauge_name("input.item_popularity_psi") == "batchscore_input_item_popularity_psi"
    assert gauge_name("realized.ndcg-share") == "batchscore_realized_ndcg_share"


def test_the_textfile_holds_the_runs_gauges_and_the_next_run_replaces_it(
        engine, model_version, tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path)})
    run_id = record_run(engine, model_version, date(2026, 11, 20), METRICS)

    where = export(engine, settings.prometheus, settings.home, run_id)

    path = tmp_path / "metrics" / "batchscore.prom"
    assert where == str(path)
    assert samples(path.read_text()) == expected(run_id, model_version)
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert families["batchscore_input_item_popularity_psi"].type == "gauge"

    later = record_run(engine, model_version, date(2026, 11, 21), [("input.rows", "", 3900.0)])
    export(engine, settings.prometheus, settings.home, later)
    assert samples(path.read_text()) == {
        ("batchscore_input_rows", (("segment", ""),)): 3900.0,
        ("batchscore_run_info", (("logical_date", "2026-11-21"),
                                 ("model_version", str(model_version)),
                                 ("run_id", later))): 1.0,
        ("batchscore_run_metrics_timestamp_seconds", ()): COMPUTED_AT.timestamp()}
    # Renamed into place: nothing else is left for the collector to read.
    assert [p.name for p in path.parent.iterdir()] == ["batchscore.prom"]


def test_a_configured_metrics_folder_is_used(engine, model_version, tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path / "home"),
                                  "BATCHSCORE_METRICS_DIR": str(tmp_path / "textfiles")})
    run_id = record_run(engine, model_version, date(2026, 11, 20), METRICS[:1])
    assert export(engine, settings.prometheus, settings.home, run_id) == str(
        tmp_path / "textfiles" / "batchscore.prom")


def test_an_unknown_run_is_named(engine, tmp_path: Path) -> None:
    with pytest.raises(LookupError, match=r"no run nightly-x in batchscore\.runs"):
        export(engine, PrometheusSettings(), tmp_path, "nightly-x")


@pytest.fixture
def pushgateway() -> Iterator[str]:
    """A real Pushgateway on 127.0.0.1, without persistence, stopped by pid at teardown."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (.ci/run installs Debian's)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}",
                               "--persistence.file="], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "the pushgateway exited"
            assert time.monotonic() < deadline, "the pushgateway was not ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_with_a_pushgateway_configured_the_metrics_are_pushed_to_it(
        engine, model_version, pushgateway: str, tmp_path: Path) -> None:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path),
                                  "BATCHSCORE_PUSHGATEWAY_URL": pushgateway})
    run_id = record_run(engine, model_version, date(2026, 11, 20), METRICS)

    where = export(engine, settings.prometheus, settings.home, run_id)
    assert where == f"{pushgateway} (job batchscore_nightly)"

    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    pushed = samples(scraped, job="batchscore_nightly")
    # The gateway's own record of the push, beside what was pushed.
    assert pushed.pop(("push_failure_time_seconds", ())) == 0
    assert pushed.pop(("push_time_seconds", ())) > COMPUTED_AT.timestamp()
    assert pushed == expected(run_id, model_version)
    assert not (tmp_path / "metrics").exists()
