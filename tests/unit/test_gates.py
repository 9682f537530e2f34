from dataclasses import replace

import pytest

from jobs.platform.config import ConfigError
from jobs.training.differential import Differential
from jobs.training.gates import DifferentialBounds, GateConfig, judge

CONFIG = GateConfig(max_ndcg_drop=0.05, differential=DifferentialBounds(
    sample_users=100, min_overlap_at_k=0.5, min_rank_correlation=0.2, max_score_ks=0.3))


def metrics(model: float, popularity: float, serving: float | None = None) -> dict:
    result = {"model": {"ndcg_at_k": model}, "popularity": {"ndcg_at_k": popularity}}
    if serving is not None:
        result["serving"] = {"ndcg_at_k": serving, "compared_as": "artifact"}
    return result


def differential(overlap: float, correlation: float, ks: float) -> Differential:
    return Differential(users=100, k=10, overlap_at_k=overlap, rank_correlation=correlation,
                        score_ks=ks, candidate_mean_score=0.5, reference_mean_score=0.5)


def test_first_model_needs_only_to_beat_popularity() -> None:
    gates = judge(metrics(0.19, 0.15), None, None, CONFIG)
    assert gates["passed"] and gates["serving_version"] is None
    assert [c["name"] for c in gates["checks"]] == ["beats_popularity"]
    assert not judge(metrics(0.15, 0.15), None, None, CONFIG)["passed"]


def test_falling_behind_serving_beyond_the_tolerance_fails() -> None:
    # Floor: 0.20 * 0.95 = 0.19.
    assert judge(metrics(0.19, 0.15, 0.20), differential(0.8, 0.6, 0.1), 3, CONFIG)["passed"]
    gates = judge(metrics(0.189, 0.15, 0.20), differential(0.8, 0.6, 0.1), 3, CONFIG)
    assert not gates["passed"]
    assert gates["reason"].startswith("keeps_up_with_serving failed: NDCG 0.1890 vs serving "
                                      "version 3's 0.2000 on the same holdout")


def test_a_large_change_from_the_serving_model_blocks_and_says_why() -> None:
    gates = judge(metrics(0.25, 0.15, 0.20), differential(0.29, -0.28, 0.4), 3, CONFIG)
    assert not gates["passed"]
    failed = [c["name"] for c in gates["checks"] if not c["passed"]]
    assert failed == ["overlap_at_k", "rank_correlation", "score_shift"]
    assert "overlap@10 with the serving model 0.290 (at least 0.5)" in gates["reason"]
    assert gates["differential"]["overlap_at_k"] == 0.29


def test_the_configured_bounds_load_from_the_contracts_file() -> None:
    config = GateConfig.load()
    assert 0 < config.max_ndcg_drop < 1
    assert config.differential.sample_users > 0


# The candidate wins on plain NDCG but loses on IPS NDCG: it finds the popular
# items the baseline finds, and misses the rare ones the baseline happens to hit.
BOTH = {
    "model": {"ndcg_at_k": 0.20, "ips_ndcg_at_k": 0.10},
    "popularity": {"ndcg_at_k": 0.15, "ips_ndcg_at_k": 0.12},
    "serving": {"ndcg_at_k": 0.22, "ips_ndcg_at_k": 0.10, "compared_as": "artifact"},
}
IPS_CONFIG = replace(CONFIG, gate_metric="ips_ndcg_at_k")


def test_the_gate_metric_decides_and_is_named() -> None:
    plain = judge(BOTH, None, None, CONFIG)
    assert plain["passed"]
    assert plain["checks"][0]["detail"] == "NDCG 0.2000 vs popularity 0.1500"
    debiased = judge(BOTH, None, None, IPS_CONFIG)
    assert not debiased["passed"]
    assert debiased["reason"] == ("beats_popularity failed: IPS NDCG 0.1000 vs popularity "
                                  "0.1200")


def test_keeping_up_with_serving_uses_the_gate_metric() -> None:
    # Plain: floor 0.22 * 0.95 = 0.209 > 0.20 fails; IPS: floor 0.10 * 0.95 = 0.095 <= 0.10.
    serving = {name: BOTH[name] for name in ("model", "serving")}
    serving["popularity"] = {"ndcg_at_k": 0.1, "ips_ndcg_at_k": 0.05}
    plain = judge(serving, None, 3, CONFIG)
    assert [c["passed"] for c in plain["checks"]] == [True, False]
    debiased = judge(serving, None, 3, IPS_CONFIG)
    assert [c["passed"] for c in debiased["checks"]] == [True, True]
    assert debiased["checks"][1]["detail"].startswith(
        "IPS NDCG 0.1000 vs serving version 3's 0.1000 on the same holdout (floor 0.0950")


def test_metrics_without_the_gate_metric_fail_the_gate_and_say_so() -> None:
    # A version stored before the debiased metrics existed has no ips_ndcg_at_k.
    old_serving = {**BOTH, "popularity": {"ndcg_at_k": 0.1, "ips_ndcg_at_k": 0.05},
                   "serving": {"ndcg_at_k": 0.22, "compared_as": "artifact"}}
    gates = judge(old_serving, None, 3, IPS_CONFIG)
    assert not gates["passed"]
    assert gates["reason"] == ("keeps_up_with_serving failed: serving version 3's metrics "
                               "have no ips_ndcg_at_k")


def test_the_gate_metric_loads_and_a_bad_value_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.contracts import engine

    assert GateConfig.load().gate_metric == "ndcg_at_k"
    contracts = engine.load_contracts_config()
    contracts["promotion"] = {**contracts["promotion"], "gate_metric": "ips_ndcg"}
    monkeypatch.setattr(engine, "load_contracts_config", lambda: contracts)
    with pytest.raises(ConfigError, match=r"promotion\.gate_metric in schemas/contracts\.json "
                       r"is 'ips_ndcg'; expected one of 'ndcg_at_k', 'ips_ndcg_at_k'"):
        GateConfig.load()
    contracts["promotion"]["gate_metric"] = "ips_ndcg_at_k"
    assert GateConfig.load().gate_metric == "ips_ndcg_at_k"
    del contracts["promotion"]["gate_metric"]
    assert GateConfig.load().gate_metric == "ndcg_at_k"


def test_a_version_registered_before_two_families_is_read_under_its_old_key() -> None:
    from jobs.training.holdout import candidate_metrics

    assert candidate_metrics({"als": {"ndcg_at_k": 0.3}, "popularity": {}}) == {
        "ndcg_at_k": 0.3}
    assert candidate_metrics({"model": {"ndcg_at_k": 0.4}}) == {"ndcg_at_k": 0.4}
    legacy = {"als": {"ndcg_at_k": 0.19}, "popularity": {"ndcg_at_k": 0.15}}
    assert judge(legacy, None, None, CONFIG)["passed"]
