"""ROC curves, AUC, partial AUC and operating points of a binary score (the rule ``score >= threshold``).

Ties are blocks: samples with the same score are called positive or negative together; a tied
positive/negative pair counts 1/2 towards the AUC (Mann-Whitney). Sensitivity ``tp / P`` "reaches" a target
when ``tp / P >= target`` in float64, the same test as the bootstrap's (:mod:`.bootstrap`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError, _check_binary, _check_target, _ratio


def _binary_clf_curve(
    y: np.ndarray,
    s: np.ndarray,
    w: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (fp, tp) weights at each distinct score, scores decreasing (one block per distinct score).

    Zero-weight samples are dropped first (as scikit-learn does), so they never create a threshold.
    """
    if w is not None:
        keep = w != 0
        y, s, w = y[keep], s[keep], w[keep]
    order = np.argsort(s, kind="stable")[::-1]
    s = s[order]
    y = y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, dtype=np.int64)
    if w is None:
        tps = np.cumsum(y, dtype=np.float64)[last]
        fps = (last + 1) - tps
    else:
        w = w[order]
        tps = np.cumsum(w * y)[last]
        fps = np.cumsum(w * ~y)[last]
    return fps, tps, s[last]


def _require_both(fps: np.ndarray, tps: np.ndarray, what: str) -> None:
    if tps.size == 0 or tps[-1] <= 0:
        raise MetricError(f"{what} is undefined: no positive samples (y_true == 1)")
    if fps[-1] <= 0:
        raise MetricError(f"{what} is undefined: no negative samples (y_true == 0)")


