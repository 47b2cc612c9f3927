"""Numeric evaluation metrics: ROC, operating points, multi-class summaries, calibration, hierarchy-aware
errors and a grouped (patient-level) bootstrap vectorised over replicates.

Everything here is pure numpy: arrays in, float64 results out, no Python loop over samples (loops run over a
handful of classes, tree levels or replicate chunks). Conventions, shared by every binary function:

* ``y_true`` holds 0/1 (or bool); ``scores`` are floats, higher means more positive; a sample is called
  positive when ``score >= threshold``.
* Ties are handled as blocks: all samples with the same score are called positive or negative together, and
  a tied positive/negative pair counts 1/2 towards the AUC (Mann-Whitney).
* Sensitivity ``tp / P`` "reaches" a target when ``tp / P >= target`` evaluated in float64 (the same test in
  every function, so weighted, unweighted and bootstrap thresholds agree exactly).
* Degenerate splits: functions that need both classes (ROC, AUC, specificity at sensitivity) raise
  :class:`MetricError`; ratios of counts at a fixed threshold (PPV with nothing called positive, ...) are
  ``nan``; bootstrap replicates that miss a class are ``nan`` and counted.

``docs/metrics.md`` defines every metric precisely; scikit-learn is the reference in
``tests/test_metrics.py``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hierclf.errors import HierclfError

if TYPE_CHECKING:
    from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = [
    "BootstrapEstimate",
    "BootstrapResult",
    "MetricError",
    "balanced_accuracy",
    "binary_metrics_at_threshold",
    "bootstrap_binary",
    "confusion_matrix",
    "expected_calibration_error",
    "grouped_bootstrap_counts",
    "hierarchical_prf",
    "macro_ovr_auc",
    "mistake_severity",
    "partial_auc_above_sensitivity",
    "per_class_recall",
    "percentile_ci",
    "reliability_curve",
    "roc_auc",
    "roc_curve",
    "specificity_at_sensitivity",
    "threshold_at_sensitivity",
]

#: Memory bound (bytes) for the per-chunk work arrays of the bootstrap.
_CHUNK_BYTES = 16 * 2**20


class MetricError(HierclfError, ValueError):
    """A metric cannot be computed from the given input (wrong shape, NaN, a class missing, ...)."""


# ----------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------


def _check_binary(
    y_true: Any,
    scores: Any,
    sample_weight: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise MetricError(f"y_true and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise MetricError(f"y_true has {y.shape[0]} samples but scores has {s.shape[0]}")
    if y.dtype != np.bool_:
        if y.size and not np.isin(y, (0, 1)).all():
            bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
            raise MetricError(f"y_true must hold only 0/1 (or bool), found {bad.tolist()}")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise MetricError(f"scores contain {int((~np.isfinite(s)).sum())} NaN or infinite value(s)")
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != s.shape:
            raise MetricError(f"sample_weight has shape {w.shape}, expected {s.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise MetricError("sample_weight must be finite and non-negative")
    return y, s, w


def _check_target(target: float, what: str = "target sensitivity") -> float:
    target = float(target)
    if not 0.0 < target <= 1.0:
        raise MetricError(f"{what} must be in (0, 1], got {target}")
    return target


def _check_labels(y: Any, n_classes: int, what: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise MetricError(f"{what} must be 1-D class indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise MetricError(f"{what} must hold integer class indices, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if a.size and (a.min() < 0 or a.max() >= n_classes):
        raise MetricError(f"{what} must be in [0, {n_classes}), found values {a.min()}..{a.max()}")
    return a


# ----------------------------------------------------------------------------------------------------------
# ROC and operating points
# ----------------------------------------------------------------------------------------------------------


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


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


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


# ----------------------------------------------------------------------------------------------------------
# multi-class summaries
# ----------------------------------------------------------------------------------------------------------


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts, rows = true class, columns = predicted class (as sklearn).

    Example:
        >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3).tolist()
        [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    if int(n_classes) < 1:
        raise MetricError(f"n_classes must be >= 1, got {n_classes}")
    t = _check_labels(y_true, n_classes, "y_true")
    p = _check_labels(y_pred, n_classes, "y_pred")
    if t.shape != p.shape:
        raise MetricError(f"y_true has {t.size} samples but y_pred has {p.size}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_recall(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """``(n_classes,)`` recall of each class (diagonal / row sum); ``nan`` for classes absent from ``y_true``.

    Example:
        >>> per_class_recall([0, 1, 1], [0, 1, 0], 3).tolist()
        [1.0, 0.5, nan]
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y_true: Any, y_pred: Any, n_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (Esteva et al.'s "mean of per-class
    accuracies"; equal to ``sklearn.metrics.balanced_accuracy_score``). ``nan`` for empty input.

    Example:
        >>> balanced_accuracy([0, 1, 1], [0, 1, 0], 3)
        0.75
    """
    recall = per_class_recall(y_true, y_pred, n_classes)
    present = ~np.isnan(recall)
    return float(recall[present].mean()) if present.any() else math.nan


def macro_ovr_auc(y_true: Any, probs: Any) -> float:
    """Unweighted mean of one-vs-rest ROC AUCs ``roc_auc(y_true == c, probs[:, c])`` over the classes ``c``
    present in ``y_true`` (equal to ``sklearn.metrics.roc_auc_score(multi_class="ovr", average="macro")``
    when every class is present).

    Args:
        y_true: ``(n,)`` class indices.
        probs: ``(n, n_classes)`` scores.

    Raises:
        MetricError: if fewer than two classes are present (no one-vs-rest AUC is defined).

    Example:
        >>> macro_ovr_auc([0, 1, 2], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
        1.0
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise MetricError(f"probs must be (n, n_classes), got shape {p.shape}")
    t = _check_labels(y_true, p.shape[1], "y_true")
    if t.shape[0] != p.shape[0]:
        raise MetricError(f"y_true has {t.shape[0]} samples but probs has {p.shape[0]} rows")
    present = np.flatnonzero(np.bincount(t, minlength=p.shape[1]))
    if present.size < 2:
        raise MetricError(f"macro one-vs-rest AUC needs at least two classes in y_true, found {present.size}")
    # a loop over classes (a handful), each AUC vectorised over samples
    return float(np.mean([roc_auc(t == c, p[:, c]) for c in present]))


# ----------------------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------------------


def _calibration_inputs(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim == 2:  # top-label: confidence = max probability, correct = argmax == y
        t = _check_labels(y_true, p.shape[1], "y_true")
        if t.shape[0] != p.shape[0]:
            raise MetricError(f"y_true has {t.shape[0]} samples but prob has {p.shape[0]} rows")
        conf = p.max(axis=1)
        hit = (p.argmax(axis=1) == t).astype(np.float64)
    elif p.ndim == 1:
        y, _, _ = _check_binary(y_true, p)
        conf, hit = p, y.astype(np.float64)
    else:
        raise MetricError(f"prob must be (n,) or (n, n_classes), got shape {p.shape}")
    if not np.isfinite(conf).all() or (conf < 0).any() or (conf > 1).any():
        raise MetricError("probabilities must be finite and in [0, 1]")
    return conf, hit


def reliability_curve(y_true: Any, prob: Any, n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability diagram data over ``n_bins`` equal-width bins ``(b/M, (b+1)/M]`` (0 falls in bin 0).

    Args:
        y_true: ``(n,)`` 0/1 event indicators for a 1-D ``prob`` (e.g. "true leaf under this node" with
            ``prob = P(node)``), or class indices for a 2-D ``prob`` (top-label calibration).
        prob: ``(n,)`` event probabilities or ``(n, n_classes)`` class probabilities.
        n_bins: number of bins.

    Returns:
        ``(bin_confidence, bin_accuracy, bin_count)``, each ``(n_bins,)``: mean predicted probability,
        observed frequency, and count in each bin (``nan`` for empty bins).

    Example:
        >>> conf, acc, cnt = reliability_curve([0, 1, 1, 1], [0.2, 0.4, 0.9, 1.0], n_bins=2)
        >>> conf.tolist(), acc.tolist(), cnt.tolist()
        ([0.30000000000000004, 0.95], [0.5, 1.0], [2, 2])
    """
    if int(n_bins) < 1:
        raise MetricError(f"n_bins must be >= 1, got {n_bins}")
    conf, hit = _calibration_inputs(y_true, prob)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / count
        mean_hit = np.bincount(b, weights=hit, minlength=n_bins) / count
    return mean_conf, mean_hit, count


def expected_calibration_error(y_true: Any, prob: Any, n_bins: int = 15) -> float:
    """``ECE = sum_b (n_b / n) |accuracy_b - confidence_b|`` over the bins of :func:`reliability_curve`
    (Guo et al. 2017). ``nan`` for empty input.

    Example:
        >>> round(expected_calibration_error([0, 1, 1, 1], [0.2, 0.4, 0.9, 1.0], n_bins=2), 6)
        0.125
    """
    conf, acc, count = reliability_curve(y_true, prob, n_bins)
    n = count.sum()
    if n == 0:
        return math.nan
    used = count > 0
    return float(np.sum(count[used] / n * np.abs(acc[used] - conf[used])))


# ----------------------------------------------------------------------------------------------------------
# hierarchy-aware metrics
# ----------------------------------------------------------------------------------------------------------


def _check_rows(x: Any, n: int, what: str) -> np.ndarray:
    return _check_labels(x, n, what)


def mistake_severity(
    true_leaf_idx: Any,
    pred_leaf_idx: Any,
    taxonomy: Taxonomy,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample tree distance and LCA height between true and predicted leaves (Bertinetto et al. 2020,
    "Making Better Mistakes").

    Args:
        true_leaf_idx: ``(n,)`` column indices into ``taxonomy.leaves``.
        pred_leaf_idx: ``(n,)`` column indices into ``taxonomy.leaves``.
        taxonomy: the tree.

    Returns:
        ``(distance, lca_height)``, each ``(n,)`` int64: ``distance`` is the number of edges on the tree path
        (``taxonomy.distance``); ``lca_height`` is the height of the lowest common ancestor, i.e. the edges on
        the longest downward path from it to a leaf (0 for a correct prediction). In a tree whose leaves all
        sit at the same depth this equals ``taxonomy.height - depth(lca)``, the paper's definition.

    Example:
        >>> from hierclf.taxonomy.synthetic import random_taxonomy
        >>> tax = random_taxonomy(6, max_depth=3, seed=0)
        >>> d, h = mistake_severity([0, 0], [0, 5], tax)
        >>> d.tolist()[0], h.tolist()[0]
        (0, 0)
    """
    index = taxonomy.index
    t = index.leaf_rows[_check_rows(true_leaf_idx, index.n_leaves, "true_leaf_idx")]
    p = index.leaf_rows[_check_rows(pred_leaf_idx, index.n_leaves, "pred_leaf_idx")]
    if t.shape != p.shape:
        raise MetricError(f"true_leaf_idx has {t.size} samples but pred_leaf_idx has {p.size}")
    lca = index.lca(t, p)
    depth = index.depth
    return depth[t] + depth[p] - 2 * depth[lca], index.height[lca]


def hierarchical_prf(
    true_node_idx: Any,
    pred_node_idx: Any,
    taxonomy: Taxonomy,
) -> tuple[float, float, float]:
    """Hierarchical precision, recall and F1 (Kiritchenko et al. 2006; the definitions HiClass implements,
    Miranda et al. 2023), micro-averaged over samples.

    With ``anc(x)`` = the node ``x`` and its ancestors, excluding the root:
    ``hP = sum_i |anc(pred_i) & anc(true_i)| / sum_i |anc(pred_i)|``,
    ``hR = sum_i |anc(pred_i) & anc(true_i)| / sum_i |anc(true_i)|``, ``hF = 2 hP hR / (hP + hR)``.
    Since ``|anc(x)| = depth(x)`` and the intersection is ``anc(lca)``, these are sums of depths.
    A ratio with a zero denominator (every prediction is the root) is ``nan``.

    Args:
        true_node_idx: ``(n,)`` rows into ``taxonomy.nodes`` (pre-order).
        pred_node_idx: ``(n,)`` rows into ``taxonomy.nodes``.
        taxonomy: the tree.

    Example:
        >>> from hierclf.taxonomy.synthetic import random_taxonomy
        >>> tax = random_taxonomy(6, max_depth=3, seed=0)
        >>> hierarchical_prf([1, 2], [1, 2], tax)
        (1.0, 1.0, 1.0)
    """
    index = taxonomy.index
    t = _check_rows(true_node_idx, index.n_nodes, "true_node_idx")
    p = _check_rows(pred_node_idx, index.n_nodes, "pred_node_idx")
    if t.shape != p.shape:
        raise MetricError(f"true_node_idx has {t.size} samples but pred_node_idx has {p.size}")
    depth = index.depth
    common = float(depth[index.lca(t, p)].sum())
    precision = _ratio(common, float(depth[p].sum()))
    recall = _ratio(common, float(depth[t].sum()))
    f1 = (
        _ratio(2 * precision * recall, precision + recall)
        if not (math.isnan(precision) or math.isnan(recall))
        else math.nan
    )
    return precision, recall, f1


# ----------------------------------------------------------------------------------------------------------
# grouped bootstrap
# ----------------------------------------------------------------------------------------------------------


def percentile_ci(values: Any, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval ``(q_{(1-level)/2}, q_{(1+level)/2})`` of ``values``, ignoring ``nan``;
    ``(nan, nan)`` when every value is ``nan``.

    Example:
        >>> percentile_ci([0.0, 1.0, 2.0, 3.0, 4.0, np.nan], level=0.5)
        (1.0, 3.0)
    """
    level = float(level)
    if not 0.0 < level < 1.0:
        raise MetricError(f"CI level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def _group_index(groups: Any, n: int) -> tuple[np.ndarray, int]:
    """``(n,)`` group number of each sample and the number of groups (each sample its own group if None)."""
    if groups is None:
        return np.arange(n, dtype=np.int64), n
    g = np.asarray(groups)
    if g.shape != (n,):
        raise MetricError(f"groups has shape {g.shape}, expected ({n},)")
    try:
        _, inverse = np.unique(g, return_inverse=True)
    except TypeError as exc:  # e.g. a mix of str and None
        raise MetricError(f"group labels must be all strings or all numbers ({exc})") from None
    inverse = inverse.ravel().astype(np.int64)
    return inverse, int(inverse.max()) + 1 if n else 0


def _draw_counts(rng: np.random.Generator, n_groups: int, rows: int) -> np.ndarray:
    """Multinomial group counts of ``rows`` replicates: each draws ``n_groups`` groups with replacement.

    Returns ``(rows, n_groups)`` int64. Counting uniform draws gives exactly the multinomial distribution and
    is much faster than ``Generator.multinomial`` over thousands of groups. The draws are one
    ``rng.integers`` call per chunk (32-bit words, buffered in the bit generator across calls), so the result
    does not depend on how replicates are chunked. Counting is one ``bincount`` per row: measured six times
    faster than a single ``bincount`` over row-offset ids, which must materialise 64-bit ids.
    """
    dtype = np.uint32 if n_groups < 2**32 else np.int64
    draws = rng.integers(0, n_groups, size=(rows, n_groups), dtype=dtype)
    counts = np.empty((rows, n_groups), dtype=np.int64)
    for r in range(rows):  # a loop over replicates, each counting n_groups draws at once
        counts[r] = np.bincount(draws[r], minlength=n_groups)
    return counts


def _n_jobs(n_jobs: int | None) -> int:
    if n_jobs is not None:
        if int(n_jobs) < 1:
            raise MetricError(f"n_jobs must be >= 1, got {n_jobs}")
        return int(n_jobs)
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def _chunk_rows(per_row_bytes: int, n_replicates: int) -> int:
    return int(max(1, min(n_replicates, _CHUNK_BYTES // max(per_row_bytes, 1))))


def _check_replicates(n_replicates: int) -> int:
    n_replicates = int(n_replicates)
    if n_replicates < 1:
        raise MetricError(f"n_replicates must be >= 1, got {n_replicates}")
    return n_replicates


def grouped_bootstrap_counts(
    groups: Any,
    n_replicates: int,
    seed: int | np.random.Generator = 0,
    *,
    n_samples: int | None = None,
    chunk_size: int | None = None,
) -> Iterator[np.ndarray]:
    """Bootstrap resampling of groups (patients, lesions), as per-sample count matrices in chunks.

    Each replicate draws ``n_groups`` groups with replacement (a multinomial over groups with equal
    probabilities); every sample of a group drawn ``k`` times gets count ``k``. Replicate ``r``'s resampled
    data set is every sample repeated ``count[r, i]`` times. The draws are one random stream, so the counts do
    not depend on ``chunk_size``.

    Args:
        groups: ``(n,)`` group labels, or None (``n_samples`` then required) for a row-level bootstrap.
        n_replicates: number of replicates.
        seed: seed or ``numpy.random.Generator``.
        n_samples: number of samples when ``groups`` is None.
        chunk_size: replicates per chunk (default: chunks of about 16 MB).

    Yields:
        ``(chunk, n)`` int64 count matrices; rows sum to the resampled data-set size.

    Example:
        >>> chunks = list(grouped_bootstrap_counts(["a", "a", "b"], n_replicates=4, seed=0))
        >>> counts = np.concatenate(chunks)
        >>> counts.shape, bool((counts[:, 0] == counts[:, 1]).all())
        ((4, 3), True)
    """
    n_replicates = _check_replicates(n_replicates)
    if groups is None:
        if n_samples is None:
            raise MetricError("grouped_bootstrap_counts needs groups or n_samples")
        n = int(n_samples)
    else:
        n = len(np.asarray(groups))
    inverse, n_groups = _group_index(groups, n)
    if n_groups == 0:
        raise MetricError("cannot bootstrap an empty data set")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    chunk = int(chunk_size) if chunk_size else _chunk_rows(8 * (n + 2 * n_groups), n_replicates)
    for start in range(0, n_replicates, chunk):
        rows = min(chunk, n_replicates - start)
        yield np.take(_draw_counts(rng, n_groups, rows), inverse, axis=1)


@dataclass(frozen=True)
class BootstrapEstimate:
    """One metric: point estimate on the full data, percentile CI and the replicate values.

    Attributes:
        point: the metric on the full (not resampled) data.
        low, high: percentile CI over the replicates (``nan`` ignored).
        replicates: ``(n_replicates,)`` values, ``nan`` where a replicate missed a class.
        n_nan: number of ``nan`` replicates.
    """

    point: float
    low: float
    high: float
    replicates: np.ndarray = field(repr=False)
    n_nan: int = 0

    def to_dict(self, include_replicates: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "point": self.point,
            "ci_low": self.low,
            "ci_high": self.high,
            "n_nan_replicates": self.n_nan,
        }
        if include_replicates:
            out["replicates"] = self.replicates.tolist()
        return out


@dataclass(frozen=True)
class BootstrapResult:
    """Grouped-bootstrap estimates for one binary task.

    ``estimates`` keys: ``"auc"``, ``"specificity_at_sensitivity"``, ``"threshold_at_sensitivity"`` (the
    threshold re-chosen in each replicate), and, when a fixed ``threshold`` was given, ``"sensitivity"``,
    ``"specificity"``, ``"ppv"``, ``"npv"`` at that threshold. ``result["auc"].low`` etc.
    """

    estimates: dict[str, BootstrapEstimate]
    n_samples: int
    n_positive: int
    n_negative: int
    n_groups: int
    n_replicates: int
    seed: int | None
    ci_level: float
    target_sensitivity: float
    threshold: float | None

    def __getitem__(self, key: str) -> BootstrapEstimate:
        return self.estimates[key]

    def to_dict(self, include_replicates: bool = False) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "n_groups": self.n_groups,
            "n_replicates": self.n_replicates,
            "seed": self.seed,
            "ci_level": self.ci_level,
            "target_sensitivity": self.target_sensitivity,
            "threshold": self.threshold,
            "resampling_unit": "group",
            "metrics": {k: v.to_dict(include_replicates) for k, v in self.estimates.items()},
        }


class _BinaryBootstrapPlan:
    """Sorted layout of one binary data set, computed once and shared by every replicate.

    Positives and negatives are each sorted by decreasing score, once. A replicate weights each sample by its
    group's draw count. For positive ``i``, ``ge[i]`` / ``gt[i]`` count the negatives scoring ``>=`` / ``>``
    it (equal unless it ties with a negative); with ``Cn`` the cumulative negative weight (scores decreasing,
    ``Cn[0] = 0``) and ``w`` the positive weights:

    * AUC numerator ``x 2 = sum_i w_i (2 N - Cn[ge_i] - Cn[gt_i])`` (Mann-Whitney, ties 1/2);
    * the target-sensitivity threshold is the score of the first positive ``k`` whose cumulative weight
      ``Cp[k] / P >= target``; the negatives scoring ``>=`` it weigh ``Cn[ge_k]``.

    Every step is a row operation on ``(chunk, n_pos)`` / ``(chunk, n_neg)`` integer matrices (gather of the
    group counts, cumulative sum along the row, gather at precomputed positions), vectorised over the
    replicates of a chunk; integer counts keep every sum exact (int32 while a replicate cannot weigh 2**31,
    int64 beyond).
    """

    def __init__(self, y: np.ndarray, s: np.ndarray, group: np.ndarray, n_groups: int) -> None:
        pos = np.flatnonzero(y)
        neg = np.flatnonzero(~y)
        pos = pos[np.argsort(-s[pos], kind="stable")]
        neg = neg[np.argsort(-s[neg], kind="stable")]
        self.pos_scores = s[pos]
        self.neg_scores = s[neg]
        self.pos_group = group[pos]
        self.neg_group = group[neg]
        self.n_groups = n_groups
        asc_n = self.neg_scores[::-1]
        n_neg = neg.size
        self.ge = n_neg - np.searchsorted(asc_n, self.pos_scores, side="left")
        gt = n_neg - np.searchsorted(asc_n, self.pos_scores, side="right")
        # negatives behind a dummy group (index n_groups, count 0) so the cumulative sum starts at 0 in place
        self.neg_take = np.r_[n_groups, self.neg_group]
        tied = np.flatnonzero(self.ge > gt)
        self.tied, self.tied_gt = tied, gt[tied]
        # a replicate weighs at most n_groups * (largest group) in total: int32 is exact below 2**31
        largest = int(np.bincount(group, minlength=n_groups).max()) if group.size else 0
        self.dtype = np.dtype(np.int32) if n_groups * largest < 2**31 - 1 else np.dtype(np.int64)

    def row_bytes(self) -> int:
        """Bytes of work arrays per replicate (cumulative negatives, positive weights, their cumulative sum,
        the gathered negatives above each positive, the padded counts and the drawn counts)."""
        n_pos, n_neg = self.pos_scores.size, self.neg_scores.size
        return self.dtype.itemsize * (n_neg + 3 * n_pos + self.n_groups) + 8 * self.n_groups + n_pos

    def evaluate(self, counts: np.ndarray, target: float, threshold: float | None) -> dict[str, np.ndarray]:
        """Metrics of each replicate in a chunk. ``counts``: ``(chunk, n_groups)`` group counts."""
        dt = self.dtype
        chunk = counts.shape[0]
        n_pos, n_neg = self.pos_scores.size, self.neg_scores.size
        padded = np.zeros((chunk, self.n_groups + 1), dtype=dt)  # last column: the dummy group
        padded[:, :-1] = counts
        counts = padded
        cn = np.take(counts, self.neg_take, axis=1)  # (chunk, n_neg + 1), column 0 weighs 0
        np.cumsum(cn, axis=1, dtype=dt, out=cn)
        N = cn[:, -1].astype(np.int64)  # (chunk,)
        wp = np.take(counts, self.pos_group, axis=1)  # (chunk, n_pos)
        cp = np.cumsum(wp, axis=1, dtype=dt)
        P = cp[:, -1].astype(np.int64) if n_pos else np.zeros(chunk, dtype=np.int64)
        ge = np.take(cn, self.ge, axis=1)  # negatives scoring >= each positive
        below2 = 2 * np.einsum("ij,ij->i", wp, ge, dtype=np.int64)
        if self.tied.size:
            below2 += np.einsum(
                "ij,ij->i",
                np.take(wp, self.tied, axis=1),
                np.take(cn, self.tied_gt, axis=1) - np.take(ge, self.tied, axis=1),
                dtype=np.int64,
            )
        ok = (P > 0) & (N > 0)
        Pf, Nf = P.astype(np.float64), N.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.where(ok, (2.0 * Pf * Nf - below2) / (2.0 * Pf * Nf), np.nan)
            out: dict[str, np.ndarray] = {"auc": auc}
            # first positive k (scores decreasing) with cp[k] / P >= target; exact on integer counts
            safe_p = np.maximum(Pf, 1.0)
            need = np.ceil(target * safe_p)
            need = np.where((need - 1.0) / safe_p >= target, need - 1.0, need)
            need = np.where(need / safe_p < target, need + 1.0, need)
        need_int: np.ndarray = need.astype(dt)[:, None]
        k = np.minimum(np.count_nonzero(np.less(cp, need_int), axis=1), max(n_pos - 1, 0))
        rows = np.arange(chunk)
        fp = ge[rows, k].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["specificity_at_sensitivity"] = np.where(ok, 1.0 - fp / Nf, np.nan)
        out["threshold_at_sensitivity"] = np.where(P > 0, self.pos_scores[k], np.nan)
        if threshold is not None:
            thr = float(threshold)
            kp = int(n_pos - np.searchsorted(self.pos_scores[::-1], thr, side="left"))
            kn = int(n_neg - np.searchsorted(self.neg_scores[::-1], thr, side="left"))
            tp = cp[:, kp - 1].astype(np.float64) if kp else np.zeros(chunk)
            fpt = cn[:, kn].astype(np.float64)
            fn = Pf - tp
            tn = Nf - fpt
            with np.errstate(invalid="ignore", divide="ignore"):
                out["sensitivity"] = np.where(P > 0, tp / Pf, np.nan)
                out["specificity"] = np.where(N > 0, tn / Nf, np.nan)
                out["ppv"] = np.where(tp + fpt > 0, tp / (tp + fpt), np.nan)
                out["npv"] = np.where(tn + fn > 0, tn / (tn + fn), np.nan)
        return out


def bootstrap_binary(
    y_true: Any,
    scores: Any,
    groups: Any = None,
    n_replicates: int = 1000,
    seed: int = 0,
    target_sensitivity: float = 0.95,
    threshold: float | None = None,
    ci_level: float = 0.95,
    *,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
) -> BootstrapResult:
    """Grouped bootstrap of a binary task, vectorised over replicates.

    Each replicate resamples GROUPS (patients or lesions; rows when ``groups`` is None) with replacement, as
    :func:`grouped_bootstrap_counts` does, and computes with the group counts as sample weights: ROC AUC,
    specificity at ``target_sensitivity`` with the threshold re-chosen in the replicate, that threshold, and,
    when ``threshold`` is given, sensitivity/specificity/PPV/NPV at that fixed threshold. Scores are sorted
    once; a chunk of replicates is evaluated with cumulative sums over ``(chunk, n)`` integer matrices.

    Point estimates come from the unweighted functions on the full data (:func:`roc_auc`,
    :func:`specificity_at_sensitivity`, :func:`binary_metrics_at_threshold`). CIs are percentile intervals
    (:func:`percentile_ci`); replicates that miss a class are ``nan`` and counted in ``n_nan``.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        scores: ``(n,)`` scores.
        groups: ``(n,)`` group labels (patient / lesion ids) or None.
        n_replicates: bootstrap replicates.
        seed: random seed (replicate ``r`` is reproducible with :func:`grouped_bootstrap_counts`).
        target_sensitivity: in (0, 1].
        threshold: optional fixed operating point (e.g. chosen on validation).
        ci_level: CI coverage.
        chunk_size: replicates per chunk (default: bounded memory, about 16 MB of work arrays).
        n_jobs: threads evaluating chunks in parallel (numpy releases the GIL in every step); default: the
            CPUs available, at most 4. Results do not depend on it: counts are drawn in order, one stream.

    Raises:
        MetricError: if either class is absent from the full data, or on invalid input.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.random(200) < 0.3
        >>> s = y + rng.normal(size=200)
        >>> res = bootstrap_binary(y, s, groups=np.arange(200) // 2, n_replicates=200, seed=1)
        >>> res["auc"].low < res["auc"].point < res["auc"].high
        True
    """
    target = _check_target(target_sensitivity)
    n_replicates = _check_replicates(n_replicates)
    if threshold is not None and math.isnan(float(threshold)):
        raise MetricError("threshold is NaN")
    y, s, _ = _check_binary(y_true, scores)
    n = y.size
    group, n_groups = _group_index(groups, n)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        raise MetricError(
            f"bootstrap needs both classes, found {n_pos} positive and {n - n_pos} negative samples"
        )
    points: dict[str, float] = {"auc": roc_auc(y, s)}
    spec, thr_point = specificity_at_sensitivity(y, s, target)
    points["specificity_at_sensitivity"] = spec
    points["threshold_at_sensitivity"] = thr_point
    if threshold is not None:
        at = binary_metrics_at_threshold(y, s, float(threshold))
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            points[key] = at[key]

    plan = _BinaryBootstrapPlan(y, s, group, n_groups)
    rng = np.random.default_rng(seed)
    chunk = int(chunk_size) if chunk_size else _chunk_rows(plan.row_bytes(), n_replicates)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in points}

    def collect(values: dict[str, np.ndarray]) -> None:
        for key, value in values.items():
            parts[key].append(value)

    jobs = _n_jobs(n_jobs)
    starts = range(0, n_replicates, chunk)  # a loop over chunks of replicates
    if jobs == 1 or len(starts) == 1:
        for start in starts:
            collect(
                plan.evaluate(
                    _draw_counts(rng, n_groups, min(chunk, n_replicates - start)), target, threshold
                )
            )
    else:
        # the main thread draws chunk after chunk (one random stream, in order) while workers evaluate;
        # at most jobs + 1 chunks are in flight, so memory stays bounded
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            pending: deque[Future[dict[str, np.ndarray]]] = deque()
            for start in starts:
                counts = _draw_counts(rng, n_groups, min(chunk, n_replicates - start))
                pending.append(pool.submit(plan.evaluate, counts, target, threshold))
                if len(pending) > jobs:
                    collect(pending.popleft().result())
            while pending:
                collect(pending.popleft().result())
    estimates = {}
    for key, point in points.items():
        reps = np.concatenate(parts[key])
        low, high = percentile_ci(reps, ci_level)
        estimates[key] = BootstrapEstimate(
            point=point, low=low, high=high, replicates=reps, n_nan=int(np.isnan(reps).sum())
        )
    n_nan = estimates["auc"].n_nan
    if n_nan:
        logger.warning(
            "%d of %d bootstrap replicates miss a class (AUC undefined there)", n_nan, n_replicates
        )
    return BootstrapResult(
        estimates=estimates,
        n_samples=n,
        n_positive=n_pos,
        n_negative=n - n_pos,
        n_groups=n_groups,
        n_replicates=n_replicates,
        seed=seed,
        ci_level=float(ci_level),
        target_sensitivity=target,
        threshold=None if threshold is None else float(threshold),
    )
