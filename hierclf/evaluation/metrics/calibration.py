"""Calibration: reliability curves and the expected calibration error over equal-width bins ``(a, b]``
(Guo et al. 2017)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError, _check_binary, _check_labels


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


def bootstrap_calibration(
    y_true: Any,
    prob: Any,
    groups: Any = None,
    *,
    n_bins: int = 15,
    n_replicates: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Grouped-bootstrap replicates of the ECE and the Brier score of a probability, ``(R,)`` each.

    Both are ratios of sums: ``ECE = sum_b |sum_{i in b} (y_i - p_i)| / n`` over the bins of
    :func:`reliability_curve`, ``Brier = sum_i (p_i - y_i)^2 / n``; the replicates are ratios of
    :func:`~hierclf.evaluation.metrics.resampling.bootstrap_sums` (the draws of the grouped bootstrap for the
    same groups and seed).

    Example:
        >>> ece, brier = bootstrap_calibration([0, 1, 1, 1], [0.2, 0.4, 0.9, 1.0], n_bins=2, n_replicates=3)
        >>> ece.shape, brier.shape
        ((3,), (3,))
    """
    from hierclf.evaluation.metrics.resampling import bootstrap_sums

    if int(n_bins) < 1:
        raise MetricError(f"n_bins must be >= 1, got {n_bins}")
    conf, hit = _calibration_inputs(y_true, prob)
    if np.ndim(prob) != 1:
        raise MetricError("bootstrap_calibration takes (n,) event probabilities")
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    columns = np.zeros((conf.size, n_bins + 2))
    columns[np.arange(conf.size), b] = hit - conf  # each bin's hits minus its confidence
    columns[:, -2] = (conf - hit) ** 2
    columns[:, -1] = 1.0
    sums = bootstrap_sums(columns, groups, n_replicates, seed)
    n = sums[:, -1]
    gaps = np.abs(sums[:, :n_bins]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, gaps / n, np.nan), np.where(n > 0, sums[:, -2] / n, np.nan)
