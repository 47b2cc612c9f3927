"""The evaluation's records: one seed's numbers (:class:`SeedMetrics`), the numbers across seeds
(:class:`Estimate`) and the results of each section (:class:`TaskResult`, :class:`PartitionResult`, the
whole :class:`EvaluationReport`), with their JSON form.

Every section measures each seed into a small typed record and turns the list of them into its result in
one step; :func:`aggregate_metrics` and :func:`estimate_over_seeds` are the one place where per-seed values
become an :class:`Estimate` (mean, sample standard deviation, pooled bootstrap interval).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from enum import Enum
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import ReportedMetric, ThresholdSource

__all__ = [
    "JSON_ROC_POINTS",
    "SYNTHETIC_BANNER",
    "Estimate",
    "EvaluationReport",
    "PartitionResult",
    "ReaderPoint",
    "SeedMetrics",
    "TaskResult",
    "aggregate_metrics",
    "estimate_over_seeds",
    "one_or_each",
]

SYNTHETIC_BANNER = "SYNTHETIC DATA — not a clinical result"
#: ROC curves in report.json keep at most this many points (evenly spaced along the curve, ends kept)
JSON_ROC_POINTS = 1001


@dataclass
class Estimate:
    """One reported number across seeds.

    Attributes:
        value: mean over seeds (NaN seeds ignored; NaN if every seed is NaN).
        std: sample standard deviation over seeds (``ddof=1``); NaN with one seed.
        per_seed: the value of each seed.
        ci: pooled percentile bootstrap interval (the replicates of all seeds together); NaN when the number
            has no bootstrap.
        ci_level: level of ``ci``.
        n: samples the number is computed on (per seed when the seeds differ).
        n_groups: groups (patients, lesions) the bootstrap resampled (per seed when they differ).
        provenance: where the number comes from, e.g. ``"test, at the threshold chosen on validation"``.
    """

    value: float
    std: float
    per_seed: list[float]
    ci: tuple[float, float] = (math.nan, math.nan)
    ci_level: float = 0.95
    n: int | list[int] | None = None
    n_groups: int | list[int] | None = None
    provenance: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class ReaderPoint:
    """One reader's operating point and whether the model's ROC curve dominates it (per seed)."""

    reader: str
    sensitivity: float
    specificity: float
    dominated: list[bool] = field(default_factory=list)


@dataclass
class TaskResult:
    """Everything measured for one binary task."""

    name: str
    positive: list[str]
    negative: list[str]
    threshold_source: ThresholdSource
    counts: dict[str, list[int]]
    thresholds: Estimate
    metrics: dict[str, Estimate]
    roc: list[dict[str, np.ndarray]]
    operating_points: list[dict[str, float]]
    calibration: dict[str, Any]
    readers: list[ReaderPoint] = field(default_factory=list)
    reader_fraction_dominated: Estimate | None = None


@dataclass
class PartitionResult:
    """Multi-class summary at one cut of the tree."""

    name: str
    classes: list[str]
    n: list[int]
    excluded: list[int]
    confusion: list[np.ndarray]
    per_class_recall: dict[str, Estimate]
    metrics: dict[str, Estimate]
    notes: list[str] = field(default_factory=list)


@dataclass
class EvaluationReport:
    """The result of :func:`~hierclf.evaluation.pipeline.evaluate`;
    :func:`hierclf.evaluation.report.write_report` renders it."""

    taxonomy: str
    protocol: dict[str, Any]
    seeds: list[str]
    synthetic: bool
    threshold_source: ThresholdSource
    group_column: str | None
    warnings: list[str]
    notes: list[str]
    primary: dict[str, Any]
    tasks: dict[str, TaskResult]
    partitions: dict[str, PartitionResult]
    hierarchical: dict[str, Estimate]
    calibration_nodes: dict[str, dict[str, Any]]
    subgroups: dict[str, list[dict[str, Any]]]
    validation: list[str] = field(default_factory=list)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN -> ``None``, arrays -> lists, the threshold source -> its value)."""
        return _clean(
            {
                "synthetic": self.synthetic,
                "banner": SYNTHETIC_BANNER if self.synthetic else None,
                "taxonomy": self.taxonomy,
                "protocol": self.protocol,
                "seeds": self.seeds,
                "validation": self.validation,
                "n_seeds": self.n_seeds,
                "threshold_source": self.threshold_source,
                "group_column": self.group_column,
                "warnings": self.warnings,
                "notes": self.notes,
                "primary": self.primary,
                "tasks": {k: _task_json(v) for k, v in self.tasks.items()},
                "partitions": {k: asdict(v) for k, v in self.partitions.items()},
                "hierarchical": {k: asdict(v) for k, v in self.hierarchical.items()},
                "calibration_nodes": self.calibration_nodes,
                "subgroups": self.subgroups,
            }
        )


