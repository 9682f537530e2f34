from jobs.training.differential import Differential
from jobs.training.gates import DifferentialBounds, GateConfig, judge

CONFIG = GateConfig(max_ndcg_drop=0.05, differential=DifferentialBounds(
    sample_users=100, min_overlap_at_k=0.5, min_rank_correlation=0.2, max_score_ks=0.3))


def metrics(als: float, popularity: float, serving: float | None = None) -> dict:
    result = {"als": {"ndcg_at_k": als}, "popularity": {"ndcg_at_k": popularity}}
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
