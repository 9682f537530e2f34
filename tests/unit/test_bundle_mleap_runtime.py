"""MLeap's own JVM runtime (0.20.0) as a scorer: MLeap's published values, its refusals in
its own words, and a JVM that batchscore starts and stops."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from jobs.bundles import format as fmt
from jobs.bundles.leapframe import LeapFrame, Vector, frame_from_json, read_frame
from jobs.bundles.mleap_runtime import MleapRefusedError, MleapRuntime, MleapRuntimeError
from jobs.bundles.reader import load_bundle

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "mleap-fixtures"

DEMO_ROW = frame_from_json({"schema": {"fields": [{"name": n, "type": "double"} for n in
                                                  ("demo:a", "demo:c", "demo:d")]},
                            "rows": [[44.5, 22.1, 98.2]]})


def both(runtime: MleapRuntime, bundle: Path, frame: LeapFrame) -> tuple[LeapFrame, LeapFrame]:
    """The frame scored by MLeap's runtime and by the Python reader."""
    return runtime.transform(bundle, frame), load_bundle(bundle).transform(frame)


def largest_difference(a: LeapFrame, b: LeapFrame) -> float:
    """The largest difference over every numeric value; the schemas must name the same columns."""
    assert [f.name for f in a.fields] == [f.name for f in b.fields]
    worst = 0.0
    for row_a, row_b in zip(a.rows, b.rows, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            if isinstance(x, str) or isinstance(y, str):
                assert x == y
                continue
            xs = x.values if isinstance(x, Vector) else np.asarray([x], dtype=float)
            ys = y.values if isinstance(y, Vector) else np.asarray([y], dtype=float)
            assert xs.shape == ys.shape
            worst = max(worst, float(np.max(np.abs(xs - ys))) if xs.size else 0.0)
    return worst


# ---------------------------------------------------------------- MLeap's bundles


def test_random_forest_bundle_gives_the_published_price_in_both_runtimes(
        mleap_runtime: MleapRuntime) -> None:
    jvm, python = both(mleap_runtime, FIXTURES / "airbnb.model.rf.zip",
                       read_frame(FIXTURES / "frame.airbnb.json"))

    assert jvm.column("price_prediction") == [pytest.approx(218.2767196535019, abs=1e-9)]
    assert python.column("price_prediction") == [pytest.approx(218.2767196535019, abs=1e-9)]
    assert largest_difference(jvm, python) <= 1e-9


def test_demo_bundle_gives_the_published_prediction_in_both_runtimes(
        mleap_runtime: MleapRuntime) -> None:
    jvm, python = both(mleap_runtime, FIXTURES / "demo.zip", DEMO_ROW)

    assert jvm.column("demo:prediction") == [pytest.approx(-67.78953193834998, abs=1e-9)]
    assert python.column("demo:prediction") == [pytest.approx(-67.78953193834998, abs=1e-9)]
    assert largest_difference(jvm, python) <= 1e-9


def test_linear_regression_bundle_scores_alike_in_both_runtimes(
        mleap_runtime: MleapRuntime) -> None:
    jvm, python = both(mleap_runtime, FIXTURES / "airbnb.model.lr.zip",
                       read_frame(FIXTURES / "frame.airbnb.json"))

    # No published price for this bundle: the two runtimes must agree on every column the
    # legacy indexers and encoders add, and on the price.
    assert [f.name for f in jvm.fields][-2:] == ["features_lr", "price_prediction"]
    assert jvm.column("state_index") == [1.0]
    assert jvm.column("state_index_oh")[0].values.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert largest_difference(jvm, python) <= 1e-9


# ---------------------------------------------------------------- refusals


def test_a_bundle_mleap_cannot_read_is_refused_in_mleaps_words(
        mleap_runtime: MleapRuntime, tmp_path: Path) -> None:
    bundle = tmp_path / "no-coefficients.zip"
    fmt.write_zip(fmt.bundle_files(fmt.NodeFiles(
        name="lr", op="linear_regression", attributes={"intercept": fmt.double(1.0)},
        inputs=[("features", "features")], outputs=[("prediction", "prediction")])), bundle)

    with pytest.raises(MleapRefusedError, match=r"MLeap 0\.20\.0's runtime refused .*"
                                                r"no-coefficients\.zip: .*coefficients"):
        mleap_runtime.transform(bundle, DEMO_ROW)


def test_a_frame_without_the_bundles_inputs_is_refused(mleap_runtime: MleapRuntime) -> None:
    with pytest.raises(MleapRefusedError, match=r"invalid fields: demo:a,demo:c,demo:d"):
        mleap_runtime.transform(FIXTURES / "demo.zip", read_frame(FIXTURES / "frame.airbnb.json"))
    # The JVM goes on answering after a refusal.
    assert mleap_runtime.transform(FIXTURES / "demo.zip", DEMO_ROW).column("demo:prediction")


def test_without_the_built_runtime_the_error_names_make_install(tmp_path: Path) -> None:
    with pytest.raises(MleapRuntimeError, match=r"not built .* run `make install`"):
        MleapRuntime(project=tmp_path).start()


def test_without_java_the_error_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(MleapRuntimeError, match=r"needs Java 17 or newer, and 'java' is not on "
                                                r"PATH"):
        MleapRuntime().start()


# ---------------------------------------------------------------- the JVM's life


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here; the runtime reaps its own child.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def test_the_jvm_is_started_and_stopped_by_the_runtime() -> None:
    with MleapRuntime() as runtime:
        pid = runtime.pid
        assert pid is not None and alive(pid)
        runtime.transform(FIXTURES / "demo.zip", DEMO_ROW)

    assert runtime.pid is None and not alive(pid)


def test_a_killed_jvm_is_a_clear_error_not_a_hang() -> None:
    runtime = MleapRuntime().start()
    pid = runtime.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    with pytest.raises(MleapRuntimeError, match=r"(exited|has exited)"):
        runtime.transform(FIXTURES / "demo.zip", DEMO_ROW)
    runtime.close()
    assert runtime.pid is None
