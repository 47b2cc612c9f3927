"""The grouped bootstrap of a binary task, vectorised over replicates: AUC, specificity at the target
sensitivity (re-chosen per replicate) and the rates at a fixed threshold, from one sorted layout; on request
the partial AUC, ECE and Brier score, operating points re-chosen at other sensitivities or specificities
and the ROC curve's height (:class:`CurveQueries`); and the paired bootstrap of several score vectors on the
same cases, every one from the same group draws (:func:`paired_bootstrap_binary`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierclf.evaluation.metrics.calibration import expected_calibration_error
from hierclf.evaluation.metrics.checks import MetricError, _check_binary, _check_target
from hierclf.evaluation.metrics.resampling import (
    GroupSums,
    _check_replicates,
    _chunk_rows,
    _group_index,
    _n_jobs,
    per_group_sums,
    percentile_ci,
    replicate_map,
)
from hierclf.evaluation.metrics.roc import (
    binary_metrics_at_threshold,
    partial_auc_above_sensitivity,
    roc_auc,
    roc_curve,
    roc_polyline_height,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)

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
    ``"specificity"``, ``"ppv"``, ``"npv"`` at that threshold, and the scalar :class:`CurveQueries` keys
    (``"partial_auc"``, ``"ece"``, ``"brier"``). ``result["auc"].low`` etc. ``per_target`` holds the
    queries asked at several values: ``result.per_target["sensitivity_at_specificities"][i]`` is the
    estimate at the ``i``-th queried specificity.
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
    per_target: dict[str, list[BootstrapEstimate]] = field(default_factory=dict)

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
            **(
                {
                    "per_target": {
                        k: [e.to_dict(include_replicates) for e in v] for k, v in self.per_target.items()
                    }
                }
                if self.per_target
                else {}
            ),
        }


@dataclass(frozen=True)
class CurveQueries:
    """Numbers a bootstrap replicate computes besides AUC, specificity at the target and the fixed-threshold
    rates; each is computed from the same weighted layout, so it costs a few row operations.

    Attributes:
        partial_auc_above: the minimum sensitivity ``m`` of the partial AUC
            (:func:`~hierclf.evaluation.metrics.roc.partial_auc_above_sensitivity`); key ``"partial_auc"``.
        calibration_bins: ECE over that many ``(a, b]`` bins and the Brier score of the score read as a
            probability (it must lie in [0, 1]); keys ``"ece"``, ``"brier"``.
        sensitivities: specificity with the threshold re-chosen at each sensitivity; key
            ``"specificity_at_sensitivities"``, ``(R, len)``.
        specificities: sensitivity with the threshold re-chosen at each specificity; key
            ``"sensitivity_at_specificities"``, ``(R, len)``.
        false_positive_rates: height of the ROC polyline at each rate (the reader dominance test); key
            ``"roc_height"``, ``(R, len)``.
    """

    partial_auc_above: float | None = None
    calibration_bins: int | None = None
    sensitivities: tuple[float, ...] = ()
    specificities: tuple[float, ...] = ()
    false_positive_rates: tuple[float, ...] = ()

    def keys(self) -> tuple[str, ...]:
        """The keys these queries add to a replicate's numbers."""
        keys = []
        if self.partial_auc_above is not None:
            keys.append("partial_auc")
        if self.calibration_bins is not None:
            keys += ["ece", "brier"]
        for name, values in (
            ("specificity_at_sensitivities", self.sensitivities),
            ("sensitivity_at_specificities", self.specificities),
            ("roc_height", self.false_positive_rates),
        ):
            if values:
                keys.append(name)
        return tuple(keys)


@dataclass
class _Chunk:
    """One chunk's cumulative weights, shared by every number of the chunk.

    ``cn`` ``(chunk, n_neg + 1)``: negative weight above each position (column 0 = 0); ``wp`` / ``cp``
    ``(chunk, n_pos)``: positive weights and their cumulative sums; ``ge`` ``(chunk, n_pos)``: the negative
    weight scoring ``>=`` each positive; ``P``, ``N`` ``(chunk,)`` int64 totals; ``counts`` ``(chunk,
    n_groups)`` the group draws.
    """

    counts: np.ndarray
    cn: np.ndarray
    wp: np.ndarray
    cp: np.ndarray
    ge: np.ndarray
    P: np.ndarray
    N: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return (self.P > 0) & (self.N > 0)

    def tp_above(self, n_above: np.ndarray) -> np.ndarray:
        """Positive weight of the first ``n_above[r]`` positives of each row ``(chunk,)`` (0 when 0)."""
        rows = np.arange(self.cp.shape[0])
        if self.cp.shape[1] == 0:
            return np.zeros(rows.size)
        at = self.cp[rows, np.maximum(n_above - 1, 0)].astype(np.float64)
        return np.where(n_above > 0, at, 0.0)


