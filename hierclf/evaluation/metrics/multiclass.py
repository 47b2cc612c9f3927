"""Multi-class summaries of class predictions: confusion matrix, per-class recall, balanced accuracy and the
macro one-vs-rest AUC (Esteva et al.'s partition metrics)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError, _check_labels
from hierclf.evaluation.metrics.roc import roc_auc


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
