"""The grouped bootstrap of a binary task, vectorised over replicates: AUC, specificity at the target
sensitivity (re-chosen per replicate) and the rates at a fixed threshold, from one sorted layout."""

from __future__ import annotations

import logging
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.checks import MetricError, _check_binary, _check_target
from hierclf.evaluation.metrics.resampling import (
    _check_replicates,
    _chunk_rows,
    _draw_counts,
    _group_index,
    _n_jobs,
    percentile_ci,
)
from hierclf.evaluation.metrics.roc import binary_metrics_at_threshold, roc_auc, specificity_at_sensitivity

logger = logging.getLogger(__name__)


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
    warn_missing: bool = True,
) -> BootstrapResult:
    """Grouped bootstrap of a binary task, vectorised over replicates.

    Each replicate resamples GROUPS (patients or lesions; rows when ``groups`` is None) with replacement, as
    :func:`~hierclf.evaluation.metrics.resampling.grouped_bootstrap_counts` does, and weights each sample by
    its group's draw count: ROC AUC, specificity at ``target_sensitivity`` with the threshold re-chosen in
    the replicate, that threshold, and, when ``threshold`` is given, sensitivity/specificity/PPV/NPV at that
    fixed threshold. Scores are sorted once; a chunk of replicates is evaluated with cumulative sums over
    ``(chunk, n)`` integer matrices. Points come from the unweighted functions on the full data
    (:func:`roc_auc`, ...); CIs are percentile intervals; replicates missing a class are ``nan`` (``n_nan``).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        scores: ``(n,)`` scores.
        groups: ``(n,)`` group labels (patient / lesion ids) or None.
        n_replicates: bootstrap replicates.
        seed: random seed (replicate ``r`` is reproducible with ``grouped_bootstrap_counts``).
        target_sensitivity: in (0, 1].
        threshold: optional fixed operating point (e.g. chosen on validation).
        ci_level: CI coverage.
        chunk_size: replicates per chunk (default: bounded memory, about 16 MB of work arrays).
        n_jobs: threads evaluating chunks in parallel (numpy releases the GIL in every step); default: the
            CPUs available, at most 4. Results do not depend on it: counts are drawn in order, one stream.
        warn_missing: log a warning when replicates miss a class. ``False`` for callers that expect it (small
            subgroups) and summarise ``result["auc"].n_nan`` themselves; the count is recorded either way.

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
    group, n_groups = _group_index(groups, y.size)
    n_pos = _positives_of_both_classes(y)
    points = _points(y, s, target, threshold)
    plan = _BinaryBootstrapPlan(y, s, group, n_groups)
    chunk = int(chunk_size) if chunk_size else _chunk_rows(plan.row_bytes(), n_replicates)
    rng = np.random.default_rng(seed)
    parts = _replicate_chunks(plan, rng, n_replicates, chunk, _n_jobs(n_jobs), target, threshold)
    estimates = _estimates(points, parts, ci_level)
    n_nan = estimates["auc"].n_nan
    if n_nan and warn_missing:
        logger.warning(
            "%d of %d bootstrap replicates miss a class (AUC undefined there)", n_nan, n_replicates
        )
    return BootstrapResult(
        estimates=estimates,
        n_samples=y.size,
        n_positive=n_pos,
        n_negative=y.size - n_pos,
        n_groups=n_groups,
        n_replicates=n_replicates,
        seed=seed,
        ci_level=float(ci_level),
        target_sensitivity=target,
        threshold=None if threshold is None else float(threshold),
    )


def _positives_of_both_classes(y: np.ndarray) -> int:
    """The number of positives of ``(n,)`` bool labels; both classes must be present."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise MetricError(
            f"bootstrap needs both classes, found {n_pos} positive and {y.size - n_pos} negative samples"
        )
    return n_pos


def _points(y: np.ndarray, s: np.ndarray, target: float, threshold: float | None) -> dict[str, float]:
    """Point estimates on the full data, keyed as the bootstrap's estimates."""
    points: dict[str, float] = {"auc": roc_auc(y, s)}
    spec, thr_point = specificity_at_sensitivity(y, s, target)
    points["specificity_at_sensitivity"] = spec
    points["threshold_at_sensitivity"] = thr_point
    if threshold is not None:
        at = binary_metrics_at_threshold(y, s, float(threshold))
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            points[key] = at[key]
    return points


def _replicate_chunks(
    plan: _BinaryBootstrapPlan,
    rng: np.random.Generator,
    n_replicates: int,
    chunk: int,
    jobs: int,
    target: float,
    threshold: float | None,
) -> list[dict[str, np.ndarray]]:
    """Every chunk's metrics, in replicate order (a loop over chunks of replicates).

    The counts are drawn chunk after chunk from one random stream, in order, whatever ``jobs`` is; with
    several jobs the main thread draws while workers evaluate, at most ``jobs + 1`` chunks in flight so that
    memory stays bounded.
    """
    sizes = [min(chunk, n_replicates - start) for start in range(0, n_replicates, chunk)]
    if jobs == 1 or len(sizes) == 1:
        return [plan.evaluate(_draw_counts(rng, plan.n_groups, rows), target, threshold) for rows in sizes]
    done: list[dict[str, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque[Future[dict[str, np.ndarray]]] = deque()
        for rows in sizes:
            counts = _draw_counts(rng, plan.n_groups, rows)
            pending.append(pool.submit(plan.evaluate, counts, target, threshold))
            if len(pending) > jobs:
                done.append(pending.popleft().result())
        done.extend(f.result() for f in pending)
    return done


def _estimates(
    points: dict[str, float], parts: list[dict[str, np.ndarray]], ci_level: float
) -> dict[str, BootstrapEstimate]:
    """Each metric's point, percentile CI and replicates (chunks joined in order)."""
    estimates = {}
    for key, point in points.items():
        reps = np.concatenate([part[key] for part in parts])
        low, high = percentile_ci(reps, ci_level)
        estimates[key] = BootstrapEstimate(
            point=point, low=low, high=high, replicates=reps, n_nan=int(np.isnan(reps).sum())
        )
    return estimates
