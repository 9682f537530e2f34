"""`--tune` and its options: what may not go with it is refused, naming the options,
before anything is opened; and how a search judges whether a fit still fits its budget."""

from __future__ import annotations

import time

import pytest

from jobs.cli import main
from jobs.training import train
from jobs.training.tune import ALL, Budget, TuneConfig

DATABASE = ["--database-url", "postgresql://nobody@127.0.0.1:1/none"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--family", "all"], "--family all needs --tune"),
    (["--budget-minutes", "5"], "--budget-minutes needs --tune"),
    (["--tune", "--rank", "64", "--l2", "10"], "--tune searches the family's parameters; "
                                               "drop --rank, --l2"),
    (["--reproduce", "3", "--tune"], "drop --tune"),
])
def test_the_command_refuses_options_that_do_not_go_together(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # No server runs: the options are refused before any connection is tried.
    assert main(["train", *argv]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--family", "all"], "--family all needs --tune"),
    (["--budget-minutes", "5"], "--budget-minutes needs --tune"),
    (["--tune", "--reg-param", "0.5", "--max-iter", "5"],
     "--tune searches the family's parameters; drop --reg-param, --max-iter"),
    (["--tune=no", "--family", "all"], "--family all needs --tune"),
])
def test_the_job_refuses_the_same(argv: list[str], message: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--as-of", "2026-11-20", *DATABASE, *argv])
    assert message in capsys.readouterr().err


def test_the_job_reads_a_tuning_request() -> None:
    config = train.parse_args(["--as-of", "2026-11-20", *DATABASE, "--tune", "--family",
                               "all", "--budget-minutes", "2.5"])
    assert config.tuning == TuneConfig(budget_minutes=2.5, family=ALL)
    assert config.family == "als"  # the starting point until the search chooses
    assert train.parse_args(["--as-of", "2026-11-20", *DATABASE, "--tune=yes",
                             "--family", "ease"]).tuning == TuneConfig(family="ease")
    assert train.parse_args(["--as-of", "2026-11-20", *DATABASE, "--tune=no"]).tuning is None


def test_a_budget_expects_a_fit_to_take_what_the_longest_like_it_took() -> None:
    budget = Budget(deadline=time.monotonic() + 30)
    assert budget.expected("als", 10) == 0.0 and budget.allows("als", 10)
    budget.record("als", 2, 4.0)
    budget.record("als", 2, 6.0)
    budget.record("als", 4, 8.0)
    assert budget.expected("als", 2) == 8.0  # a longer fit took longer
    assert budget.expected("als", 4) == 8.0
    assert budget.expected("als", 10) == 20.0  # scaled up from the 4-iteration fit
    assert budget.expected("ease", 1) == 0.0
    assert budget.allows("als", 4) and not budget.allows("als", 20)
