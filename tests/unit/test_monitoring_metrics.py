"""The monitoring measures against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from jobs.monitoring import metrics as m
from jobs.monitoring.monitor import MonitorConfig, MonitorError, MonitorResult
from jobs.monitoring.thresholds import Crossing


def test_psi_of_a_shifted_split():
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    assert m.psi([50, 50], [25, 75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert m.psi([3, 7], [30, 70]) == pytest.approx(0.0)


def test_psi_floors_an_empty_bin_at_epsilon():
    # expected [1, 0] becomes [1, 1e-4] / 1.0001; actual stays [0.5, 0.5].
    assert m.psi([100, 0], [50, 50]) == pytest.approx(4.6042492, rel=1e-6)


def test_psi_refuses_mismatched_or_empty_histograms():
    with pytest.raises(ValueError, match="same bins: 2 expected, 3 actual"):
        m.psi([1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="at least one positive count"):
        m.psi([0, 0], [1, 1])
    with pytest.raises(ValueError, match="must not be negative"):
        m.psi([1, -1, 2], [1, 1, 1])


def test_jensen_shannon_in_bits():
    assert m.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert m.js_divergence([2, 3], [4, 6]) == pytest.approx(0.0)
    # M = (0.75, 0.25); KL(P|M) = 0.5 log2(2/3) + 0.5 log2(2); KL(Q|M) = log2(4/3).
    expected = 0.5 * (0.5 * math.log2(2 / 3) + 0.5 + math.log2(4 / 3))
    assert m.js_divergence([1, 1], [1, 0]) == pytest.approx(expected)
    assert expected == pytest.approx(0.311278, rel=1e-5)


def test_gini_of_exposure():
    assert m.gini([5, 5, 5, 5]) == pytest.approx(0.0)
    # sorted (0, 0, 0, 10): (2*4 - 4 - 1) * 10 / (4 * 10)
    assert m.gini([10, 0, 0, 0]) == pytest.approx(0.75)
    # sorted (1, 2, 3): (-2*1 + 0*2 + 2*3) / (3 * 6)
    assert m.gini([3, 1, 2]) == pytest.approx(4 / 18)
    with pytest.raises(ValueError, match="positive count"):
        m.gini([0, 0])


def test_overlap_at_k():
    assert m.overlap_at_k([1, 2, 3], [3, 2, 9], 3) == pytest.approx(2 / 3)
    assert m.overlap_at_k([1, 2, 3, 4], [4, 3, 2, 1], 2) == 0.0
    with pytest.raises(ValueError, match="k must be at least 1"):
        m.overlap_at_k([1], [1], 0)


def test_popularity_bins_cut_the_ranking_by_event_mass():
    # Item 1 starts at 0% of the ranking's mass (bin 0), item 2 at 50% and item 3 at 80%
    # (bin 1); item 4 is not in the ranking (the last bin).
    ranking = {1: 50, 2: 30, 3: 20}
    assert m.popularity_bins(ranking, ranking, bins=2) == [50, 50, 0]
    assert m.popularity_bins(ranking, {1: 10, 3: 5, 4: 5}, bins=2) == [10, 5, 5]
    # Ties go by item id: 5 before 6, each half the mass.
    assert m.popularity_bins({6: 1, 5: 1}, {5: 3, 6: 1}, bins=2) == [3, 1, 0]
    with pytest.raises(ValueError, match="bins must be at least 1"):
        m.popularity_bins({1: 1}, {1: 1}, bins=0)
    with pytest.raises(ValueError, match="no events"):
        m.popularity_bins({1: 0}, {1: 1})


def test_activity_bins_double():
    assert [m.activity_bin(n) for n in (1, 2, 3, 4, 5, 8, 9, 128, 129, 5000)] == [
        0, 1, 2, 2, 3, 3, 4, 7, 8, 8]
    assert m.activity_histogram({1: 10, 3: 2, 4: 1, 200: 1}) == [10, 0, 3, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="at least one event"):
        m.activity_bin(0)


def test_ideal_dcg_stops_at_k_or_the_relevant_items():
    assert m.ideal_dcg(2, 10) == pytest.approx(1 + 1 / math.log2(3))
    assert m.ideal_dcg(5, 2) == pytest.approx(1 + 1 / math.log2(3))
    assert m.ideal_dcg(1, 1) == 1.0


@pytest.mark.parametrize(("name", "default"), [("realized_window_days", 7),
                                               ("reference_window_days", 28)])
def test_the_windows_are_checked(name, default):
    assert getattr(MonitorConfig.from_contracts({}), name) == default
    assert getattr(MonitorConfig.from_contracts({"monitoring": {name: 3}}), name) == 3
    for bad in (0, -3, 2.5, "7", True):
        with pytest.raises(MonitorError, match=rf"monitoring\.{name} must be a whole number"):
            MonitorConfig.from_contracts({"monitoring": {name: bad}})


def test_the_shipped_levels_load():
    config = MonitorConfig.load()
    named = {(level.metric, level.segment) for level in config.levels}
    assert ("realized.ndcg_share", None) in named
    assert ("input.item_popularity_psi", None) in named
    # A new model moves its scores by design: a retrain level there would make every
    # retrain ask for the next one.
    assert [level.retrain for level in config.levels
            if level.metric == "predictions.score_psi"] == [None]


def test_the_result_is_the_agreed_record():
    crossing = Crossing(metric="input.item_popularity_psi", segment="vs_training", value=0.9,
                        level="retrain", threshold=0.5, direction="above")
    result = MonitorResult(run_id="r1", metrics={}, crossings=[crossing])
    assert result.to_json() == {
        "run_id": "r1", "retrain": True,
        "crossings": [{"metric": "input.item_popularity_psi", "segment": "vs_training",
                       "value": 0.9, "level": "retrain", "threshold": 0.5,
                       "direction": "above"}]}
    assert MonitorResult(run_id="r2", metrics={}, crossings=[]).to_json()["retrain"] is False