def _task_json(task: TaskResult) -> dict[str, Any]:
    out = asdict(task)
    for roc in out["roc"]:
        n = len(roc["fpr"])
        if n > JSON_ROC_POINTS:
            keep = np.unique(np.linspace(0, n - 1, JSON_ROC_POINTS).round().astype(np.int64))
            roc["fpr"], roc["tpr"] = roc["fpr"][keep], roc["tpr"][keep]
            roc["downsampled_from"] = n
    return out


def _clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, numpy scalars and arrays -> Python values, enums -> their value."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if is_dataclass(obj) and not isinstance(obj, type):
        return _clean(asdict(obj))
    return obj


# --- from seeds to estimates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedMetrics:
    """One seed's numbers of one section.

    Attributes:
        values: the point value of each metric.
        replicates: ``(n_replicates,)`` bootstrap replicates of the metrics that have an interval.
        n: samples the values are computed on.
        n_groups: groups the bootstrap resampled (``None`` without a bootstrap).
    """

    values: dict[str, float]
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    n: int = 0
    n_groups: int | None = None


def aggregate_metrics(
    seeds: Sequence[SeedMetrics],
    table: Sequence[ReportedMetric],
    *,
    level: float,
    provenance: Callable[[ReportedMetric], str],
) -> dict[str, Estimate]:
    """The :class:`Estimate` of each metric of ``table`` that every seed measured, in table order.

    Args:
        seeds: one record per seed.
        table: the section's metrics (:mod:`hierclf.evaluation.catalog`).
        level: level of the pooled intervals.
        provenance: each metric's provenance string.
    """
    out = {}
    groups = [s.n_groups for s in seeds]
    for metric in table:
        key = metric.key
        if not seeds or any(key not in s.values for s in seeds):
            continue
        replicates = [s.replicates[key] for s in seeds if key in s.replicates]
        out[key] = estimate_over_seeds(
            [s.values[key] for s in seeds],
            replicates or None,
            level=level,
            n=[s.n for s in seeds],
            n_groups=None if None in groups else [int(g) for g in groups if g is not None],
            provenance=provenance(metric),
        )
    return out


def estimate_over_seeds(
    per_seed: Sequence[float] | np.ndarray,
    replicates: Sequence[np.ndarray] | None = None,
    *,
    level: float = 0.95,
    n: Sequence[int] | None = None,
    n_groups: Sequence[int] | None = None,
    provenance: str = "",
) -> Estimate:
    """Aggregate per-seed values: mean, sample std (``ddof=1``), pooled percentile CI of all replicates.

    Example:
        >>> reps = [np.array([0.7, 0.8]), np.array([0.9, 1.0])]
        >>> e = estimate_over_seeds([0.8, 0.9], reps, level=0.5, n=[10, 10])
        >>> round(e.value, 6), round(e.std, 6), e.n, [round(x, 3) for x in e.ci]
        (0.85, 0.070711, 10, [0.775, 0.925])
    """
    vals = np.asarray(per_seed, dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    value = float(finite.mean()) if finite.size else math.nan
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    ci = (math.nan, math.nan)
    if replicates:
        pooled = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in replicates])
        if np.isfinite(pooled).any():
            lo, hi = M.percentile_ci(pooled, level)
            ci = (float(lo), float(hi))
    return Estimate(
        value, std, [float(v) for v in vals], ci, level, one_or_each(n), one_or_each(n_groups), provenance
    )


def one_or_each(values: Sequence[int] | None) -> int | list[int] | None:
    """One number when every seed has the same, else the list."""
    if values is None:
        return None
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 else values