def _smallest_reaching(target: float | np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per row, the smallest integer ``k`` with ``k / total >= target`` in float64 (the "reaches" test);
    ``target`` a number or one per row."""
    safe = np.maximum(total, 1.0)
    need = np.ceil(target * safe)
    need = np.where((need - 1.0) / safe >= target, need - 1.0, need)
    return np.where(need / safe < target, need + 1.0, need)


def _largest_within(specificity: float | np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per row, the largest integer ``a >= -1`` with ``1 - a / total >= specificity`` in float64
    (``specificity`` a number or one per row)."""
    safe = np.maximum(total, 1.0)
    allowed = np.floor((1.0 - specificity) * safe)
    allowed = np.where(1.0 - (allowed + 1.0) / safe >= specificity, allowed + 1.0, allowed)
    return np.where(1.0 - allowed / safe < specificity, allowed - 1.0, allowed)


def _blocks(sorted_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(start, end)`` of the tie block (equal scores) of each position of a sorted array (end exclusive)."""
    n = sorted_scores.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    first = np.flatnonzero(new)
    block = np.cumsum(new) - 1
    ends = np.r_[first[1:], n]
    return first[block], ends[block]


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
    int64 beyond). The optional :class:`CurveQueries` reuse the same matrices (:meth:`_queries`).
    """

    def __init__(
        self,
        y: np.ndarray,
        s: np.ndarray,
        group: np.ndarray,
        n_groups: int,
        queries: CurveQueries | None = None,
    ) -> None:
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
        self.gt = n_neg - np.searchsorted(asc_n, self.pos_scores, side="right")
        # negatives behind a dummy group (index n_groups, count 0) so the cumulative sum starts at 0 in place
        self.neg_take = np.r_[n_groups, self.neg_group]
        tied = np.flatnonzero(self.ge > self.gt)
        self.tied, self.tied_gt = tied, self.gt[tied]
        # a replicate weighs at most n_groups * (largest group) in total: int32 is exact below 2**31
        largest = int(np.bincount(group, minlength=n_groups).max()) if group.size else 0
        self.dtype = np.dtype(np.int32) if n_groups * largest < 2**31 - 1 else np.dtype(np.int64)
        self.queries = queries or CurveQueries()
        self._prepare_queries(y, s, group)

    def _prepare_queries(self, y: np.ndarray, s: np.ndarray, group: np.ndarray) -> None:
        """The extra layout the :class:`CurveQueries` need: tie blocks, positives above each negative, and
        the per-group, per-bin calibration sums."""
        asc_p = self.pos_scores[::-1]
        n_pos = self.pos_scores.size
        self.pos_block = _blocks(self.pos_scores)
        self.neg_block = _blocks(self.neg_scores)
        self.gt_pos = n_pos - np.searchsorted(asc_p, self.neg_scores, side="right")
        self.ge_pos = n_pos - np.searchsorted(asc_p, self.neg_scores, side="left")
        bins = self.queries.calibration_bins
        self.calibration: GroupSums | None = None
        if bins is not None:
            b = np.clip(np.ceil(s * bins).astype(np.int64) - 1, 0, bins - 1)
            cell = group * bins + b
            gap = np.bincount(cell, weights=y.astype(np.float64) - s, minlength=self.n_groups * bins)
            size = np.bincount(group, minlength=self.n_groups).astype(np.float64)
            brier = np.bincount(group, weights=(s - y) ** 2, minlength=self.n_groups)
            self.calibration = GroupSums(np.column_stack([gap.reshape(self.n_groups, bins), size, brier]))

    def row_bytes(self) -> int:
        """Bytes of work arrays per replicate (cumulative negatives, positive weights, their cumulative sum,
        the gathered negatives above each positive, the padded counts and the drawn counts)."""
        n_pos, n_neg = self.pos_scores.size, self.neg_scores.size
        extra = 16 * n_pos if self.queries.partial_auc_above is not None else 0
        return self.dtype.itemsize * (n_neg + 3 * n_pos + self.n_groups) + 8 * self.n_groups + n_pos + extra

    def _cumulate(self, counts: np.ndarray, *, positive_sums: bool = True) -> _Chunk:
        dt = self.dtype
        chunk = counts.shape[0]
        padded = np.zeros((chunk, self.n_groups + 1), dtype=dt)  # last column: the dummy group
        padded[:, :-1] = counts
        cn = np.take(padded, self.neg_take, axis=1)  # (chunk, n_neg + 1), column 0 weighs 0
        np.cumsum(cn, axis=1, dtype=dt, out=cn)
        wp = np.take(padded, self.pos_group, axis=1)  # (chunk, n_pos)
        if positive_sums:
            cp = np.cumsum(wp, axis=1, dtype=dt)
            P = cp[:, -1].astype(np.int64) if self.pos_scores.size else np.zeros(chunk, dtype=np.int64)
        else:
            cp = wp[:, :0]
            P = wp.sum(axis=1, dtype=np.int64)
        ge = np.take(cn, self.ge, axis=1)  # negatives scoring >= each positive
        return _Chunk(counts, cn, wp, cp, ge, P, cn[:, -1].astype(np.int64))

    def auc(self, counts: np.ndarray) -> np.ndarray:
        """Only the AUC of each replicate in a chunk (``(chunk,)``); the positives' cumulative weights are
        not needed, only their total."""
        c = self._cumulate(counts, positive_sums=False)
        return self._auc_and_target(c, 1.0, with_target=False)["auc"]

    def evaluate(self, counts: np.ndarray, target: float, threshold: float | None) -> dict[str, np.ndarray]:
        """Metrics of each replicate in a chunk. ``counts``: ``(chunk, n_groups)`` group counts."""
        c = self._cumulate(counts)
        out = self._auc_and_target(c, target)
        if threshold is not None:
            out.update(self._at_threshold(c, float(threshold)))
        out.update(self._queries(c))
        return out

    def _auc_and_target(self, c: _Chunk, target: float, *, with_target: bool = True) -> dict[str, np.ndarray]:
        """AUC, and the specificity and threshold at the target sensitivity re-chosen in each replicate."""
        below2 = 2 * np.einsum("ij,ij->i", c.wp, c.ge, dtype=np.int64)
        if self.tied.size:
            below2 += np.einsum(
                "ij,ij->i",
                np.take(c.wp, self.tied, axis=1),
                np.take(c.cn, self.tied_gt, axis=1) - np.take(c.ge, self.tied, axis=1),
                dtype=np.int64,
            )
        Pf, Nf = c.P.astype(np.float64), c.N.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = np.where(c.ok, (2.0 * Pf * Nf - below2) / (2.0 * Pf * Nf), np.nan)
        if not with_target:
            return {"auc": auc}
        spec, k = self._specificity_at(c, target)
        return {
            "auc": auc,
            "specificity_at_sensitivity": spec,
            "threshold_at_sensitivity": np.where(c.P > 0, self.pos_scores[k], np.nan),
        }

    def _specificity_at(self, c: _Chunk, target: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Specificity at the first positive ``k`` whose cumulative sensitivity reaches ``target`` (exact on
        integer counts), and ``k``, per row."""
        n_pos = self.pos_scores.size
        need = _smallest_reaching(target, c.P.astype(np.float64))
        need_int: np.ndarray = need.astype(self.dtype)[:, None]
        k = np.minimum(np.count_nonzero(np.less(c.cp, need_int), axis=1), max(n_pos - 1, 0))
        fp = c.ge[np.arange(c.cp.shape[0]), k].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c.ok, 1.0 - fp / c.N.astype(np.float64), np.nan), k

    def _at_threshold(self, c: _Chunk, thr: float) -> dict[str, np.ndarray]:
        """Sensitivity, specificity, PPV and NPV of the rule ``score >= thr``."""
        n_pos, n_neg = self.pos_scores.size, self.neg_scores.size
        Pf, Nf = c.P.astype(np.float64), c.N.astype(np.float64)
        kp = int(n_pos - np.searchsorted(self.pos_scores[::-1], thr, side="left"))
        kn = int(n_neg - np.searchsorted(self.neg_scores[::-1], thr, side="left"))
        tp = c.cp[:, kp - 1].astype(np.float64) if kp else np.zeros(c.cp.shape[0])
        fpt = c.cn[:, kn].astype(np.float64)
        fn = Pf - tp
        tn = Nf - fpt
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "sensitivity": np.where(c.P > 0, tp / Pf, np.nan),
                "specificity": np.where(c.N > 0, tn / Nf, np.nan),
                "ppv": np.where(tp + fpt > 0, tp / (tp + fpt), np.nan),
                "npv": np.where(tn + fn > 0, tn / (tn + fn), np.nan),
            }

    def _queries(self, c: _Chunk) -> dict[str, np.ndarray]:
        q = self.queries
        out: dict[str, np.ndarray] = {}
        if q.partial_auc_above is not None:
            out["partial_auc"] = self._partial_auc(c, q.partial_auc_above)
        if self.calibration is not None:
            out["ece"], out["brier"] = self._calibration(c)
        if q.sensitivities:
            out["specificity_at_sensitivities"] = np.stack(
                [self._specificity_at(c, t)[0] for t in q.sensitivities], axis=1
            )
        if q.specificities:
            out["sensitivity_at_specificities"] = np.stack(
                [self._sensitivity_at(c, p) for p in q.specificities], axis=1
            )
        if q.false_positive_rates:
            out["roc_height"] = np.stack([self._roc_height(c, x) for x in q.false_positive_rates], axis=1)
        return out

    def _partial_auc(self, c: _Chunk, m: float) -> np.ndarray:
        """Area under the ROC curve above sensitivity ``m``, over ``1 - m``.

        With ``k`` the first positive whose cumulative weight passes ``m P`` and ``[a, b)`` its tie block,
        the block is one straight ROC segment from ``(Cn[gt_a], Cp[a-1])`` to ``(Cn[ge_a], Cp[b-1])``: its
        part above ``m P`` is a trapezoid; every positive after it adds ``w_i (2N - Cn[ge_i] - Cn[gt_i]) / 2``
        (a suffix of the AUC numerator). Only the columns from the chunk's smallest ``b`` on are touched: for
        ``m = 0.95`` the last few percent of the positives.
        """
        rows = np.arange(c.cp.shape[0])
        Pf, Nf = c.P.astype(np.float64), c.N.astype(np.float64)
        mp = m * Pf
        k = np.minimum(np.count_nonzero(c.cp <= mp[:, None], axis=1), self.pos_scores.size - 1)
        a, b = self.pos_block[0][k], self.pos_block[1][k]
        before = c.tp_above(a)
        end = c.cp[rows, b - 1].astype(np.float64)
        cn_gt = c.cn[rows, self.gt[a]].astype(np.float64)
        cn_ge = c.cn[rows, self.ge[a]].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(end > before, (mp - before) / (end - before), 0.0)
            fpr_m = cn_gt + t * (cn_ge - cn_gt)
            block = (end - mp) * (2.0 * Nf - fpr_m - cn_ge)
            suffix = (Pf - end) * 2.0 * Nf - self._negatives_above_suffix(c, b)
            return np.where(c.ok, (block + suffix) / (2.0 * Nf * Pf * (1.0 - m)), np.nan)

    def _negatives_above_suffix(self, c: _Chunk, start: np.ndarray) -> np.ndarray:
        """Per row, ``sum_{i >= start} w_i (Cn[ge_i] + Cn[gt_i])`` (exact, int64), over the columns from the
        smallest ``start`` of the chunk on."""
        first = int(start.min()) if start.size else 0
        w = c.wp[:, first:].astype(np.int64)
        both = 2 * c.ge[:, first:].astype(np.int64)
        tied = self.tied[self.tied >= first]
        if tied.size:  # Cn[gt_i] - Cn[ge_i] for the positives tied with negatives
            both[:, tied - first] += np.take(c.cn, self.gt[tied], axis=1) - np.take(c.ge, tied, axis=1)
        inside = np.arange(first, self.pos_scores.size)[None, :] >= start[:, None]
        return np.einsum("ij,ij->i", np.where(inside, w, 0), both, dtype=np.int64).astype(np.float64)

    def _calibration(self, c: _Chunk) -> tuple[np.ndarray, np.ndarray]:
        """ECE ``sum_b |hits_b - confidence_b| / n`` and the Brier score, from per-group bin sums."""
        assert self.calibration is not None
        sums = self.calibration(c.counts)  # (chunk, bins + 2): hits - confidence per bin, n, squared errors
        n = sums[:, -2]
        with np.errstate(invalid="ignore", divide="ignore"):
            ece = np.abs(sums[:, :-2]).sum(axis=1) / n
            return np.where(n > 0, ece, np.nan), np.where(n > 0, sums[:, -1] / n, np.nan)

    def _sensitivity_at(self, c: _Chunk, specificity: float | np.ndarray) -> np.ndarray:
        """Sensitivity at the lowest threshold whose specificity reaches ``specificity``: all positives
        above the first negative that the allowed false positives cannot include."""
        allowed = _largest_within(specificity, c.N.astype(np.float64))
        j = np.count_nonzero(c.cn[:, 1:] <= allowed[:, None], axis=1)  # negatives that fit
        n_neg = self.neg_scores.size
        above = np.where(j < n_neg, self.gt_pos[np.minimum(j, max(n_neg - 1, 0))], self.pos_scores.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c.ok, c.tp_above(above) / c.P.astype(np.float64), np.nan)

    def _roc_height(self, c: _Chunk, fpr: float) -> np.ndarray:
        """Height (sensitivity) of the ROC polyline at false-positive rate ``fpr``; at a vertical step, its
        top (``fpr`` within 1e-12 of the step counts as on it, as in
        :func:`hierclf.evaluation.readers.reader_dominance`)."""
        rows = np.arange(c.cn.shape[0])
        Nf = c.N.astype(np.float64)
        j = np.count_nonzero(c.cn[:, 1:] <= ((fpr + 1e-12) * Nf)[:, None], axis=1)
        n_neg = self.neg_scores.size
        jj = np.minimum(j, max(n_neg - 1, 0))
        start, end = self.neg_block[0][jj], self.neg_block[1][jj]
        lo_fp, hi_fp = c.cn[rows, start].astype(np.float64), c.cn[rows, end].astype(np.float64)
        lo_tp, hi_tp = c.tp_above(self.gt_pos[jj]), c.tp_above(self.ge_pos[jj])
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.clip(np.where(hi_fp > lo_fp, (fpr * Nf - lo_fp) / (hi_fp - lo_fp), 0.0), 0.0, 1.0)
            height = np.where(j < n_neg, lo_tp + frac * (hi_tp - lo_tp), c.P.astype(np.float64))
            return np.where(c.ok, height / c.P.astype(np.float64), np.nan)


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
    queries: CurveQueries | None = None,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
    warn_missing: bool = True,
) -> BootstrapResult:
    """Grouped bootstrap of a binary task, vectorised over replicates.

    Each replicate resamples GROUPS (patients or lesions; rows when ``groups`` is None) with replacement, as
    :func:`~hierclf.evaluation.metrics.resampling.grouped_bootstrap_counts` does, and weights each sample by
    its group's draw count: ROC AUC, specificity at ``target_sensitivity`` with the threshold re-chosen in
    the replicate, that threshold, and, when ``threshold`` is given, sensitivity/specificity/PPV/NPV at that
    fixed threshold; ``queries`` add the partial AUC, ECE and Brier score, and operating points re-chosen at
    other sensitivities or specificities. Scores are sorted once; a chunk of replicates is evaluated with
    cumulative sums over ``(chunk, n)`` integer matrices. Points come from the unweighted functions on the
    full data (:func:`roc_auc`, ...); CIs are percentile intervals; replicates missing a class are ``nan``
    (``n_nan``).

    Args:
        y_true: ``(n,)`` 0/1 labels.
        scores: ``(n,)`` scores.
        groups: ``(n,)`` group labels (patient / lesion ids) or None.
        n_replicates: bootstrap replicates.
        seed: random seed (replicate ``r`` is reproducible with ``grouped_bootstrap_counts``).
        target_sensitivity: in (0, 1].
        threshold: optional fixed operating point (e.g. chosen on validation).
        ci_level: CI coverage.
        queries: optional extra numbers per replicate (:class:`CurveQueries`).
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
    (result,) = paired_bootstrap_binary(
        y_true,
        np.asarray(scores, dtype=np.float64)[None] if np.ndim(scores) == 1 else scores,
        groups,
        n_replicates=n_replicates,
        seed=seed,
        target_sensitivity=target_sensitivity,
        thresholds=None if threshold is None else [threshold],
        ci_level=ci_level,
        queries=queries,
        chunk_size=chunk_size,
        n_jobs=n_jobs,
        warn_missing=warn_missing,
    )
    return result


def paired_bootstrap_binary(
    y_true: Any,
    scores: Any,
    groups: Any = None,
    *,
    n_replicates: int = 1000,
    seed: int = 0,
    target_sensitivity: float = 0.95,
    thresholds: Any = None,
    ci_level: float = 0.95,
    queries: CurveQueries | None = None,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
    warn_missing: bool = True,
) -> list[BootstrapResult]:
    """:func:`bootstrap_binary` of ``K`` score vectors on the same cases, from the **same** group draws.

    Replicate ``r`` of every score vector resamples the same groups, so differences of replicates are the
    paired bootstrap of a difference (e.g. ``AUC_A - AUC_B``) and keep the correlation between models.
    With ``K = 1`` this is :func:`bootstrap_binary`, replicate for replicate.

    Args:
        y_true: ``(n,)`` 0/1 labels, shared by every score vector.
        scores: ``(K, n)`` scores.
        groups: ``(n,)`` group labels or None.
        thresholds: optional ``(K,)`` fixed operating point of each score vector.
        n_replicates, seed, target_sensitivity, ci_level, queries, chunk_size, n_jobs, warn_missing: as in
            :func:`bootstrap_binary`.

    Returns:
        One :class:`BootstrapResult` per score vector.
    """
    s2 = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    checked = [_check_binary(y_true, row) for row in s2]
    y = checked[0][0]
    group, n_groups = _group_index(groups, y.size)
    _positives_of_both_classes(y)
    items = [(y, sk, group) for _, sk, _ in checked]
    return _bootstrap_items(
        items,
        n_groups,
        n_replicates=n_replicates,
        seed=seed,
        target_sensitivity=target_sensitivity,
        thresholds=thresholds,
        ci_level=ci_level,
        queries=queries,
        chunk_size=chunk_size,
        n_jobs=n_jobs,
        warn_missing=warn_missing,
    )


def subset_bootstrap_binary(
    y_true: Any,
    scores: Any,
    groups: Any,
    subsets: Any,
    *,
    n_replicates: int = 1000,
    seed: int = 0,
    target_sensitivity: float = 0.95,
    threshold: float | None = None,
    ci_level: float = 0.95,
    queries: CurveQueries | None = None,
    chunk_size: int | None = None,
) -> list[BootstrapResult | None]:
    """:func:`bootstrap_binary` of several subsets of one data set (e.g. a subgroup and the rest), every one
    from the same draws of the whole data set's groups: replicate ``r`` of each subset is that subset of
    the one resampled data set, so differences of replicates are the bootstrap of a difference between
    subsets.

    Args:
        y_true, scores, groups: ``(n,)`` the whole data set.
        subsets: ``(K, n)`` bool, the samples of each subset.
        threshold: one fixed operating point for every subset.

    Returns:
        One :class:`BootstrapResult` per subset, ``None`` for a subset without both classes.
    """
    y, s, _ = _check_binary(y_true, scores)
    group, n_groups = _group_index(groups, y.size)
    masks = np.atleast_2d(np.asarray(subsets, dtype=bool))
    if masks.shape[1] != y.size:
        raise MetricError(f"subsets must be (K, {y.size}), got {masks.shape}")
    usable = [bool(y[m].any() and (~y[m]).any()) for m in masks]
    items = [(y[m], s[m], group[m]) for m, ok in zip(masks, usable) if ok]
    if not items:
        return [None] * len(masks)
    results = iter(
        _bootstrap_items(
            items,
            n_groups,
            n_replicates=n_replicates,
            seed=seed,
            target_sensitivity=target_sensitivity,
            thresholds=None if threshold is None else [threshold] * len(items),
            ci_level=ci_level,
            queries=queries,
            chunk_size=chunk_size,
            n_jobs=None,
            warn_missing=False,
        )
    )
    return [next(results) if ok else None for ok in usable]


def _bootstrap_items(
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_groups: int,
    *,
    n_replicates: int,
    seed: int,
    target_sensitivity: float,
    thresholds: Any,
    ci_level: float,
    queries: CurveQueries | None,
    chunk_size: int | None,
    n_jobs: int | None,
    warn_missing: bool,
) -> list[BootstrapResult]:
    """The bootstrap of several ``(y, scores, group codes)`` data sets over one set of ``n_groups`` groups,
    every one from the same draws."""
    target = _check_target(target_sensitivity)
    n_replicates = _check_replicates(n_replicates)
    thr = _check_thresholds(thresholds, len(items))
    queries = _check_queries(queries, np.concatenate([sk for _, sk, _ in items]))
    plans = [_BinaryBootstrapPlan(yk, sk, gk, n_groups, queries) for yk, sk, gk in items]
    row_bytes = sum(p.row_bytes() for p in plans)
    chunk = int(chunk_size) if chunk_size else _chunk_rows(row_bytes, n_replicates)
    rng = np.random.default_rng(seed)
    parts = _replicate_chunks(plans, rng, n_replicates, chunk, _n_jobs(n_jobs), target, thr)
    results = []
    for k, (yk, sk, _) in enumerate(items):
        points, per_target = _points(yk, sk, target, thr[k], queries)
        chunks = [part[k] for part in parts]
        estimates = _estimates(points, chunks, ci_level)
        n_nan = estimates["auc"].n_nan
        if n_nan and warn_missing and k == 0:
            logger.warning(
                "%d of %d bootstrap replicates miss a class (AUC undefined there)", n_nan, n_replicates
            )
        n_pos = int(yk.sum())
        results.append(
            BootstrapResult(
                estimates=estimates,
                n_samples=yk.size,
                n_positive=n_pos,
                n_negative=yk.size - n_pos,
                n_groups=n_groups,
                n_replicates=n_replicates,
                seed=seed,
                ci_level=float(ci_level),
                target_sensitivity=target,
                threshold=thr[k],
                per_target=_per_target_estimates(per_target, chunks, ci_level),
            )
        )
    return results


def _check_thresholds(thresholds: Any, k: int) -> list[float | None]:
    if thresholds is None:
        return [None] * k
    thr = [None if t is None else float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=object))]
    if len(thr) != k:
        raise MetricError(f"{len(thr)} thresholds for {k} score vectors")
    if any(t is not None and math.isnan(t) for t in thr):
        raise MetricError("threshold is NaN")
    return thr


def _check_queries(queries: CurveQueries | None, scores: np.ndarray) -> CurveQueries:
    q = queries or CurveQueries()
    if q.partial_auc_above is not None and not 0.0 <= float(q.partial_auc_above) < 1.0:
        raise MetricError(f"partial_auc_above must be in [0, 1), got {q.partial_auc_above}")
    if q.calibration_bins is not None:
        if int(q.calibration_bins) < 1:
            raise MetricError(f"calibration_bins must be >= 1, got {q.calibration_bins}")
        if (scores < 0).any() or (scores > 1).any():
            raise MetricError("calibration needs scores that are probabilities in [0, 1]")
    for name, values in (("sensitivities", q.sensitivities), ("specificities", q.specificities)):
        for v in values:
            _check_target(v, what=f"each of the queried {name}")
    if any(not 0.0 <= float(x) <= 1.0 for x in q.false_positive_rates):
        raise MetricError("queried false-positive rates must be in [0, 1]")
    return q


def _positives_of_both_classes(y: np.ndarray) -> int:
    """The number of positives of ``(n,)`` bool labels; both classes must be present."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise MetricError(
            f"bootstrap needs both classes, found {n_pos} positive and {y.size - n_pos} negative samples"
        )
    return n_pos


def _points(
    y: np.ndarray, s: np.ndarray, target: float, threshold: float | None, queries: CurveQueries
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Point estimates on the full data, keyed as the bootstrap's estimates (scalars, and per target)."""
    points: dict[str, float] = {"auc": roc_auc(y, s)}
    spec, thr_point = specificity_at_sensitivity(y, s, target)
    points["specificity_at_sensitivity"] = spec
    points["threshold_at_sensitivity"] = thr_point
    if threshold is not None:
        at = binary_metrics_at_threshold(y, s, float(threshold))
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            points[key] = at[key]
    if queries.partial_auc_above is not None:
        points["partial_auc"] = partial_auc_above_sensitivity(y, s, queries.partial_auc_above)
    if queries.calibration_bins is not None:
        points["ece"] = expected_calibration_error(y, s, n_bins=int(queries.calibration_bins))
        points["brier"] = float(np.mean((s - y) ** 2))
    per_target: dict[str, list[float]] = {}
    if queries.sensitivities:
        per_target["specificity_at_sensitivities"] = [
            specificity_at_sensitivity(y, s, t)[0] for t in queries.sensitivities
        ]
    if queries.specificities:
        per_target["sensitivity_at_specificities"] = [
            sensitivity_at_specificity(y, s, p)[0] for p in queries.specificities
        ]
    if queries.false_positive_rates:
        fpr, tpr, _ = roc_curve(y, s)
        heights = roc_polyline_height(fpr, tpr, np.asarray(queries.false_positive_rates, dtype=np.float64))
        per_target["roc_height"] = [float(h) for h in heights]
    return points, per_target


def _replicate_chunks(
    plans: list[_BinaryBootstrapPlan],
    rng: np.random.Generator,
    n_replicates: int,
    chunk: int,
    jobs: int,
    target: float,
    thresholds: list[float | None],
) -> list[list[dict[str, np.ndarray]]]:
    """Every chunk's metrics of every plan, in replicate order; each chunk's group counts are drawn once
    and evaluated by every plan (:func:`~hierclf.evaluation.metrics.resampling.replicate_map`)."""

    def run(counts: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [p.evaluate(counts, target, t) for p, t in zip(plans, thresholds)]

    return replicate_map(run, plans[0].n_groups, n_replicates, rng, chunk=chunk, jobs=jobs)


def _estimate(point: float, reps: np.ndarray, ci_level: float) -> BootstrapEstimate:
    low, high = percentile_ci(reps, ci_level)
    return BootstrapEstimate(
        point=point, low=low, high=high, replicates=reps, n_nan=int(np.isnan(reps).sum())
    )


def _estimates(
    points: dict[str, float], parts: list[dict[str, np.ndarray]], ci_level: float
) -> dict[str, BootstrapEstimate]:
    """Each metric's point, percentile CI and replicates (chunks joined in order)."""
    return {
        key: _estimate(point, np.concatenate([part[key] for part in parts]), ci_level)
        for key, point in points.items()
    }


def _per_target_estimates(
    points: dict[str, list[float]], parts: list[dict[str, np.ndarray]], ci_level: float
) -> dict[str, list[BootstrapEstimate]]:
    """The estimates of the per-target queries: one list per key, one estimate per target."""
    out = {}
    for key, values in points.items():
        reps = np.concatenate([part[key] for part in parts])  # (R, targets)
        out[key] = [
            _estimate(float(v), np.ascontiguousarray(reps[:, i]), ci_level) for i, v in enumerate(values)
        ]
    return out


class OneVsRestPlans:
    """One sorted layout per class for the one-vs-rest AUCs of a multi-class prediction; ``macro(counts)``
    is each replicate's mean AUC over the classes present in it (NaN where fewer than two are)."""

    def __init__(self, y: np.ndarray, probs: np.ndarray, group: np.ndarray, n_groups: int) -> None:
        present = [c for c in range(probs.shape[1]) if 0 < int((y == c).sum()) < y.size]
        self.plans = [_BinaryBootstrapPlan(y == c, probs[:, c], group, n_groups) for c in present]

    def row_bytes(self) -> int:
        return sum(plan.row_bytes() for plan in self.plans) or 1

    def macro(self, counts: np.ndarray) -> np.ndarray:
        if len(self.plans) < 2:
            return np.full(counts.shape[0], np.nan)
        aucs = np.stack([plan.auc(counts) for plan in self.plans], axis=1)  # (chunk, classes), NaN if absent
        present = np.count_nonzero(~np.isnan(aucs), axis=1)
        mean = np.nansum(aucs, axis=1) / np.maximum(present, 1)
        return np.where(present >= 2, mean, np.nan)


def bootstrap_macro_auc(
    y_true: Any,
    probs: Any,
    groups: Any = None,
    *,
    n_replicates: int = 1000,
    seed: int = 0,
    chunk_size: int | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Grouped-bootstrap replicates ``(n_replicates,)`` of the macro one-vs-rest AUC
    (:func:`~hierclf.evaluation.metrics.multiclass.macro_ovr_auc`): each replicate's mean AUC over the
    classes present in it, NaN where fewer than two are. The draws are those of :func:`bootstrap_binary`
    (and of :func:`~hierclf.evaluation.metrics.resampling.grouped_bootstrap_counts`) for the same groups and
    seed; each class is one sorted layout (:class:`OneVsRestPlans`), every class evaluated on the same
    counts.

    Args:
        y_true: ``(n,)`` class indices.
        probs: ``(n, n_classes)`` scores.
        groups: ``(n,)`` group labels or None.
    """
    n_replicates = _check_replicates(n_replicates)
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true).astype(np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise MetricError(
            f"y_true {y.shape} and probs {p.shape} do not match: expected (n,) and (n, n_classes)"
        )
    group, n_groups = _group_index(groups, y.size)
    plans = OneVsRestPlans(y, p, group, n_groups)
    chunk = int(chunk_size) if chunk_size else _chunk_rows(plans.row_bytes(), n_replicates)
    rng = np.random.default_rng(seed)
    return np.concatenate(
        replicate_map(plans.macro, n_groups, n_replicates, rng, chunk=chunk, jobs=_n_jobs(n_jobs))
    )


def bootstrap_reader_comparison(
    y_true: Any,
    model_scores: Any,
    reader_decisions: Any,
    groups: Any = None,
    *,
    n_replicates: int = 1000,
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """A reader against ``K`` model score vectors on the same cases, paired: in each replicate (groups drawn
    once) the reader's sensitivity and specificity, and each model's specificity at the reader's
    sensitivity and sensitivity at the reader's specificity *of that replicate* (the matched operating point
    re-chosen in each), so the differences carry the reader's uncertainty as well as the model's.

    Args:
        y_true: ``(n,)`` 0/1 labels of the cases the reader read.
        model_scores: ``(K, n)`` the model's scores on them (one row per seed).
        reader_decisions: ``(n,)`` 0/1: the reader called the case positive.
        groups: ``(n,)`` group labels or None.

    Returns:
        ``"reader_sensitivity"``, ``"reader_specificity"`` ``(R,)``; ``"model_specificity"``,
        ``"model_sensitivity"`` ``(K, R)``; NaN where a replicate missed a class.
    """
    n_replicates = _check_replicates(n_replicates)
    s2 = np.atleast_2d(np.asarray(model_scores, dtype=np.float64))
    y = _check_binary(y_true, s2[0])[0]
    d = np.asarray(reader_decisions).astype(bool)
    group, n_groups = _group_index(groups, y.size)
    _positives_of_both_classes(y)
    plans = [_BinaryBootstrapPlan(y, _check_binary(y, row)[1], group, n_groups) for row in s2]
    reader = GroupSums(per_group_sums(np.stack([y & d, y, ~y & ~d, ~y], axis=1), group, n_groups))

    def run(counts: np.ndarray) -> dict[str, np.ndarray]:
        sums = reader(counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens, spec = sums[:, 0] / sums[:, 1], sums[:, 2] / sums[:, 3]
        targets = np.where(np.isfinite(sens), np.maximum(sens, 1e-300), 1.0)
        floors = np.where(np.isfinite(spec), np.maximum(spec, 1e-300), 1.0)
        model_spec, model_sens = [], []
        for plan in plans:  # a loop over the model's seeds
            c = plan._cumulate(counts)
            model_spec.append(np.where(np.isfinite(sens), plan._specificity_at(c, targets)[0], np.nan))
            model_sens.append(np.where(np.isfinite(spec), plan._sensitivity_at(c, floors), np.nan))
        return {
            "reader_sensitivity": sens,
            "reader_specificity": spec,
            "model_specificity": np.stack(model_spec),
            "model_sensitivity": np.stack(model_sens),
        }

    chunk = int(chunk_size) if chunk_size else _chunk_rows(sum(p.row_bytes() for p in plans), n_replicates)
    parts = replicate_map(
        run, n_groups, n_replicates, np.random.default_rng(seed), chunk=chunk, jobs=_n_jobs(None)
    )
    out = {key: np.concatenate([p[key] for p in parts], axis=-1) for key in parts[0]}
    # a rate of 0 is met by every threshold: the model is at the trivial corner there
    out["model_specificity"] = np.where(out["reader_sensitivity"] == 0, 1.0, out["model_specificity"])
    out["model_sensitivity"] = np.where(out["reader_specificity"] == 0, 1.0, out["model_sensitivity"])
    return out
