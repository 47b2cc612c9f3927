"""Intervals and p-values that hold at small n: Clopper-Pearson and Wilson intervals for proportions, their
cluster adjustment, the normal quantile and tail, and the two-sided bootstrap p-value.

A percentile bootstrap of 6 of 6 melanomas caught is ``[1, 1]``: every replicate catches all of them. An
exact binomial interval does not collapse: Clopper-Pearson gives ``[0.541, 1]`` at 95 %. When the images
come in clusters (several images of one lesion), the binomial counts overstate the information; the
**effective sample size** of Korn & Graubard (1998), ``n* = n / deff`` with the design effect ``deff`` of
the ratio estimator, and the effective count ``k* = p n*`` keep the interval honest
(:func:`effective_counts`). Every function here is numpy and the standard library only; scipy is the
reference in the tests.

* :func:`clopper_pearson` -- ``[B(a/2; k, n-k+1), B(1-a/2; k+1, n-k)]`` with ``B`` the beta quantile,
  ``0`` / ``1`` at ``k = 0`` / ``k = n`` (Clopper & Pearson 1934); real-valued ``k``, ``n`` allowed;
* :func:`wilson` -- the score interval (Wilson 1927);
* :func:`effective_counts` -- Korn & Graubard's ``(k*, n*)`` from per-cluster counts;
* :func:`bootstrap_p_value` -- two-sided p-value of a null value against bootstrap replicates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError

__all__ = [
    "EffectiveCounts",
    "bootstrap_p_value",
    "clopper_pearson",
    "effective_counts",
    "normal_quantile",
    "normal_two_sided_p",
    "regularized_incomplete_beta",
    "wilson",
]

_LGAMMA = np.frompyfunc(math.lgamma, 1, 1)
#: iterations of the continued fraction; it converges in O(sqrt(max(a, b))) steps (Numerical Recipes 6.4)
_CF_MAX_ITER = 20_000
_TINY = 1e-300


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.asarray(_LGAMMA(x), dtype=np.float64)


def _stirling_tail(x: np.ndarray) -> np.ndarray:
    """``lgamma(x) - ((x - 1/2) log x - x + log(2 pi) / 2)`` for ``x >= 100`` (error below 1e-19)."""
    inv = 1.0 / x
    inv2 = inv * inv
    return inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))


def _log_beta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``log B(a, b)``, accurate when one argument is large: ``lgamma(a + b) - lgamma(b)`` is then taken
    from Stirling's series as ``(b - 1/2) log1p(a / b) + a log(a + b) - a + tail(a + b) - tail(b)``
    instead of as the difference of two numbers near ``b log b`` (which loses ten digits at 1e5)."""
    small, big = np.minimum(a, b), np.maximum(a, b)
    direct = _lgamma(a) + _lgamma(b) - _lgamma(a + b)
    safe = np.maximum(big, 100.0)
    ratio = (
        (safe - 0.5) * np.log1p(small / safe)
        + small * np.log(small + safe)
        - small
        + _stirling_tail(small + safe)
        - _stirling_tail(safe)
    )
    return np.where(big >= 100.0, _lgamma(small) - ratio, direct)


def _beta_continued_fraction(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The continued fraction of the incomplete beta function (modified Lentz), vectorised over arrays."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < _TINY, _TINY, d)
    d = 1.0 / d
    h = d.copy()
    active = np.ones(x.shape, dtype=bool)
    for m in range(1, _CF_MAX_ITER + 1):  # a loop over the terms of the fraction, every element at once
        m2 = 2.0 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = np.where(np.abs(d) < _TINY, _TINY, d)
            c = 1.0 + aa / c
            c = np.where(np.abs(c) < _TINY, _TINY, c)
            d = 1.0 / d
            delta = d * c
            h = np.where(active, h * delta, h)
        active &= np.abs(delta - 1.0) > 1e-15
        if not active.any():
            return h
    raise MetricError(f"the incomplete beta function did not converge for a={a.max():g}, b={b.max():g}")


def regularized_incomplete_beta(a: Any, b: Any, x: Any) -> np.ndarray:
    """``I_x(a, b)``, the regularized incomplete beta function (the CDF of ``Beta(a, b)`` at ``x``).

    ``a``, ``b`` > 0 and ``x`` in [0, 1], broadcast together. Continued fraction of Numerical Recipes 6.4,
    on the side of the symmetry ``I_x(a, b) = 1 - I_{1-x}(b, a)`` where it converges fast.

    Example:
        >>> round(float(regularized_incomplete_beta(2.0, 3.0, 0.5)), 12)  # 1 - 5/16
        0.6875
    """
    a, b, x = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, x)))
    if (a <= 0).any() or (b <= 0).any():
        raise MetricError("the incomplete beta function needs a > 0 and b > 0")
    if ((x < 0) | (x > 1) | ~np.isfinite(x)).any():
        raise MetricError("the incomplete beta function needs x in [0, 1]")
    swap = x > (a + 1.0) / (a + b + 2.0)
    aa, bb, xx = np.where(swap, b, a), np.where(swap, a, b), np.where(swap, 1.0 - x, x)
    inside = (xx > 0) & (xx < 1)
    safe = np.where(inside, xx, 0.5)
    log_front = aa * np.log(safe) + bb * np.log1p(-safe) - _log_beta(aa, bb)
    value = np.exp(log_front) * _beta_continued_fraction(aa, bb, safe) / aa
    value = np.where(inside, value, np.where(xx <= 0, 0.0, 1.0))
    return np.clip(np.where(swap, 1.0 - value, value), 0.0, 1.0)


