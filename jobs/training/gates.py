"""The promotion gates: what a candidate must show before it may serve.

1. it beats the popularity baseline on NDCG@K on the holdout;
2. it does not fall behind the serving model's NDCG@K on the same holdout by
   more than ``promotion.max_ndcg_drop`` (``schemas/contracts.json``);
3. its top-K lists for a fixed sample of users do not move further from the
   serving model's than the ``promotion.differential`` bounds allow (the score
   distribution is compared only between models of one family: an ALS score and
   an EASE score are on different scales).

The checks and their numbers are recorded with the version (``gates``), so a
decision can be read back and explained later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.training.differential import Differential


@dataclass(frozen=True)
class DifferentialBounds:
    sample_users: int
    min_overlap_at_k: float
    min_rank_correlation: float
    max_score_ks: float


@dataclass(frozen=True)
class GateConfig:
    max_ndcg_drop: float
    differential: DifferentialBounds

    @classmethod
    def load(cls) -> GateConfig:
        from jobs.contracts.engine import load_contracts_config

        promotion = load_contracts_config()["promotion"]
        return cls(max_ndcg_drop=float(promotion["max_ndcg_drop"]),
                   differential=DifferentialBounds(**promotion["differential"]))


def judge(metrics: dict[str, Any], differential: Differential | None,
          serving_version: int | None, config: GateConfig) -> dict[str, Any]:
    """Run every gate; returns the record stored as the version's ``gates``.

    ``metrics`` holds ``als`` and ``popularity`` (and ``serving`` when a
    model serves) holdout metrics; ``differential`` compares the candidate
    with the serving model, ``None`` when none serves.
    """
    ndcg = float(metrics["als"]["ndcg_at_k"])
    baseline = float(metrics["popularity"]["ndcg_at_k"])
    checks = [check("beats_popularity", ndcg > baseline,
                    f"NDCG {ndcg:.4f} vs popularity {baseline:.4f}")]
    if serving_version is not None:
        checks.append(keeps_up_with_serving(ndcg, metrics["serving"], serving_version, config))
    if differential is not None:
        bounds = config.differential
        checks += [
            check("overlap_at_k", differential.overlap_at_k >= bounds.min_overlap_at_k,
                  f"overlap@{differential.k} with the serving model "
                  f"{differential.overlap_at_k:.3f} (at least {bounds.min_overlap_at_k})"),
            check("rank_correlation",
                  differential.rank_correlation >= bounds.min_rank_correlation,
                  f"rank correlation {differential.rank_correlation:.3f} "
                  f"(at least {bounds.min_rank_correlation})"),
            check("score_shift", differential.score_ks <= bounds.max_score_ks,
                  f"score distribution shift (KS) {differential.score_ks:.3f} "
                  f"(at most {bounds.max_score_ks})") if differential.same_family
            else check("score_shift", True,
                       "score distribution shift not compared: the serving model is of "
                       "another family, whose scores are on another scale"),
        ]
    failed = [c for c in checks if not c["passed"]]
    reason = ("; ".join(f"{c['name']} failed: {c['detail']}" for c in failed) if failed
              else "all gates passed: " + "; ".join(c["detail"] for c in checks))
    return {
        "passed": not failed,
        "reason": reason,
        "serving_version": serving_version,
        "checks": checks,
        "differential": differential.to_json() if differential is not None else None,
    }


def keeps_up_with_serving(ndcg: float, serving: dict[str, Any], version: int,
                          config: GateConfig) -> dict[str, Any]:
    served = float(serving["ndcg_at_k"])
    floor = served * (1 - config.max_ndcg_drop)
    return check("keeps_up_with_serving", ndcg >= floor,
                 f"NDCG {ndcg:.4f} vs serving version {version}'s {served:.4f} on the same "
                 f"holdout (floor {floor:.4f}, {config.max_ndcg_drop:.0%} below; serving "
                 f"model: {serving.get('compared_as', 'artifact')})")


def check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail}
