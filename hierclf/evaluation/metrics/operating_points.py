"""Operating-point rules beyond the target sensitivity, the numbers at a declared prevalence, and decision
curves (net benefit), each with its grouped bootstrap vectorised over replicates.

Rules (the rule ``score >= threshold``, thresholds among the data's distinct scores, as in :mod:`.roc`):

* :func:`threshold_at_specificity`: the smallest threshold whose specificity reaches the target (the most
  sensitive operating point that keeps the specificity);
* :func:`threshold_at_minimum_cost`: the threshold minimising the expected cost per case
  ``prevalence * c_fn * (1 - sensitivity) + (1 - prevalence) * c_fp * (1 - specificity)``; calling nobody
  is a candidate (cost ``prevalence * c_fn``); ties go to the lower threshold (the more sensitive point).

Calling nobody is the threshold just above the largest score (``nextafter(max, inf)``), a finite number.
:func:`bootstrap_thresholds` re-chooses either rule in every replicate of a grouped bootstrap; replicate
``r`` equals the rule on the data weighted by the group draws (zero-weight samples create no threshold).

At a prevalence ``p`` that differs from the test mix, Bayes' rule gives ``PPV = sens p / (sens p +
(1 - spec)(1 - p))`` and ``NPV = spec (1 - p) / (spec (1 - p) + (1 - sens) p)``
(:func:`predictive_values_at_prevalence`); the number needed to biopsy is ``1 / PPV``.

Net benefit at threshold probability ``t`` (Vickers & Elkin 2006): ``TP / n - FP / n * t / (1 - t)``, with
``score >= t`` treated; treating everyone gives ``prevalence - (1 - prevalence) t / (1 - t)``, treating
nobody 0 (:func:`net_benefit`, :func:`bootstrap_net_benefit`: the replicates are one dense product of the
group draws with the per-group counts at every threshold).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError, _check_binary, _check_target
from hierclf.evaluation.metrics.resampling import (
    _check_replicates,
    _chunk_rows,
    _group_index,
    per_group_sums,
    replicate_map,
)
from hierclf.evaluation.metrics.roc import _binary_clf_curve, _require_both

__all__ = [
    "bootstrap_net_benefit",
    "bootstrap_thresholds",
    "net_benefit",
    "predictive_values_at_prevalence",
    "threshold_at_minimum_cost",
    "threshold_at_specificity",
]


def _check_cost(cost_false_negative: float, cost_false_positive: float, prevalence: float) -> None:
    if not (cost_false_negative > 0 and cost_false_positive > 0):
        raise MetricError(f"costs must be > 0, got c_fn={cost_false_negative}, c_fp={cost_false_positive}")
    if not 0.0 < prevalence < 1.0:
        raise MetricError(f"prevalence must be in (0, 1), got {prevalence}")


def _above(top: float) -> float:
    """The threshold that calls nobody: just above the largest score."""
    return float(np.nextafter(top, math.inf))


def threshold_at_specificity(y_true: Any, scores: Any, target: float, sample_weight: Any = None) -> float:
    """The smallest distinct score ``t`` such that ``score >= t`` has specificity ``>= target`` (float64);
    just above the largest score when no score qualifies.

    Example:
        >>> threshold_at_specificity([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 0.5)
        0.2
        >>> threshold_at_specificity([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 1.0)
        0.6
    """
    target = _check_target(target, what="target specificity")
    y, s, w = _check_binary(y_true, scores, sample_weight)
    fps, tps, thr = _binary_clf_curve(y, s, w)
    _require_both(fps, tps, "threshold at specificity")
    ok = 1.0 - fps / fps[-1] >= target  # a prefix: fps grows as the threshold falls
    return float(thr[np.flatnonzero(ok)[-1]]) if ok.any() else _above(thr[0])


def _costs(fps: np.ndarray, tps: np.ndarray, c_fn: float, c_fp: float, prevalence: float) -> np.ndarray:
    """Expected cost per case of calling nobody (column 0) and of each block's threshold, ``(..., K + 1)``;
    ``fps``/``tps`` cumulative ``(..., K)`` with totals in the last column."""
    sens = tps / tps[..., -1:]
    fpr = fps / fps[..., -1:]
    cost = prevalence * c_fn * (1.0 - sens) + (1.0 - prevalence) * c_fp * fpr
    none = np.full(cost.shape[:-1] + (1,), prevalence * c_fn)
    return np.concatenate([none, cost], axis=-1)


def threshold_at_minimum_cost(
    y_true: Any,
    scores: Any,
    *,
    cost_false_negative: float,
    cost_false_positive: float,
    prevalence: float,
    sample_weight: Any = None,
) -> float:
    """The threshold of minimum expected cost per case at ``prevalence`` (see the module docstring).

    Example:
        >>> y, s = [0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9]
        >>> threshold_at_minimum_cost(y, s, cost_false_negative=10, cost_false_positive=1, prevalence=0.5)
        0.2
        >>> threshold_at_minimum_cost(y, s, cost_false_negative=1, cost_false_positive=1, prevalence=0.01)
        0.6
        >>> threshold_at_minimum_cost([0, 1], [0.9, 0.1], cost_false_negative=1, cost_false_positive=2,
        ...     prevalence=0.5)  # nobody called: just above the largest score
        0.9000000000000001
    """
    _check_cost(cost_false_negative, cost_false_positive, prevalence)
    y, s, w = _check_binary(y_true, scores, sample_weight)
    fps, tps, thr = _binary_clf_curve(y, s, w)
    _require_both(fps, tps, "threshold at minimum cost")
    cost = _costs(fps, tps, cost_false_negative, cost_false_positive, prevalence)
    k = cost.size - 1 - int(np.argmin(cost[::-1]))  # ties: the last, i.e. the lowest threshold
    return _above(thr[0]) if k == 0 else float(thr[k - 1])


def _rule_of(rule: str, **options: float) -> Any:
    """The per-replicate chooser: ``(fps, tps, has_weight) (chunk, K) -> block index (chunk,)`` (-1: none)."""
    if rule == "target_sensitivity":
        sens_target = _check_target(options["target"])

        def choose_sensitivity(fps: np.ndarray, tps: np.ndarray, has: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                reach = tps / tps[:, -1:] >= sens_target  # reached first at a block of positives
            return np.argmax(reach, axis=1)

        return choose_sensitivity
    if rule == "target_specificity":
        target = _check_target(options["target"], what="target specificity")

        def choose(fps: np.ndarray, tps: np.ndarray, has: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                ok = (1.0 - fps / fps[:, -1:] >= target) & has
            last = ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
            return np.where(ok.any(axis=1), last, -1)

        return choose
    if rule == "minimum_cost":
        c_fn, c_fp, prev = (
            options["cost_false_negative"],
            options["cost_false_positive"],
            options["prevalence"],
        )
        _check_cost(c_fn, c_fp, prev)

        def choose_cost(fps: np.ndarray, tps: np.ndarray, has: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                cost = _costs(fps, tps, c_fn, c_fp, prev)
            cost[:, 1:][~has] = np.inf  # a block nobody was drawn into is no threshold of the replicate
            return cost.shape[1] - 2 - np.argmin(cost[:, ::-1], axis=1)

        return choose_cost
    raise MetricError(
        f"unknown operating-point rule {rule!r}; expected target_sensitivity, target_specificity or "
        "minimum_cost"
    )


def bootstrap_thresholds(
    y_true: Any,
    scores: Any,
    groups: Any,
    rule: str,
    *,
    n_replicates: int = 1000,
    seed: int = 0,
    **options: float,
) -> np.ndarray:
    """The threshold of ``rule`` (``"target_sensitivity"`` or ``"target_specificity"`` with ``target``, or
    ``"minimum_cost"`` with
    ``cost_false_negative``, ``cost_false_positive``, ``prevalence``) re-chosen in each replicate of the
    grouped bootstrap (the draws of :func:`~.resampling.grouped_bootstrap_counts` for the same seed).

    Returns:
        ``(n_replicates,)`` thresholds; NaN where a replicate missed a class.
    """
    y, s, _ = _check_binary(y_true, scores)
    choose = _rule_of(rule, **options)
    n_replicates = _check_replicates(n_replicates)
    inverse, n_groups = _group_index(groups, s.size)
    order = np.argsort(s, kind="stable")[::-1]
    ys, ss, inv = y[order].astype(np.float64), s[order], inverse[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1]
    thr = ss[last]

    def run(counts: np.ndarray) -> np.ndarray:
        w = np.take(counts, inv, axis=1).astype(np.float64)
        tps = np.cumsum(w * ys, axis=1)[:, last]
        fps = np.cumsum(w * (1.0 - ys), axis=1)[:, last]
        has = np.diff(tps + fps, axis=1, prepend=0.0) > 0
        k = choose(fps, tps, has)
        first = np.argmax(has, axis=1)
        out = np.where(k >= 0, thr[np.maximum(k, 0)], np.nextafter(thr[first], math.inf))
        return np.where((tps[:, -1] > 0) & (fps[:, -1] > 0), out, np.nan)

    rng = np.random.default_rng(seed)
    chunk = _chunk_rows(8 * 4 * max(s.size, 1), n_replicates)
    return np.concatenate(replicate_map(run, n_groups, n_replicates, rng, chunk=chunk))


def predictive_values_at_prevalence(
    sensitivity: Any, specificity: Any, prevalence: float
) -> tuple[np.ndarray, np.ndarray]:
    """PPV and NPV at ``prevalence`` by Bayes' rule, elementwise over arrays (replicates); NaN where the
    denominator is 0.

    Example:
        >>> ppv, npv = predictive_values_at_prevalence(0.9, 0.8, 0.02)
        >>> round(float(ppv), 4), round(float(npv), 4)
        (0.0841, 0.9975)
    """
    if not 0.0 < prevalence < 1.0:
        raise MetricError(f"prevalence must be in (0, 1), got {prevalence}")
    sens = np.asarray(sensitivity, dtype=np.float64)
    spec = np.asarray(specificity, dtype=np.float64)
    tp, fp = sens * prevalence, (1.0 - spec) * (1.0 - prevalence)
    tn, fn = spec * (1.0 - prevalence), (1.0 - sens) * prevalence
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), np.nan)
        npv = np.where(tn + fn > 0, tn / np.where(tn + fn > 0, tn + fn, 1.0), np.nan)
    return ppv, npv


def _check_probability_thresholds(thresholds: Any) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0 or not ((t > 0) & (t < 1)).all():
        raise MetricError("decision-curve thresholds must be a non-empty list of numbers in (0, 1)")
    return t


def _benefit_columns(y: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(n, 2 T + 1)``: true positives and false positives at each threshold, then the positives."""
    treated = s[:, None] >= t[None, :]
    pos = y[:, None]
    return np.concatenate([treated & pos, treated & ~pos, pos], axis=1).astype(np.float64)


def _benefit_from_sums(sums: np.ndarray, n: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = t.size
    odds = t / (1.0 - t)
    with np.errstate(invalid="ignore", divide="ignore"):
        model = sums[..., :k] / n[..., None] - sums[..., k : 2 * k] / n[..., None] * odds
        prev = sums[..., 2 * k] / n
    treat_all = prev[..., None] - (1.0 - prev[..., None]) * odds
    return model, treat_all


def net_benefit(y_true: Any, scores: Any, thresholds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Net benefit of the model and of treating everyone at each threshold probability, ``(T,)`` each.

    Example:
        >>> model, all_ = net_benefit([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.6], [0.25, 0.5])
        >>> model.round(4).tolist(), all_.round(4).tolist()
        ([0.4167, 0.0], [0.3333, 0.0])
    """
    y, s, _ = _check_binary(y_true, scores)
    t = _check_probability_thresholds(thresholds)
    if s.size == 0:
        raise MetricError("net benefit is undefined on an empty data set")
    sums = _benefit_columns(y, s, t).sum(axis=0)
    return _benefit_from_sums(sums, np.asarray(float(s.size)), t)


def bootstrap_net_benefit(
    y_true: Any, scores: Any, groups: Any, thresholds: Any, *, n_replicates: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Grouped-bootstrap replicates of :func:`net_benefit`: ``(n_replicates, T)`` for the model and for
    treating everyone (the draws of :func:`~.resampling.grouped_bootstrap_counts` for the same seed)."""
    y, s, _ = _check_binary(y_true, scores)
    t = _check_probability_thresholds(thresholds)
    n_replicates = _check_replicates(n_replicates)
    columns = np.concatenate([_benefit_columns(y, s, t), np.ones((s.size, 1))], axis=1)
    group, n_groups = _group_index(groups, s.size)
    if n_groups == 0:
        raise MetricError("cannot bootstrap an empty data set")
    table = per_group_sums(columns, group, n_groups)  # dense (every threshold below a score is treated)

    def sums(counts: np.ndarray) -> np.ndarray:
        return counts.astype(np.float64) @ table  # one BLAS product per chunk

    rng = np.random.default_rng(seed)
    chunk = _chunk_rows(8 * n_groups, n_replicates)
    reps = np.concatenate(replicate_map(sums, n_groups, n_replicates, rng, chunk=chunk))
    return _benefit_from_sums(reps[:, :-1], reps[:, -1], t)
