"""The generated secrets and the monitoring levels, on their own."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from jobs.monitoring.thresholds import Crossing, ThresholdError, crossings, levels
from jobs.platform.secrets import secret


def test_a_secret_is_generated_once_owner_only_and_reused(tmp_path):
    first = secret(tmp_path, "postgres")
    assert len(first) >= 32
    assert secret(tmp_path, "postgres") == first
    assert secret(tmp_path, "redis") != first
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "secrets" / "postgres").stat().st_mode) == 0o600


def test_concurrent_first_uses_agree_on_one_value(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        values = set(pool.map(lambda _: secret(tmp_path, "shared"), range(32)))
    assert len(values) == 1
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["shared"]


def test_a_secret_name_is_checked(tmp_path):
    with pytest.raises(ValueError, match="secret name"):
        secret(tmp_path, "../escape")


CONTRACTS = {"monitoring": {"levels": [
    {"metric": "input.item_popularity_psi", "direction": "above", "warn": 0.1, "retrain": 0.25},
    {"metric": "realized.ndcg_share", "segment": "version:1", "direction": "below",
     "warn": 0.9, "retrain": 0.8},
]}}


def test_crossings_name_the_worst_level_first():
    found = crossings({
        ("input.item_popularity_psi", "vs_training"): 0.3,
        ("input.item_popularity_psi", "vs_previous_day"): 0.12,
        ("input.item_popularity_psi", "other"): 0.1,  # at the level is not beyond it
        ("realized.ndcg_share", "version:1"): 0.85,
        ("realized.ndcg_share", "version:2"): 0.1,  # not the segment held to a level
    }, levels(CONTRACTS))
    assert found == [
        Crossing("input.item_popularity_psi", "vs_training", 0.3, "retrain", 0.25, "above"),
        Crossing("input.item_popularity_psi", "vs_previous_day", 0.12, "warn", 0.1, "above"),
        Crossing("realized.ndcg_share", "version:1", 0.85, "warn", 0.9, "below"),
    ]
    assert found[2].describe() == (
        "realized.ndcg_share (version:1) = 0.85 is below its warn level 0.9")


@pytest.mark.parametrize(("entry", "message"), [
    ({"metric": "m", "direction": "sideways", "warn": 1}, "direction must be"),
    ({"metric": "m", "direction": "above"}, "needs metric, direction and a numeric warn"),
    ({"metric": "m", "direction": "above", "warn": 1, "retrain": 0.5}, "must be beyond"),
    ({"metric": "m", "direction": "below", "warn": 0.5, "retrain": 1}, "must be beyond"),
])
def test_malformed_levels_are_refused_by_name(entry, message):
    with pytest.raises(ThresholdError, match=message):
        levels({"monitoring": {"levels": [entry]}})
