"""Calibration beyond the ECE: logistic recalibration (calibration intercept and slope), temperature
scaling, and grouped-bootstrap bands of a reliability diagram.

With ``x = logit(p)`` (``p`` clipped to ``[1e-15, 1 - 1e-15]``):

* the **calibration slope** is ``b`` of the logistic fit ``logit P(y = 1) = a + b x`` (1 when the
  probabilities are neither too extreme nor too timid, below 1 when they are too extreme);
* the **calibration intercept** ("calibration in the large") is ``a`` of the fit with the slope fixed at 1,
  ``logit P(y = 1) = a + x`` (0 when the mean predicted risk matches the event rate);
* **temperature scaling** (Guo et al. 2017) fits ``T`` in ``p' = sigmoid(x / T)`` by maximum likelihood:
  the logistic fit ``b x`` without intercept, ``T = 1 / b``.

Every fit is Newton's method on the log-likelihood, vectorised over bootstrap replicates (the sample
weights of each replicate's group draws); a fit that does not converge, or on data the design separates
(no maximum-likelihood estimate exists), is NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError, _check_binary
from hierclf.evaluation.metrics.resampling import bootstrap_sums, grouped_bootstrap_counts

__all__ = [
    "bootstrap_logistic_calibration",
    "bootstrap_reliability",
    "fit_temperature",
    "logistic_calibration",
    "temperature_scale",
]

_EPS = 1e-15


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def _check_probability(y_true: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p, _ = _check_binary(y_true, prob)
    if p.size and ((p < 0) | (p > 1)).any():
        raise MetricError("probabilities must lie in [0, 1]")
    return y.astype(np.float64), p


def _design(x: np.ndarray, design: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (n, k), offset (n,), start (k,))`` of a design (see :func:`_newton`)."""
    if design == "slope":
        return np.stack([np.ones_like(x), x], 1), np.zeros_like(x), np.array([0.0, 1.0])
    if design == "intercept":
        return np.ones((x.size, 1)), x, np.array([0.0])
    return x[:, None], np.zeros_like(x), np.array([1.0])


def _newton(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    design: str,
    *,
    start: np.ndarray | None = None,
    iterations: int = 60,
) -> np.ndarray:
    """Weighted logistic fits of one design, one per row of ``w`` ``(R, n)``; ``(R, k)`` parameters.

    Designs: ``"slope"`` ``a + b x`` (start ``(0, 1)``), ``"intercept"`` ``a + x`` (start ``0``),
    ``"temperature"`` ``b x`` (start ``1``); ``start`` replaces the start (the full-data fit, for the
    replicates). Each step is a few passes over the rows still moving and three matrix products (the
    gradient and the Hessian's moments); a row stops when its step is below 1e-6 (Newton's method
    converges quadratically, so the fit is then within about 1e-12).
    """
    X, offset, default = _design(x, design)
    k = X.shape[1]
    first = start if start is not None and np.isfinite(start).all() else default
    beta = np.tile(first, (w.shape[0], 1))
    moments = (X[:, :, None] * X[:, None, :]).reshape(x.size, k * k)  # X_j X_l per sample
    done = np.zeros(w.shape[0], dtype=bool)
    active = np.arange(w.shape[0])
    observed = (w * y[None, :]) @ X  # the weighted events' side of the gradient, fixed
    for _ in range(iterations):  # Newton steps, each vectorised over the replicates still moving
        everyone = active.size == w.shape[0]
        wa = w if everyone else w[active]  # no copy while every row still moves
        mu = (beta if everyone else beta[active]) @ X.T
        mu += offset[None, :]
        np.negative(mu, out=mu)
        with np.errstate(over="ignore"):  # exp(-eta) = inf gives mu = 0, as it should
            np.exp(mu, out=mu)
        mu += 1.0
        np.reciprocal(mu, out=mu)  # the logistic function of eta, in place (exp is 3x cheaper than tanh)
        v = wa * mu
        grad = observed[active] - v @ X
        v -= v * mu  # w mu (1 - mu)
        hess = (v @ moments).reshape(-1, k, k) + 1e-300 * np.eye(k)
        with np.errstate(invalid="ignore", over="ignore"):
            try:
                step = np.linalg.solve(hess, grad[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.full((active.size, k), np.nan)
        beta[active] += step
        finite = np.isfinite(step).all(axis=1)
        # the error left after a Newton step of size s is O(s^2): a step below 1e-6 leaves about 1e-12
        converged = finite & (np.abs(step).max(axis=1, initial=0.0) < 1e-6)
        done[active[converged]] = True
        active = active[finite & ~converged]
        if active.size == 0:
            break
    ok = done & np.isfinite(beta).all(axis=1) & ~_separated(x, y, w, design)
    return np.where(ok[:, None], beta, np.nan)


def _separated(x: np.ndarray, y: np.ndarray, w: np.ndarray, design: str) -> np.ndarray:
    """``(R,)``: rows whose weighted data the design separates, so that the likelihood has no maximum
    (Newton's method then stops on saturated probabilities at a meaningless value): one class only; for
    the slope, every positive at or above every negative in ``x`` (or below); for the temperature, the
    classes on the two sides of ``x = 0``."""
    pos, neg = (w > 0) & (y[None, :] == 1), (w > 0) & (y[None, :] == 0)
    one_class = ~pos.any(axis=1) | ~neg.any(axis=1)
    if design == "intercept":
        return one_class
    if design == "slope":
        low, high = -np.inf, np.inf
        above = np.where(pos, x, high).min(axis=1) >= np.where(neg, x, low).max(axis=1)
        below = np.where(pos, x, low).max(axis=1) <= np.where(neg, x, high).min(axis=1)
        return one_class | above | below
    positive_side = (np.where(pos, x, np.inf).min(axis=1) >= 0) & (np.where(neg, x, -np.inf).max(axis=1) <= 0)
    negative_side = (np.where(pos, x, -np.inf).max(axis=1) <= 0) & (np.where(neg, x, np.inf).min(axis=1) >= 0)
    return one_class | positive_side | negative_side


def logistic_calibration(y_true: Any, prob: Any, sample_weight: Any = None) -> tuple[float, float]:
    """``(calibration intercept, calibration slope)`` of probabilities ``prob`` ``(n,)`` against 0/1
    events (see the module docstring); NaN when a fit does not converge.

    Example:
        >>> y = [0, 0, 1, 0, 1, 1, 0, 1]
        >>> a, b = logistic_calibration(y, [0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.2, 0.9])
        >>> round(a, 4), round(b, 4)
        (0.2004, 2.9342)
    """
    y, p = _check_probability(y_true, prob)
    w = np.ones((1, p.size)) if sample_weight is None else np.asarray(sample_weight, np.float64)[None, :]
    x = _logit(p)
    intercept = _newton(x, y, w, "intercept")[0, 0]
    slope = _newton(x, y, w, "slope")[0, 1]
    return float(intercept), float(slope)


def fit_temperature(y_true: Any, prob: Any) -> float:
    """The temperature ``T`` minimising the log-loss of ``sigmoid(logit(prob) / T)`` (NaN if no fit).

    Example:
        >>> round(fit_temperature([0, 0, 1, 0, 1, 1, 0, 1], [0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 0.2, 0.9]), 4)
        0.3716
    """
    y, p = _check_probability(y_true, prob)
    b = _newton(_logit(p), y, np.ones((1, p.size)), "temperature")[0, 0]
    return float(1.0 / b) if math.isfinite(b) and b > 0 else math.nan


def temperature_scale(prob: Any, temperature: float) -> np.ndarray:
    """``sigmoid(logit(prob) / temperature)``, ``(n,)``."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise MetricError(f"temperature must be a positive number, got {temperature}")
    return 0.5 * (1.0 + np.tanh(0.5 * _logit(np.asarray(prob)) / temperature))


def bootstrap_logistic_calibration(
    y_true: Any, prob: Any, groups: Any, *, n_replicates: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Grouped-bootstrap replicates ``(R,)`` of the calibration intercept and slope (the draws of
    :func:`~.resampling.grouped_bootstrap_counts` for the same groups and seed)."""
    y, p = _check_probability(y_true, prob)
    x = _logit(p)
    ones = np.ones((1, p.size))
    at_intercept, at_slope = _newton(x, y, ones, "intercept")[0], _newton(x, y, ones, "slope")[0]
    chunk = max(1, (4 * 2**20) // max(p.size, 1))
    intercepts, slopes = [], []
    for counts in grouped_bootstrap_counts(groups, n_replicates, seed, n_samples=p.size, chunk_size=chunk):
        w = counts.astype(np.float64)  # each replicate starts from the full-data fit: a few steps each
        intercepts.append(_newton(x, y, w, "intercept", start=at_intercept)[:, 0])
        slopes.append(_newton(x, y, w, "slope", start=at_slope)[:, 1])
    return np.concatenate(intercepts), np.concatenate(slopes)


def bootstrap_reliability(
    y_true: Any, prob: Any, groups: Any, *, n_bins: int = 15, n_replicates: int = 1000, seed: int = 0
) -> np.ndarray:
    """Grouped-bootstrap replicates ``(R, n_bins)`` of the observed frequency in each bin of
    :func:`~.calibration.reliability_curve` (NaN where a replicate's bin is empty): the reliability
    diagram's band."""
    y, p = _check_probability(y_true, prob)
    b = np.clip(np.ceil(p * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    columns = np.zeros((p.size, 2 * n_bins))
    rows = np.arange(p.size)
    columns[rows, b] = y
    columns[rows, n_bins + b] = 1.0
    sums = bootstrap_sums(columns, groups, n_replicates, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, n_bins:] > 0, sums[:, :n_bins] / sums[:, n_bins:], np.nan)