def _beta_log_density(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - _log_beta(a, b)


def _beta_quantile(a: np.ndarray, b: np.ndarray, prob: float) -> np.ndarray:
    """``x`` with ``I_x(a, b) = prob``: Newton steps kept inside a shrinking bracket (bisection when a step
    leaves it), vectorised over ``a``, ``b``; converges to a relative ``1e-14``."""
    lo, hi = np.zeros_like(a), np.ones_like(a)
    mean = a / (a + b)
    x = np.clip(mean, 1e-300, 1.0 - 1e-16)
    for _ in range(200):  # Newton / bisection iterations on every element at once
        f = regularized_incomplete_beta(a, b, x) - prob
        lo, hi = np.where(f < 0, x, lo), np.where(f >= 0, x, hi)
        step = f / np.exp(_beta_log_density(a, b, x))
        new = x - step
        outside = ~np.isfinite(new) | (new <= lo) | (new >= hi)
        new = np.where(outside, 0.5 * (lo + hi), new)
        if (np.abs(new - x) <= 1e-14 * np.maximum(new, 1e-300)).all():
            return new
        x = new
    return x


@dataclass(frozen=True)
class EffectiveCounts:
    """A proportion's counts, and the effective counts of Korn & Graubard (1998) under clustering.

    Attributes:
        k, n: successes and trials (images).
        k_eff, n_eff: ``p n*`` and ``n* = n / deff`` (equal to ``k``, ``n`` without clusters).
        n_clusters: clusters that hold at least one trial.
        design_effect: ``deff`` (1 without clusters).
    """

    k: float
    n: float
    k_eff: float
    n_eff: float
    n_clusters: int
    design_effect: float


def effective_counts(success: Any, groups: Any = None) -> EffectiveCounts:
    """Korn & Graubard's effective counts of a proportion whose trials come in clusters.

    ``p = k / n``; the variance of the ratio estimator over ``G`` clusters with ``k_g`` successes in ``n_g``
    trials is ``v = G / (G - 1) * sum_g (k_g - p n_g)^2 / n^2``; the design effect is ``v`` over the same
    estimator's variance without clusters, ``p (1 - p) / (n - 1)``, floored at 1 (clustering never adds
    information), and ``n* = n / deff``, ``k* = p n*``. When ``p`` is 0 or 1 the variance says nothing
    about the clustering; then every cluster counts once (``n* = G``), the most cautious reading.

    Args:
        success: ``(n,)`` 0/1 outcome of each trial (e.g. "caught" for each melanoma image).
        groups: ``(n,)`` cluster labels (lesions), or None for independent trials.

    Example:
        >>> c = effective_counts([1, 1, 1, 1, 1, 1], groups=[0, 0, 1, 1, 2, 2])
        >>> (c.k, c.n, c.k_eff, c.n_eff, c.n_clusters)
        (6.0, 6.0, 3.0, 3.0, 3)
    """
    s = np.asarray(success, dtype=np.float64).ravel()
    n = float(s.size)
    k = float(s.sum())
    if groups is None:
        return EffectiveCounts(k, n, k, n, s.size, 1.0)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    g = g.ravel()
    n_g = np.bincount(g).astype(np.float64)
    k_g = np.bincount(g, weights=s)
    clusters = int(n_g.size)
    if n == 0 or clusters == s.size:
        return EffectiveCounts(k, n, k, n, clusters, 1.0)
    p = k / n
    if p in (0.0, 1.0):
        deff = n / clusters
    else:
        v = clusters / (clusters - 1) * float(np.sum((k_g - p * n_g) ** 2)) / n**2
        deff = max(1.0, v / (p * (1.0 - p) / (n - 1.0)))
    n_eff = n / deff
    return EffectiveCounts(k, n, p * n_eff, n_eff, clusters, deff)


def clopper_pearson(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The Clopper-Pearson ("exact") interval of ``k`` successes in ``n`` trials.

    ``[B(a/2; k, n - k + 1), B(1 - a/2; k + 1, n - k)]`` with ``a = 1 - level`` and ``B`` the beta
    quantile; the lower end is 0 at ``k = 0`` and the upper end 1 at ``k = n``. Real-valued (effective)
    counts are allowed. Equal to ``scipy.stats.binomtest(k, n).proportion_ci(level, "exact")``.

    Returns:
        ``(low, high)`` arrays of the broadcast shape of ``k`` and ``n`` (NaN where ``n == 0``).

    Example:
        >>> low, high = clopper_pearson(6, 6)
        >>> round(float(low), 4), float(high)
        (0.5407, 1.0)
    """
    k_arr, n_arr = _check_counts(k, n, level)
    alpha = 1.0 - float(level)
    safe_n = np.where(n_arr > 0, n_arr, 1.0)
    safe_k = np.clip(k_arr, 0.0, safe_n)
    low = np.zeros_like(safe_k)
    high = np.ones_like(safe_k)
    lower = safe_k > 0
    if lower.any():
        low[lower] = _beta_quantile(safe_k[lower], safe_n[lower] - safe_k[lower] + 1.0, alpha / 2.0)
    upper = safe_k < safe_n
    if upper.any():
        high[upper] = _beta_quantile(safe_k[upper] + 1.0, safe_n[upper] - safe_k[upper], 1.0 - alpha / 2.0)
    empty = n_arr <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def wilson(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``.

    Equal to ``scipy.stats.binomtest(k, n).proportion_ci(level, "wilson")``; real-valued counts allowed.

    Example:
        >>> low, high = wilson(6, 6)
        >>> round(float(low), 4), float(high)
        (0.6097, 1.0)
    """
    k_arr, n_arr = _check_counts(k, n, level)
    z = normal_quantile(0.5 + float(level) / 2.0)
    safe_n = np.where(n_arr > 0, n_arr, 1.0)
    p = np.clip(k_arr / safe_n, 0.0, 1.0)
    denom = 1.0 + z * z / safe_n
    centre = (p + z * z / (2.0 * safe_n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / safe_n + z * z / (4.0 * safe_n * safe_n)) / denom
    low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    low = np.where(p <= 0, 0.0, low)
    high = np.where(p >= 1, 1.0, high)
    empty = n_arr <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def _check_counts(k: Any, n: Any, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < float(level) < 1.0:
        raise MetricError(f"CI level must be in (0, 1), got {level}")
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if (~np.isfinite(k_arr)).any() or (~np.isfinite(n_arr)).any():
        raise MetricError("binomial counts must be finite")
    if (k_arr < 0).any() or (k_arr > n_arr + 1e-9).any():
        raise MetricError("binomial counts need 0 <= k <= n")
    return k_arr.astype(np.float64), n_arr.astype(np.float64)


def normal_quantile(prob: float) -> float:
    """The standard normal quantile (Wichura's AS 241, as ``statistics.NormalDist`` computes it).

    >>> round(normal_quantile(0.975), 6)
    1.959964
    """
    return float(NormalDist().inv_cdf(float(prob)))


def normal_two_sided_p(z: float) -> float:
    """``P(|Z| >= |z|)`` for a standard normal ``Z``: ``erfc(|z| / sqrt(2))``; NaN for a NaN ``z``.

    >>> round(normal_two_sided_p(1.959964), 4)
    0.05
    """
    return math.nan if math.isnan(z) else math.erfc(abs(z) / math.sqrt(2.0))


def bootstrap_p_value(replicates: Any, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value of ``null`` against the replicates of a statistic.

    ``p = min(1, 2 min(1 + #{t* <= null}, 1 + #{t* >= null}) / (R + 1))`` over the ``R`` non-NaN
    replicates (Davison & Hinkley 1997, eq. 4.11, doubled for two sides): the smallest ``1 - level`` at
    which the percentile interval excludes ``null``, never 0. NaN when no replicate is finite.

    Example:
        >>> bootstrap_p_value(np.arange(1.0, 100.0), 0.0)  # every replicate above 0
        0.02
        >>> bootstrap_p_value(np.zeros(10), 0.0)  # a degenerate statistic equal to the null
        1.0
    """
    t = np.asarray(replicates, dtype=np.float64).ravel()
    t = t[~np.isnan(t)]
    if t.size == 0 or math.isnan(float(null)):
        return math.nan
    below = 1 + int(np.count_nonzero(t <= null))
    above = 1 + int(np.count_nonzero(t >= null))
    return float(min(1.0, 2.0 * min(below, above) / (t.size + 1)))