def roc_curve(
    y_true: Any,
    scores: Any,
    sample_weight: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score, equal to ``sklearn.metrics.roc_curve(drop_intermediate=False)``.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        scores: ``(n,)`` scores, higher = more positive.
        sample_weight: optional ``(n,)`` non-negative weights (zero-weight samples create no threshold).

    Returns:
        ``(fpr, tpr, thresholds)``, each ``(n_distinct + 1,)``: the first point is ``(0, 0)`` at threshold
        ``inf``; point ``k`` is the rule ``score >= thresholds[k]``.

    Raises:
        MetricError: if either class is absent (the curve is undefined).

    Example:
        >>> fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y, s, w = _check_binary(y_true, scores, sample_weight)
    fps, tps, thr = _binary_clf_curve(y, s, w)
    _require_both(fps, tps, "the ROC curve")
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def _auc_from_curve(fps: np.ndarray, tps: np.ndarray) -> float:
    # Mann-Whitney by blocks: each positive scores the negatives strictly below it plus half its tie block.
    tp = np.diff(tps, prepend=0.0)
    fp = np.diff(fps, prepend=0.0)
    below = fps[-1] - fps
    return float(np.sum(tp * (below + 0.5 * fp)) / (tps[-1] * fps[-1]))


def roc_auc(y_true: Any, scores: Any, sample_weight: Any = None) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative, ties
    counting 1/2 (equal to ``sklearn.metrics.roc_auc_score``, with or without ``sample_weight``).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        scores: ``(n,)`` scores.
        sample_weight: optional ``(n,)`` non-negative weights (a weight counts the sample that many times).

    Raises:
        MetricError: if either class is absent.

    Example:
        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
        >>> roc_auc([0, 1], [0.5, 0.5])
        0.5
    """
    y, s, w = _check_binary(y_true, scores, sample_weight)
    fps, tps, _ = _binary_clf_curve(y, s, w)
    _require_both(fps, tps, "ROC AUC")
    return _auc_from_curve(fps, tps)


def partial_auc_above_sensitivity(y_true: Any, scores: Any, min_sensitivity: float) -> float:
    """Area under the ROC curve restricted to sensitivity (TPR) ``>= min_sensitivity``, divided by
    ``1 - min_sensitivity`` so that a perfect classifier scores 1.0 and a random one ``(1 - m) / 2``.

    ``pAUC = 1 / (1 - m) * integral_{tpr=m}^{1} (1 - fpr(tpr)) d tpr`` over the piecewise-linear ROC curve
    (ties are diagonal segments). This is the ISIC 2024 challenge's "pAUC above 80% TPR" divided by
    ``1 - m``; ``m = 0`` gives the full AUC.

    Example:
        >>> partial_auc_above_sensitivity([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.8)
        1.0
        >>> round(partial_auc_above_sensitivity([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.5), 6)
        0.5
    """
    m = float(min_sensitivity)
    if not 0.0 <= m < 1.0:
        raise MetricError(f"min_sensitivity must be in [0, 1), got {m}")
    fpr, tpr, _ = roc_curve(y_true, scores)
    t0, t1 = tpr[:-1], tpr[1:]
    f0, f1 = fpr[:-1], fpr[1:]
    rising = t1 > t0
    lo = np.maximum(t0, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(rising, (lo - t0) / np.where(rising, t1 - t0, 1.0), 0.0)
    f_lo = f0 + frac * (f1 - f0)
    height = np.where(t1 > lo, t1 - lo, 0.0)
    area = np.sum(height * (1.0 - 0.5 * (f1 + f_lo)))
    return float(area / (1.0 - m))


def _threshold_block(tps: np.ndarray, target: float) -> int:
    """Index of the first block (scores decreasing) whose cumulative sensitivity reaches ``target``."""
    reach = (tps / tps[-1]) >= target
    return int(np.argmax(reach))


def threshold_at_sensitivity(y_true: Any, scores: Any, target: float, sample_weight: Any = None) -> float:
    """The largest distinct score value ``t`` such that the rule ``score >= t`` has sensitivity
    ``>= target`` (the operating point with the most specificity that still reaches the target).

    Raises:
        MetricError: if there is no positive sample, or ``target`` is not in (0, 1].

    Example:
        >>> threshold_at_sensitivity([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 0.6)
        0.6
    """
    target = _check_target(target)
    y, s, w = _check_binary(y_true, scores, sample_weight)
    fps, tps, thr = _binary_clf_curve(y, s, w)
    if tps.size == 0 or tps[-1] <= 0:
        raise MetricError("threshold at sensitivity is undefined: no positive samples (y_true == 1)")
    return float(thr[_threshold_block(tps, target)])


def specificity_at_sensitivity(
    y_true: Any,
    scores: Any,
    target: float,
    sample_weight: Any = None,
) -> tuple[float, float]:
    """Specificity at the threshold :func:`threshold_at_sensitivity` picks on the same data.

    This is optimistic when used on a test split (the threshold is tuned on the data it is scored on); the
    same semantics as torchmetrics' ``BinarySpecificityAtSensitivity`` (largest specificity over thresholds
    whose sensitivity reaches the target).

    Returns:
        ``(specificity, threshold)``.

    Raises:
        MetricError: if either class is absent.

    Example:
        >>> specificity_at_sensitivity([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 0.6)
        (1.0, 0.6)
        >>> specificity_at_sensitivity([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 1.0)
        (0.5, 0.2)
    """
    target = _check_target(target)
    y, s, w = _check_binary(y_true, scores, sample_weight)
    fps, tps, thr = _binary_clf_curve(y, s, w)
    _require_both(fps, tps, "specificity at sensitivity")
    k = _threshold_block(tps, target)
    return float(1.0 - fps[k] / fps[-1]), float(thr[k])


def binary_metrics_at_threshold(
    y_true: Any,
    scores: Any,
    threshold: float,
    sample_weight: Any = None,
) -> dict[str, float]:
    """Counts and rates of the rule ``score >= threshold``.

    Returns:
        ``tp, fp, tn, fn`` (weighted counts, floats) and ``sensitivity = tp/(tp+fn)``,
        ``specificity = tn/(tn+fp)``, ``ppv = tp/(tp+fp)``, ``npv = tn/(tn+fn)``; a rate whose denominator is
        0 (no positives, no negatives, nothing or everything called positive) is ``nan``.

    Example:
        >>> m = binary_metrics_at_threshold([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 0.25)
        >>> m["tp"], m["fp"], m["sensitivity"], m["ppv"]
        (2.0, 1.0, 0.6666666666666666, 0.6666666666666666)
    """
    y, s, w = _check_binary(y_true, scores, sample_weight)
    if math.isnan(float(threshold)):
        raise MetricError("threshold is NaN")
    if w is None:
        w = np.ones_like(s)
    called = s >= float(threshold)
    tp = float(np.sum(w[called & y]))
    fp = float(np.sum(w[called & ~y]))
    fn = float(np.sum(w[~called & y]))
    tn = float(np.sum(w[~called & ~y]))
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def sensitivity_at_specificity(
    y_true: Any,
    scores: Any,
    specificity: float,
    sample_weight: Any = None,
) -> tuple[float, float]:
    """Sensitivity at the smallest threshold whose specificity still reaches ``specificity``: the largest
    sensitivity among ROC points with ``1 - fpr >= specificity`` (in float64), chosen on the same data.

    The mirror of :func:`specificity_at_sensitivity`: "at the readers' specificity, the model's sensitivity
    was ..." (Haenssle et al. 2018).

    Returns:
        ``(sensitivity, threshold)``; the threshold is ``inf`` when only the point ``(0, 0)`` qualifies.

    Raises:
        MetricError: if either class is absent, or ``specificity`` is not in (0, 1].

    Example:
        >>> sensitivity_at_specificity([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 0.5)
        (1.0, 0.2)
        >>> sensitivity_at_specificity([0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.9], 1.0)
        (0.6666666666666666, 0.6)
    """
    specificity = _check_target(specificity, what="specificity")
    y, s, w = _check_binary(y_true, scores, sample_weight)
    fps, tps, thr = _binary_clf_curve(y, s, w)
    _require_both(fps, tps, "sensitivity at specificity")
    ok = 1.0 - fps / fps[-1] >= specificity  # a prefix: fps grows as the threshold falls
    if not ok.any():
        return 0.0, math.inf
    k = int(np.flatnonzero(ok)[-1])
    return float(tps[k] / tps[-1]), float(thr[k])


def roc_polyline_height(fpr: Any, tpr: Any, x: Any) -> np.ndarray:
    """Height of the ROC polyline (points joined by straight lines) at false-positive rates ``x``; at a
    vertical step, its top. A rate within 1e-12 of a point's counts as on it (``1 - 0.8`` is rarely
    ``0.2`` in floating point).

    Args:
        fpr, tpr: ROC points sorted by increasing ``fpr`` (ties: increasing ``tpr``), from (0, 0) to (1, 1),
            as :func:`roc_curve` returns them.
        x: ``(k,)`` false-positive rates.

    Example:
        >>> roc_polyline_height([0.0, 0.0, 0.5, 1.0], [0.0, 0.6, 0.9, 1.0], [0.0, 0.25, 0.75]).tolist()
        [0.6, 0.75, 0.95]
    """
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    x = np.asarray(x, np.float64)
    ux, first = np.unique(fpr, return_index=True)
    hi, lo = np.maximum.reduceat(tpr, first), np.minimum.reduceat(tpr, first)  # top / bottom of each step
    tol = 1e-12
    k = np.clip(np.searchsorted(ux, x + tol, side="right") - 1, 0, len(ux) - 1)
    at = np.abs(ux[k] - x) <= tol
    nxt = np.minimum(k + 1, len(ux) - 1)
    span = np.where(nxt > k, ux[nxt] - ux[k], 1.0)
    frac = np.where(nxt > k, np.clip((x - ux[k]) / span, 0.0, 1.0), 0.0)
    between = hi[k] + frac * (lo[nxt] - hi[k])
    return np.where(at, hi[k], between)
