"""`batchscore train --tune --family all` through the CLI: both families searched within
the budget, the better trained and registered, its search shown by `models show`."""

from __future__ import annotations

import json
import time

import pytest

from jobs.cli import main
from tests.e2e.conftest import cli_world

pytestmark = pytest.mark.spark

AS_OF = "2026-11-20"
BUDGET_MINUTES = 1


def test_train_tune_all_trains_the_better_family_within_its_budget(
        spark, settings, endpoints, capsys) -> None:
    with cli_world(settings, endpoints):
        assert main(["data", "generate", "--users", "300", "--items", "80", "--days", "30",
                     "--seed", "5", "--end-date", AS_OF]) == 0
        capsys.readouterr()
        began = time.monotonic()
        assert main(["train", "--as-of", AS_OF, "--tune", "--family", "all",
                     "--budget-minutes", str(BUDGET_MINUTES)]) == 0
        elapsed = time.monotonic() - began
        assert "model version 1" in capsys.readouterr().out
        assert main(["models", "show", "1", "--json"]) == 0
        version = json.loads(capsys.readouterr().out)
        assert main(["models", "show", "1"]) == 0
        shown = capsys.readouterr().out

    tuning = version["reports"]["tuning"]
    assert tuning["budget_minutes"] == BUDGET_MINUTES and tuning["families"] == ["ease", "als"]
    assert tuning["seconds"] <= BUDGET_MINUTES * 60 + max(
        trial["seconds"] or 0 for trial in tuning["trials"])
    assert {trial["family"] for trial in tuning["trials"]} == {"ease", "als"}
    best = tuning["best"]
    assert version["kind"] == best["family"] == version["params"]["family"]
    assert {name: version["params"][name] for name in best["params"]} == best["params"]
    assert version["gates"]["checks"]
    # The search and the training after it: a loose bound, not a benchmark.
    assert elapsed < BUDGET_MINUTES * 60 + 240
    assert f"best {best['family']} trial {best['number']}" in shown
    assert shown.count("\n    ease ") + shown.count("\n    als ") == len(tuning["trials"])
