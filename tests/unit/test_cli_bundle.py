"""`batchscore bundle score`: the transformed LeapFrame on stdout, one-line errors, in the
Python reader and in MLeap's JVM runtime (``--runtime jvm``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "mleap-fixtures"


def test_bundle_score_prints_the_transformed_frame(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bundle", "score", str(FIXTURES / "airbnb.model.rf.zip"),
                 "--frame", str(FIXTURES / "frame.airbnb.json")])

    out = json.loads(capsys.readouterr().out)
    assert code == 0
    names = [f["name"] for f in out["schema"]["fields"]]
    # The 13 input columns come first, then every column the stages add, in order.
    assert names[:13] == ["state", "bathrooms", "square_feet", "bedrooms", "security_deposit",
                          "cleaning_fee", "extra_people", "number_of_reviews",
                          "review_scores_rating", "room_type", "host_is_superhost",
                          "cancellation_policy", "instant_bookable"]
    assert names[13:] == ["unscaled_continuous_features", "scaled_continuous_features",
                          "room_type_index", "host_is_superhost_index",
                          "cancellation_policy_index", "instant_bookable_index", "state_index",
                          "features_rf", "price_prediction"]
    fields = dict(zip(names, (f["type"] for f in out["schema"]["fields"]), strict=True))
    assert fields["scaled_continuous_features"] == {"type": "tensor", "base": "double",
                                                    "dimensions": [8]}
    row = dict(zip(names, out["rows"][0], strict=True))
    assert row["price_prediction"] == pytest.approx(218.2767196535019, abs=1e-9)
    assert row["unscaled_continuous_features"] == {
        "values": [2.0, 3.0, 50.0, 30.0, 2.0, 56.0, 1250.0, 90.0], "dimensions": [8]}


def test_the_jvm_runtime_prints_the_same_frame(capsys: pytest.CaptureFixture[str],
                                               caplog: pytest.LogCaptureFixture) -> None:
    args = ["bundle", "score", str(FIXTURES / "airbnb.model.rf.zip"),
            "--frame", str(FIXTURES / "frame.airbnb.json")]
    assert main(args) == 0
    by_python = json.loads(capsys.readouterr().out)

    with caplog.at_level("INFO", logger="jobs.bundles.mleap_runtime"):
        code = main([*args, "--runtime", "jvm"])

    assert any("in MLeap's runtime" in r.getMessage() for r in caplog.records)
    by_jvm = json.loads(capsys.readouterr().out)
    assert code == 0
    row = dict(zip([f["name"] for f in by_jvm["schema"]["fields"]], by_jvm["rows"][0],
                   strict=True))
    assert row["price_prediction"] == pytest.approx(218.2767196535019, abs=1e-9)
    # MLeap's runtime and the reader agree to the last digit, types and all.
    assert by_jvm == by_python


@pytest.mark.parametrize(("bundle", "frame", "message"), [
    ("missing.zip", "frame.airbnb.json", "error: no bundle at "),
    ("demo.zip", "README.md", "is not JSON"),
    ("README.md", "frame.airbnb.json", "MLeap 0.20.0's runtime refused "),
    ("demo.zip", "frame.airbnb.json", "invalid fields: demo:a,demo:c,demo:d"),
])
def test_the_jvm_runtime_gives_one_line_errors(capsys: pytest.CaptureFixture[str], bundle: str,
                                               frame: str, message: str) -> None:
    code = main(["bundle", "score", str(FIXTURES / bundle), "--frame", str(FIXTURES / frame),
                 "--runtime", "jvm"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert message in err[-1] and err[-1].startswith("error: ")
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize(("bundle", "frame", "message"), [
    ("missing.zip", "frame.airbnb.json", "error: no bundle at "),
    ("README.md", "frame.airbnb.json", "is not a bundle"),
    ("demo.zip", "README.md", "is not JSON"),
    ("demo.zip", "frame.airbnb.json", "input column 'demo:a' is missing"),
])
def test_bad_inputs_give_one_line_errors(capsys: pytest.CaptureFixture[str], bundle: str,
                                         frame: str, message: str) -> None:
    code = main(["bundle", "score", str(FIXTURES / bundle), "--frame", str(FIXTURES / frame)])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert message in err[-1] and err[-1].startswith("error: ")
    assert not any("Traceback" in line for line in err)


def test_unsupported_op_is_a_one_line_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.bundles import format as fmt

    bundle = tmp_path / "pca.zip"
    fmt.write_zip(fmt.bundle_files(fmt.NodeFiles(name="my_pca", op="pca", attributes={})),
                  bundle)

    code = main(["bundle", "score", str(bundle), "--frame", str(FIXTURES / "frame.airbnb.json")])

    assert code == 1
    assert "unsupported op 'pca' in node 'my_pca'" in capsys.readouterr().err
