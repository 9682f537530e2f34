from datetime import date
from types import SimpleNamespace

import pytest

from jobs.cli.models import describe_model

PLAIN = {"precision_at_k": 0.1, "recall_at_k": 0.2, "ndcg_at_k": 0.3, "map_at_k": 0.05,
         "catalog_coverage": 0.25}


def version(metrics: dict) -> SimpleNamespace:
    return SimpleNamespace(version=4, status="candidate", trained_as_of=date(2024, 3, 1),
                           data_snapshot={"rows": 1000}, params={"eval_k": 10},
                           metrics=metrics, gates={}, kind="ease")


def test_show_prints_the_debiased_columns_and_dashes_where_a_model_lacks_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    debiased = {**PLAIN, "ips_ndcg_at_k": 0.21, "ips_recall_at_k": 0.12, "novelty": 7.5}
    # The serving model's metrics as an older version stored them: no debiased keys.
    describe_model(version({"model": debiased, "popularity": debiased,
                            "serving": {**PLAIN, "version": 3}}))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "  holdout @10:     precision  recall  ndcg    map     coverage  ips ndcg  ips recall"
        "  novelty",
        "  this model     0.1000     0.2000  0.3000  0.0500  0.250     0.2100    0.1200"
        "      7.5000",
        "  popularity     0.1000     0.2000  0.3000  0.0500  0.250     0.2100    0.1200"
        "      7.5000",
        "  serving v3     0.1000     0.2000  0.3000  0.0500  0.250     -         -           -",
    ]


def test_show_of_a_version_without_debiased_metrics_keeps_the_old_table(
        capsys: pytest.CaptureFixture[str]) -> None:
    # As a version registered before there were two families stored them.
    describe_model(version({"als": PLAIN, "popularity": PLAIN}))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "  holdout @10:     precision  recall  ndcg    map     coverage",
        "  this model     0.1000     0.2000  0.3000  0.0500  0.250",
        "  popularity     0.1000     0.2000  0.3000  0.0500  0.250",
    ]
