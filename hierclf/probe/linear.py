"""The logistic linear probe: scikit-learn's ``LogisticRegression`` on standardised frozen features.

Features are standardised with the training split's mean and standard deviation (``StandardScaler``: lbfgs
then converges in a few hundred iterations whatever the backbone's feature scale). The inverse
regularisation strength ``C`` is chosen on **validation**: every ``C`` of the grid (default ``10^-4 ..
10^2``, 7 values, fitted from the strongest regularisation up with warm starts) is scored by the
validation cross-entropy (lower is better; ties go to the smaller ``C``), and the chosen model is the one
fitted on the training split alone, so validation stays free for the operating point the evaluation
chooses there. Classes absent from the training rows get probability 0.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierclf.errors import HierclfError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CS", "LinearProbe", "fit_linear_probe"]

DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 7))


@dataclass
class LinearProbe:
    """A fitted probe: ``predict_proba(features (n, d)) -> (n, n_classes)``.

    Attributes:
        C: the inverse regularisation chosen on validation.
        grid: ``[(C, validation cross-entropy), ...]`` for every ``C`` tried.
        n_classes: columns of the probabilities.
    """

    scaler: Any
    model: Any
    n_classes: int
    C: float
    grid: list[tuple[float, float]] = field(default_factory=list)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` float32 probabilities (0 for classes the training rows lack)."""
        out = np.zeros((features.shape[0], self.n_classes), np.float64)
        out[:, self.model.classes_] = self.model.predict_proba(self.scaler.transform(features))
        return out.astype(np.float32)


def _cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(y.size), y], 1e-12, 1.0)).mean())


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    n_classes: int,
    Cs: Sequence[float] = DEFAULT_CS,  # noqa: N803 - scikit-learn's name
    class_weight: str | None = None,
    max_iter: int = 1000,
) -> LinearProbe:
    """Fit the probe for every ``C`` and keep the one with the lowest validation cross-entropy.

    Args:
        train_x, train_y: ``(n, d)`` training features and ``(n,)`` class indices.
        val_x, val_y: validation features and class indices (rows with index -1, no class, are left out).
        n_classes: number of classes.
        Cs: the grid of inverse regularisation strengths.
        class_weight: ``"balanced"`` or None (scikit-learn's meaning).
        max_iter: lbfgs iterations.

    Raises:
        HierclfError: fewer than two classes among the training rows, or no validation row with a class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if np.unique(train_y).size < 2:
        raise HierclfError("the linear probe needs training rows of at least two classes")
    scored = val_y >= 0
    if not scored.any():
        raise HierclfError("the linear probe needs validation rows with a class to choose C on")
    scaler = StandardScaler().fit(train_x)
    xt, xv, yv = scaler.transform(train_x), scaler.transform(val_x[scored]), val_y[scored]
    model = LogisticRegression(max_iter=max_iter, class_weight=class_weight, warm_start=True)
    best: tuple[float, float, Any] | None = None
    grid = []
    for c in sorted(float(v) for v in Cs):  # a loop over a handful of C values
        model.set_params(C=c)
        with warnings.catch_warnings():  # lbfgs at tiny C on few rows: convergence notes, not errors
            warnings.simplefilter("ignore")
            model.fit(xt, train_y)
        probs = np.zeros((xv.shape[0], n_classes))
        probs[:, model.classes_] = model.predict_proba(xv)
        loss = _cross_entropy(probs, yv)
        grid.append((c, loss))
        if best is None or loss < best[0]:
            best = (loss, c, _copy(model))
    assert best is not None
    logger.info("linear probe: C %g chosen on validation (cross-entropy %.4f)", best[1], best[0])
    return LinearProbe(scaler, best[2], n_classes, best[1], grid)


def _copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model)
