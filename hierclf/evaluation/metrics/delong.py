"""DeLong's test of correlated ROC AUCs, in O(n log n) (Sun & Xu 2014), with the clustered variance of
Obuchowski (1997) when cases come in clusters (several images of one lesion).

For ``K`` score vectors on the same cases (``m`` positives, ``n`` negatives), DeLong et al. (1988) write
each AUC as the mean of **placement values**: ``V10_i = (1/n) sum_j psi(X_i, Y_j)`` for positive ``i`` and
``V01_j = (1/m) sum_i psi(X_i, Y_j)`` for negative ``j``, with ``psi = 1`` when the positive scores higher,
``1/2`` on a tie, ``0`` otherwise. Their covariances across cases give the covariance matrix of the AUCs,
``S = S10 / m + S01 / n``, and ``(L theta)^2 / (L S L')`` is chi-square with one degree of freedom under
``L theta = 0`` (here ``L`` contrasts two models, or two seed-averages). Sun & Xu's observation: the
placement values are mid-ranks, ``V10_i = (T_Z(i) - T_X(i)) / n`` and ``V01_j = 1 - (T_Z(j) - T_Y(j)) / m``
with ``T_Z``, ``T_X``, ``T_Y`` the mid-ranks among all cases, the positives and the negatives, so the whole
computation is three sorts per score vector.

With clusters, Obuchowski's estimator sums the placement values within each cluster: with ``I10`` / ``I01``
the clusters holding positives / negatives, ``I`` all clusters, ``V10_g`` the sum over cluster ``g``'s
positives (``m_g`` of them),

``S10 = I10 / ((I10 - 1) m) sum_g (V10_g - m_g theta)(V10_g - m_g theta)'``, likewise ``S01`` over
negatives, ``S11 = I / (I - 1) sum_g (V10_g - m_g theta)(V01_g - n_g theta)'``, and
``S = S10 / m + S01 / n + (S11 + S11') / (m n)``.

With one case per cluster it is DeLong's estimator exactly (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError
from hierclf.evaluation.metrics.intervals import normal_quantile, normal_two_sided_p

__all__ = ["DeLongResult", "delong_covariance", "delong_test", "midranks"]


def midranks(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based, ties get the mean of their ranks) of each row of ``x`` ``(..., n)``, O(n log n).

    Example:
        >>> midranks(np.array([0.3, 0.1, 0.3, 0.2])).tolist()
        [3.5, 1.0, 3.5, 2.0]
    """
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    # each tie block [first, last] of the sorted row gets rank (first + last) / 2 + 1
    new_block = np.ones(xs.shape, dtype=bool)
    new_block[..., 1:] = xs[..., 1:] != xs[..., :-1]
    idx = np.broadcast_to(np.arange(n), xs.shape)
    first = np.maximum.accumulate(np.where(new_block, idx, 0), axis=-1)
    end_block = np.ones(xs.shape, dtype=bool)
    end_block[..., :-1] = new_block[..., 1:]
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end_block, idx, n - 1), axis=-1), axis=-1), axis=-1)
    ranks_sorted = 0.5 * (first + last) + 1.0
    out = np.empty_like(ranks_sorted)
    np.put_along_axis(out, order, ranks_sorted, axis=-1)
    return out


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(auc (K,), V10 (K, m), V01 (K, n))`` by Sun & Xu's mid-ranks."""
    pos, neg = y.astype(bool), ~y.astype(bool)
    m, n = int(pos.sum()), int(neg.sum())
    tz = midranks(scores)
    tx = midranks(scores[:, pos])
    ty = midranks(scores[:, neg])
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, neg] - ty) / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _cluster_sums(values: np.ndarray, codes: np.ndarray, n_clusters: int) -> np.ndarray:
    """``(K, n_clusters)`` sums of ``values`` ``(K, n)`` per cluster (``codes`` ``(n,)``)."""
    out = np.zeros((values.shape[0], n_clusters))
    for k in range(values.shape[0]):  # a loop over the K score vectors (a handful)
        out[k] = np.bincount(codes, weights=values[k], minlength=n_clusters)
    return out


def _clustered_covariance(
    auc: np.ndarray, v10: np.ndarray, v01: np.ndarray, y: np.ndarray, codes: np.ndarray
) -> np.ndarray:
    """Obuchowski's (1997) covariance of the AUCs from cluster sums of the placement values."""
    pos = y.astype(bool)
    n_clusters = int(codes.max()) + 1
    m_g = np.bincount(codes[pos], minlength=n_clusters).astype(np.float64)
    n_g = np.bincount(codes[~pos], minlength=n_clusters).astype(np.float64)
    m, n = m_g.sum(), n_g.sum()
    r10 = _cluster_sums(v10, codes[pos], n_clusters) - np.outer(auc, m_g)  # (K, I)
    r01 = _cluster_sums(v01, codes[~pos], n_clusters) - np.outer(auc, n_g)
    i10, i01, i_all = int((m_g > 0).sum()), int((n_g > 0).sum()), n_clusters
    if min(i10, i01) < 2:
        raise MetricError("the clustered DeLong variance needs positives and negatives in 2+ clusters each")
    s10 = i10 / ((i10 - 1) * m) * (r10 @ r10.T)
    s01 = i01 / ((i01 - 1) * n) * (r01 @ r01.T)
    s11 = i_all / (i_all - 1) * (r10 @ r01.T)
    return s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def delong_covariance(y_true: Any, scores: Any, groups: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The AUCs of ``K`` score vectors on the same cases and DeLong's covariance matrix of them.

    Args:
        y_true: ``(n,)`` 0/1 labels.
        scores: ``(K, n)`` (or ``(n,)``) scores, higher = more positive.
        groups: optional ``(n,)`` cluster labels: Obuchowski's clustered covariance.

    Returns:
        ``(auc (K,), covariance (K, K))``.

    Example:
        >>> auc, cov = delong_covariance([1, 1, 0, 0], [[0.9, 0.4, 0.5, 0.1]])
        >>> auc.tolist(), cov.round(6).tolist()
        ([0.75], [[0.125]])
    """
    y = np.asarray(y_true)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if y.ndim != 1 or s.shape[1] != y.shape[0]:
        raise MetricError(f"scores must be (K, {y.shape[0]}) to match y_true, got {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise MetricError("y_true must hold only 0/1")
    if not np.isfinite(s).all():
        raise MetricError("scores contain NaN or infinite values")
    m = int(np.count_nonzero(y))
    if m < 2 or y.size - m < 2:
        raise MetricError(f"DeLong's test needs 2+ positives and 2+ negatives, found {m} and {y.size - m}")
    auc, v10, v01 = _placements(y, s)
    if groups is None:
        cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / (y.size - m)
        return auc, cov
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    return auc, _clustered_covariance(auc, v10, v01, y, codes.ravel())


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of a contrast of AUCs.

    Attributes:
        auc: ``(K,)`` the AUC of each score vector.
        difference: the contrast ``L . auc`` (e.g. ``auc_A - auc_B``).
        std_error: its standard error ``sqrt(L S L')``.
        z: ``difference / std_error``.
        p_value: two-sided ``P(|Z| >= |z|)``.
        ci: normal interval ``difference -+ z_{(1+level)/2} std_error``.
        clustered: whether Obuchowski's clustered covariance was used.
    """

    auc: np.ndarray
    difference: float
    std_error: float
    z: float
    p_value: float
    ci: tuple[float, float]
    clustered: bool


def delong_test(
    y_true: Any,
    scores: Any,
    contrast: Any = None,
    *,
    groups: Any = None,
    level: float = 0.95,
) -> DeLongResult:
    """DeLong's test of ``contrast . auc = 0`` for ``K`` correlated ROC AUCs (default ``auc_0 - auc_1``).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        scores: ``(K, n)`` scores on the same cases.
        contrast: ``(K,)`` weights (e.g. ``[1/2, 1/2, -1/2, -1/2]`` for the difference of two models'
            means over two seeds); default ``[1, -1]``.
        groups: optional ``(n,)`` cluster labels (Obuchowski 1997).
        level: level of the interval.

    Example:
        >>> y = [1, 1, 1, 0, 0, 0]
        >>> r = delong_test(y, [[0.9, 0.8, 0.3, 0.4, 0.2, 0.1], [0.6, 0.5, 0.4, 0.7, 0.3, 0.2]])
        >>> round(r.difference, 6), r.p_value > 0.05
        (0.222222, True)
    """
    auc, cov = delong_covariance(y_true, scores, groups)
    k = auc.size
    weights = np.asarray(contrast if contrast is not None else [1.0, -1.0], dtype=np.float64)
    if weights.shape != (k,):
        raise MetricError(f"the contrast must have {k} weights, got shape {weights.shape}")
    diff = float(weights @ auc)
    var = float(weights @ cov @ weights)
    se = math.sqrt(var) if var > 0 else 0.0
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    half = normal_quantile(0.5 + float(level) / 2.0) * se
    return DeLongResult(
        auc, diff, se, z, normal_two_sided_p(z), (diff - half, diff + half), groups is not None
    )
