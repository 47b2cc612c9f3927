"""Tests of two paired binary decisions on the same cases: McNemar's exact test and its clustered form.

At a fixed operating point, each model (or reader) calls each case positive or not. On the cases where the
two disagree, ``b`` = first right and second wrong, ``c`` = the reverse. McNemar's exact test asks whether
``b`` is a draw from ``Binomial(b + c, 1/2)``: ``p = min(1, 2 P(X <= min(b, c)))`` (equal to
``scipy.stats.binomtest(b, b + c, 0.5)``). Over positives the right call is "positive", so the test
compares sensitivities; over negatives, specificities.

McNemar treats cases as independent. When cases come in clusters (images of one lesion), Durkalski et al.
(2003) replace it by ``X^2 = (sum_g (b_g - c_g))^2 / sum_g (b_g - c_g)^2`` over clusters ``g``, referred to
chi-square with one degree of freedom (:func:`clustered_mcnemar`); with one case per cluster it is the
asymptotic McNemar statistic ``(b - c)^2 / (b + c)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError
from hierclf.evaluation.metrics.intervals import normal_two_sided_p, regularized_incomplete_beta

__all__ = ["McNemarResult", "binomial_two_sided_p", "clustered_mcnemar", "discordant_pairs", "mcnemar_exact"]


@dataclass(frozen=True)
class McNemarResult:
    """A paired comparison of two decisions' hit rates on the same cases.

    Attributes:
        n: cases compared.
        first_only: ``b``, cases the first decision gets right and the second wrong.
        second_only: ``c``, the reverse.
        p_value: two-sided p-value.
        method: ``"exact McNemar"`` or ``"clustered McNemar (Durkalski 2003)"``.
    """

    n: int
    first_only: int
    second_only: int
    p_value: float
    method: str


def binomial_two_sided_p(k: int, n: int) -> float:
    """``min(1, 2 P(X <= min(k, n - k)))`` for ``X ~ Binomial(n, 1/2)``; 1 for ``n = 0``.

    Uses ``P(X <= j) = I_{1/2}(n - j, j + 1)`` (the regularized incomplete beta function).

    >>> round(binomial_two_sided_p(0, 6), 12)  # 2 / 2**6
    0.03125
    """
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise MetricError(f"binomial counts need 0 <= k <= n, got k={k}, n={n}")
    low = min(k, n - k)
    if n == 0 or 2 * low == n:
        return 1.0
    tail = float(regularized_incomplete_beta(n - low, low + 1, 0.5))
    return float(min(1.0, 2.0 * tail))


def discordant_pairs(truth: Any, first: Any, second: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per case: ``(first right and second wrong, first wrong and second right)``, two ``(n,)`` bool.

    ``truth``, ``first``, ``second`` are ``(n,)`` 0/1: the true class and the two decisions.
    """
    t, a, b = (np.asarray(v).astype(bool) for v in (truth, first, second))
    if not t.shape == a.shape == b.shape or t.ndim != 1:
        raise MetricError(
            f"truth and decisions must be 1-D of one length, got {t.shape}, {a.shape}, {b.shape}"
        )
    right_a, right_b = a == t, b == t
    return right_a & ~right_b, ~right_a & right_b


def mcnemar_exact(truth: Any, first: Any, second: Any) -> McNemarResult:
    """McNemar's exact test of two paired decisions (see the module docstring).

    Example:
        >>> r = mcnemar_exact([1] * 8, [1, 1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0, 1, 1])
        >>> r.first_only, r.second_only, round(r.p_value, 4)
        (5, 1, 0.2188)
    """
    only_a, only_b = discordant_pairs(truth, first, second)
    b, c = int(only_a.sum()), int(only_b.sum())
    return McNemarResult(only_a.size, b, c, binomial_two_sided_p(b, b + c), "exact McNemar")


def clustered_mcnemar(truth: Any, first: Any, second: Any, groups: Any) -> McNemarResult:
    """Durkalski et al.'s (2003) McNemar test for clustered paired decisions (see the module docstring).

    ``p = 1`` when no cluster has discordant cases.
    """
    only_a, only_b = discordant_pairs(truth, first, second)
    g = np.asarray(groups)
    if g.shape != only_a.shape:
        raise MetricError(f"groups has shape {g.shape}, expected {only_a.shape}")
    _, codes = np.unique(g, return_inverse=True)
    codes = codes.ravel()
    diff = np.bincount(codes, weights=only_a.astype(np.float64)) - np.bincount(
        codes, weights=only_b.astype(np.float64)
    )
    denom = float(np.sum(diff**2))
    b, c = int(only_a.sum()), int(only_b.sum())
    if denom == 0:
        return McNemarResult(only_a.size, b, c, 1.0, "clustered McNemar (Durkalski 2003)")
    stat = float(diff.sum()) ** 2 / denom
    p = normal_two_sided_p(math.sqrt(stat))
    return McNemarResult(only_a.size, b, c, p, "clustered McNemar (Durkalski 2003)")
