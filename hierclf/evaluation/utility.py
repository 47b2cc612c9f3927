"""Clinical utility of a binary task: the operating point's rule, PPV / NPV and the number needed to biopsy
at the prevalences a protocol declares, and decision curves.

* :func:`choose_threshold` / :func:`threshold_replicates`: the task's operating-point rule
  (:class:`~hierclf.evaluation.protocol_format.OperatingPointSpec`) on validation, and re-chosen in each
  replicate of the validation bootstrap;
* :func:`predictive_values`: at each declared prevalence ``p``, PPV and NPV by Bayes' rule from the test
  sensitivity and specificity at the chosen threshold, and the number needed to biopsy ``1 / PPV`` (biopsies
  per positive found), each replicate from the same test replicates of sensitivity and specificity, so the
  interval is the grouped bootstrap's;
* :func:`measure_decision_curve` / :func:`aggregate_decision_curve`: net benefit against threshold
  probability (Vickers & Elkin 2006) of the task's score, of treating everyone and of treating nobody, per
  seed with grouped-bootstrap replicates, then the mean over seeds with the pooled percentile band.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.metrics import operating_points as OP
from hierclf.evaluation.protocol_format import OperatingPointSpec, Protocol
from hierclf.evaluation.records import IntervalPolicy, SeedMetrics, estimate_over_seeds, pooled_band

__all__ = [
    "DecisionSeed",
    "aggregate_decision_curve",
    "choose_threshold",
    "measure_decision_curve",
    "predictive_values",
    "threshold_replicates",
]


def _cost_options(spec: OperatingPointSpec) -> dict[str, float]:
    return {
        "cost_false_negative": float(spec.cost_false_negative or 0.0),
        "cost_false_positive": float(spec.cost_false_positive or 0.0),
        "prevalence": float(spec.prevalence or 0.0),
    }


def choose_threshold(spec: OperatingPointSpec, y: np.ndarray, score: np.ndarray) -> float:
    """The threshold of the task's rule on ``(y, score)`` (validation)."""
    if spec.rule == "target_sensitivity":
        return float(M.threshold_at_sensitivity(y, score, float(spec.target or 0.0)))
    if spec.rule == "target_specificity":
        return OP.threshold_at_specificity(y, score, float(spec.target or 0.0))
    return OP.threshold_at_minimum_cost(y, score, **_cost_options(spec))


def threshold_replicates(
    proto: Protocol, spec: OperatingPointSpec, y: np.ndarray, score: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """The rule re-chosen in each replicate of the validation bootstrap (for a rule other than the
    protocol's target sensitivity, whose replicates the task's validation bootstrap already holds)."""
    options = {"target": float(spec.target or 0.0)} if spec.rule != "minimum_cost" else _cost_options(spec)
    return OP.bootstrap_thresholds(
        y,
        score,
        groups,
        spec.rule,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        **options,
    )


def predictive_values(
    proto: Protocol, prevalences: list[float], seeds: list[SeedMetrics]
) -> list[dict[str, Any]]:
    """At each prevalence: PPV, NPV and the number needed to biopsy as :class:`Estimate` s (the seeds'
    test sensitivity and specificity at the chosen threshold, their replicates from the same draws)."""
    level, policy = proto.bootstrap.ci_level, IntervalPolicy.of(proto)
    rows = []
    for prev in prevalences:  # a loop over the handful of declared prevalences
        per: dict[str, list[Any]] = {"ppv": [], "npv": [], "nnb": [], "ppv_r": [], "npv_r": [], "nnb_r": []}
        for s in seeds:  # a loop over seeds
            ppv, npv = OP.predictive_values_at_prevalence(
                s.values["sensitivity"], s.values["specificity"], prev
            )
            ppv_r, npv_r = OP.predictive_values_at_prevalence(
                s.replicates["sensitivity"], s.replicates["specificity"], prev
            )
            per["ppv"].append(float(ppv))
            per["npv"].append(float(npv))
            per["nnb"].append(_inverse(float(ppv)))
            per["ppv_r"].append(ppv_r)
            per["npv_r"].append(npv_r)
            per["nnb_r"].append(_inverse(ppv_r))
        where = (
            f"test sensitivity and specificity at the chosen threshold, by Bayes' rule at prevalence {prev:g}"
        )
        row: dict[str, Any] = {"prevalence": prev}
        for key, what in (("ppv", "PPV"), ("npv", "NPV"), ("nnb", "number needed to biopsy (1 / PPV)")):
            row[key] = estimate_over_seeds(
                per[key],
                per[f"{key}_r"],
                level=level,
                n=[s.n for s in seeds],
                provenance=f"{what}: {where}",
                policy=policy,
            )
        rows.append(row)
    return rows


def _inverse(x: Any) -> Any:
    """``1 / x``, NaN where ``x`` is 0 or NaN (no positive found: no number needed to biopsy)."""
    a = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a > 0, 1.0 / np.where(a > 0, a, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class DecisionSeed:
    """One seed's decision curve: net benefit of the model and of treating everyone at each threshold
    probability ``(T,)``, and their grouped-bootstrap replicates ``(R, T)``."""

    model: np.ndarray
    treat_all: np.ndarray
    model_replicates: np.ndarray
    treat_all_replicates: np.ndarray


def measure_decision_curve(
    proto: Protocol, y: np.ndarray, score: np.ndarray, groups: np.ndarray
) -> DecisionSeed:
    """The decision curve of one seed's test score, with the protocol's bootstrap."""
    grid = proto.decision_grid()
    model, treat_all = OP.net_benefit(y, score, grid)
    model_r, all_r = OP.bootstrap_net_benefit(
        y, score, groups, grid, n_replicates=proto.bootstrap.replicates, seed=proto.bootstrap.seed
    )
    return DecisionSeed(model, treat_all, model_r, all_r)


def aggregate_decision_curve(proto: Protocol, seeds: list[DecisionSeed]) -> dict[str, Any]:
    """The mean decision curve over seeds with its pooled band, and each seed's curve."""
    level = proto.bootstrap.ci_level
    return {
        "thresholds": proto.decision_grid(),
        "model": np.mean([s.model for s in seeds], axis=0).tolist(),
        "model_ci": pooled_band([s.model_replicates for s in seeds], level),
        "treat_all": np.mean([s.treat_all for s in seeds], axis=0).tolist(),
        "treat_all_ci": pooled_band([s.treat_all_replicates for s in seeds], level),
        "treat_none": 0.0,
        "per_seed": [s.model.tolist() for s in seeds],
        "ci_level": level,
        "provenance": "test, net benefit TP/n - FP/n * t/(1 - t) of treating score >= t (Vickers & Elkin "
        "2006), grouped-bootstrap band pooled over seeds",
    }
