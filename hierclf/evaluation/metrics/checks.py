"""Input checks shared by every metric: shapes, 0/1 labels, finite scores, class indices, targets.

Every check raises :class:`MetricError` (a :class:`~hierclf.errors.HierclfError` and ``ValueError``) with one
line saying what was expected and what was found.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierclf.errors import HierclfError


class MetricError(HierclfError, ValueError):
    """A metric cannot be computed from the given input (wrong shape, NaN, a class missing, ...)."""


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


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan
