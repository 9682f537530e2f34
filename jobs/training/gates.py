"""The promotion gates: what a candidate must show before it may serve.

1. it beats the popularity baseline on the gate metric on the holdout;
2. it does not fall behind the serving model's gate metric on the same holdout
   by more than ``promotion.max_ndcg_drop`` (``schemas/contracts.json``);
3. its top-K lists for a fixed sample of users do not move further from the
   serving model's than the ``promotion.differential`` bounds allow (the score
   distribution is compared only between models of one family: an ALS score and
   an EASE score are on different scales).

The gate metric is ``promotion.gate_metric``: the plain NDCG@K
(``ndcg_at_k``, the default) or the debiased one (``ips_ndcg_at_k``, see
:mod:`jobs.training.metrics`).

The checks and their numbers are recorded with the version (``gates``), so a
decision can be read back and explained later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.platform.config import ConfigError
from jobs.training.differential import Differential
from jobs.training.holdout import candidate_metrics

# The metrics the first two gates may compare, with the name their details use.
GATE_METRICS = {"ndcg_at_k": "NDCG", "ips_ndcg_at_k": "IPS NDCG"}
DEFAULT_GATE_METRIC = "ndcg_at_k"


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
    gate_metric: str = DEFAULT_GATE_METRIC

    def __post_init__(self) -> None:
        if self.gate_metric not in GATE_METRICS:
            raise ConfigError(
                f"promotion.gate_metric in schemas/contracts.json is {self.gate_metric!r}; "
                f"expected one of {', '.join(repr(name) for name in GATE_METRICS)}")

    @classmethod
    def load(cls) -> GateConfig:
        from jobs.contracts.engine import load_contracts_config

        promotion = load_contracts_config()["promotion"]
        return cls(max_ndcg_drop=float(promotion["max_ndcg_drop"]),
                   differential=DifferentialBounds(**promotion["differential"]),
                   gate_metric=promotion.get("gate_metric", DEFAULT_GATE_METRIC))


def judge(metrics: dict[str, Any], differential: Differential | None,
          serving_version: int | None, config: GateConfig) -> dict[str, Any]:
    """Run every gate; returns the record stored as the version's ``gates``.

    ``metrics`` holds ``als`` and ``popularity`` (and ``serving`` when a
    model serves) holdout metrics; ``differential`` compares the candidate
    with the serving model, ``None`` when none serves. A side whose metrics
    lack ``config.gate_metric`` fails its check, saying so.
    """
    name, label = config.gate_metric, GATE_METRICS[config.gate_metric]
    candidate = candidate_metrics(metrics).get(name)
    baseline = metrics["popularity"].get(name)
    if candidate is None or baseline is None:
        missing = "the candidate's" if candidate is None else "the popularity baseline's"
        checks = [check("beats_popularity", False, f"{missing} metrics have no {name}")]
    else:
        checks = [check("beats_popularity", float(candidate) > float(baseline),
                        f"{label} {float(candidate):.4f} vs popularity {float(baseline):.4f}")]
    if serving_version is not None:
        checks.append(keeps_up_with_serving(candidate, metrics["serving"], serving_version,
                                            config))
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


def keeps_up_with_serving(candidate: float | None, serving: dict[str, Any], version: int,
                          config: GateConfig) -> dict[str, Any]:
    """``candidate``'s gate metric against the serving model's on the same holdout."""
    name, label = config.gate_metric, GATE_METRICS[config.gate_metric]
    if candidate is None or name not in serving:
        missing = "the candidate's" if candidate is None else f"serving version {version}'s"
        return check("keeps_up_with_serving", False, f"{missing} metrics have no {name}")
    served = float(serving[name])
    floor = served * (1 - config.max_ndcg_drop)
    return check("keeps_up_with_serving", float(candidate) >= floor,
                 f"{label} {float(candidate):.4f} vs serving version {version}'s {served:.4f} "
                 f"on the same holdout (floor {floor:.4f}, {config.max_ndcg_drop:.0%} below; "
                 f"serving model: {serving.get('compared_as', 'artifact')})")


def check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail}
