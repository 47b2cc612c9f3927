"""The evaluation's records: one seed's numbers (:class:`SeedMetrics`), the numbers across seeds
(:class:`Estimate`) and the results of each section (:class:`TaskResult`, :class:`PartitionResult`, the
whole :class:`EvaluationReport`), with their JSON form.

Every section measures each seed into a small typed record and turns the list of them into its result in
one step; :func:`aggregate_metrics` and :func:`estimate_over_seeds` are the one place where per-seed values
become an :class:`Estimate` (mean, sample standard deviation, pooled bootstrap interval) and where the
interval of each number is chosen (:class:`IntervalPolicy`): a proportion whose bootstrap interval is
degenerate, or that rests on few events, gets a (clustered) binomial interval instead; every number says
which interval it carries, and a zero-width interval or a number driven by few events carries a flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import (
    SMALL_FLAG,
    ZERO_WIDTH_FLAG,
    IntervalMethod,
    ReportedMetric,
    ThresholdSource,
)

__all__ = [
    "JSON_ROC_POINTS",
    "SYNTHETIC_BANNER",
    "Estimate",
    "EvaluationReport",
    "IntervalPolicy",
    "PartitionResult",
    "ReaderPoint",
    "SeedMetrics",
    "TaskResult",
    "aggregate_metrics",
    "choose_interval",
    "estimate_over_seeds",
    "iter_estimates",
    "one_or_each",
    "pooled_band",
]

if TYPE_CHECKING:  # pragma: no cover
    from hierclf.evaluation.protocol_format import Protocol

#: dataclass fields with this metadata stay out of report.json (the bootstrap replicates)
NOT_JSON = {"json": False}

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
        interval: how ``ci`` was computed (:class:`~hierclf.evaluation.catalog.IntervalMethod`); ``None``
            without an interval.
        events: the count that drives the number (positives for a sensitivity, negatives for a
            specificity, ...), per seed when the seeds differ; what a ``SMALL`` flag counts.
        flags: ``"SMALL"`` (fewer events than the protocol's ``min_group_size``), ``"ZERO-WIDTH"`` (an
            interval of width 0: every replicate gave the same value).
        replicates: ``(n_seeds, n_replicates)`` bootstrap replicates (not in ``report.json``; written by
            ``--save-replicates``).
    """

    value: float
    std: float
    per_seed: list[float]
    ci: tuple[float, float] = (math.nan, math.nan)
    ci_level: float = 0.95
    n: int | list[int] | None = None
    n_groups: int | list[int] | None = None
    provenance: str = ""
    interval: IntervalMethod | None = None
    events: int | list[int] | None = None
    flags: list[str] = field(default_factory=list)
    replicates: np.ndarray | None = field(default=None, repr=False, compare=False, metadata=NOT_JSON)

    def to_dict(self) -> dict[str, Any]:
        return _clean(_fields(self))


@dataclass
class ReaderPoint:
    """One reader's operating point (or the mean reader's), whether the model's ROC curve dominates it (per
    seed), and the model on test at the reader's sensitivity and at the reader's specificity.

    Attributes:
        model_specificity: the model's specificity at the reader's sensitivity (threshold chosen on test, as
            Haenssle et al. 2018 compare), with a grouped-bootstrap interval.
        model_sensitivity: the model's sensitivity at the reader's specificity.
        p_specificity, p_sensitivity: two-sided bootstrap p-values of those against the reader's own value.
        mean_reader: this is the mean of the task's readers (mean sensitivity, mean specificity).
    """

    reader: str
    sensitivity: float
    specificity: float
    dominated: list[bool] = field(default_factory=list)
    model_specificity: Estimate | None = None
    model_sensitivity: Estimate | None = None
    p_specificity: float | None = None
    p_sensitivity: float | None = None
    mean_reader: bool = False


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
    mean_reader: ReaderPoint | None = None
    reader_study: dict[str, Any] | None = None
    operating_rule: dict[str, Any] = field(default_factory=dict)
    utility: dict[str, Any] = field(default_factory=dict)
    roc_band: dict[str, Any] = field(default_factory=dict)


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
    resampling: dict[str, Any] = field(default_factory=dict)
    seed_table: list[dict[str, Any]] = field(default_factory=list)
    subgroup_replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False, metadata=NOT_JSON)
    mrmc: dict[str, np.ndarray] | None = field(default=None, repr=False, metadata=NOT_JSON)
    alerts: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

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
                "resampling": self.resampling,
                "seed_table": self.seed_table,
                "warnings": self.warnings,
                "alerts": self.alerts,
                "notes": self.notes,
                "provenance": self.provenance,
                "data": self.data,
                "primary": self.primary,
                "tasks": {k: _task_json(v) for k, v in self.tasks.items()},
                "partitions": {k: _fields(v) for k, v in self.partitions.items()},
                "hierarchical": {k: _fields(v) for k, v in self.hierarchical.items()},
                "calibration_nodes": self.calibration_nodes,
                "subgroups": self.subgroups,
            }
        )

    def replicates(self) -> dict[str, np.ndarray]:
        """Every bootstrap replicate array of the report by its path in ``report.json`` (e.g.
        ``tasks/mel_vs_nv/metrics/auc``), each ``(n_seeds, n_replicates)``: what ``--save-replicates``
        writes."""
        out = {path: est.replicates for path, est in iter_estimates(self) if est.replicates is not None}
        out.update(self.subgroup_replicates)
        return out


def iter_estimates(report: EvaluationReport) -> Iterator[tuple[str, Estimate]]:
    """``(path, estimate)`` of every :class:`Estimate` of a report except the subgroups' (their rows are
    JSON data; :attr:`EvaluationReport.subgroup_replicates` keeps their replicates)."""
    for name, task in report.tasks.items():
        yield from _task_estimates(name, task)
    for name, part in report.partitions.items():
        for key, est in part.metrics.items():
            yield f"partitions/{name}/metrics/{key}", est
        for cls, est in part.per_class_recall.items():
            yield f"partitions/{name}/per_class_recall/{cls}", est
    for key, est in report.hierarchical.items():
        yield f"hierarchical/{key}", est
    for node, cal in report.calibration_nodes.items():
        for key in ("ece", "brier"):
            if isinstance(cal.get(key), Estimate):
                yield f"calibration_nodes/{node}/{key}", cal[key]


def _task_estimates(name: str, task: TaskResult) -> Iterator[tuple[str, Estimate]]:
    for key, est in task.metrics.items():
        yield f"tasks/{name}/metrics/{key}", est
    yield f"tasks/{name}/thresholds", task.thresholds
    for key, value in task.calibration.items():
        if isinstance(value, Estimate):
            yield f"tasks/{name}/calibration/{key}", value
    if task.reader_fraction_dominated is not None:
        yield f"tasks/{name}/reader_fraction_dominated", task.reader_fraction_dominated
    for row in task.utility.get("prevalences", []):
        for key in ("ppv", "npv", "nnb"):
            yield f"tasks/{name}/utility/prevalence_{row['prevalence']:g}/{key}", row[key]
    points = task.readers + ([task.mean_reader] if task.mean_reader is not None else [])
    for point in points:
        for key in ("model_specificity", "model_sensitivity"):
            est = getattr(point, key)
            if est is not None:
                yield f"tasks/{name}/readers/{point.reader}/{key}", est


def _task_json(task: TaskResult) -> dict[str, Any]:
    out = _fields(task)
    for roc in out["roc"]:
        n = len(roc["fpr"])
        if n > JSON_ROC_POINTS:
            keep = np.unique(np.linspace(0, n - 1, JSON_ROC_POINTS).round().astype(np.int64))
            roc["fpr"], roc["tpr"] = roc["fpr"][keep], roc["tpr"][keep]
            roc["downsampled_from"] = n
    return out


def _fields(obj: Any) -> Any:
    """Like :func:`dataclasses.asdict`, without copying arrays and without the fields marked
    :data:`NOT_JSON` (the replicates)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _fields(getattr(obj, f.name)) for f in fields(obj) if f.metadata.get("json", True)}
    if isinstance(obj, dict):
        return {k: _fields(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_fields(v) for v in obj]
    return obj


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
        return _clean(_fields(obj))
    return obj


# --- from seeds to estimates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalPolicy:
    """Which interval each number gets (the protocol's ``intervals`` and ``min_group_size``).

    Attributes:
        proportions: ``"auto"`` (the percentile bootstrap, unless its interval has zero width or the
            successes or failures of a proportion number fewer than ``min_events`` in some seed: then the
            binomial interval), ``"bootstrap"``, ``"clopper_pearson"`` or ``"wilson"`` (always).
        exact: the binomial interval ``"auto"`` falls back to: ``"clopper_pearson"`` or ``"wilson"``.
        min_events: see ``proportions``.
        small: a number driven by fewer events than this is flagged ``SMALL``.
    """

    proportions: str = "auto"
    exact: str = "clopper_pearson"
    min_events: int = 10
    small: int = 30

    @classmethod
    def of(cls, proto: Protocol) -> IntervalPolicy:
        """The policy a protocol declares (``intervals`` and ``min_group_size``)."""
        spec = proto.intervals
        return cls(spec.proportions, spec.exact, spec.min_events, proto.min_group_size)


@dataclass(frozen=True)
class SeedMetrics:
    """One seed's numbers of one section.

    Attributes:
        values: the point value of each metric.
        replicates: ``(n_replicates,)`` bootstrap replicates of the metrics that have an interval.
        n: samples the values are computed on.
        n_groups: groups the bootstrap resampled (``None`` without a bootstrap).
        counts: the successes and trials of each proportion, with their clustered effective counts (what a
            binomial interval needs).
        events: the count that drives each number (positives for a sensitivity, ...).
        sizes: ``(n, n_groups)`` of the metrics measured on other samples than the section's (the
            validation sensitivity is measured on validation).
    """

    values: dict[str, float]
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    n: int = 0
    n_groups: int | None = None
    counts: dict[str, M.EffectiveCounts] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int | None]] = field(default_factory=dict)

    def size_of(self, key: str) -> tuple[int, int | None]:
        """``(n, n_groups)`` of one metric."""
        return self.sizes.get(key, (self.n, self.n_groups))


def aggregate_metrics(
    seeds: Sequence[SeedMetrics],
    table: Sequence[ReportedMetric],
    *,
    level: float,
    provenance: Callable[[ReportedMetric], str],
    policy: IntervalPolicy | None = None,
) -> dict[str, Estimate]:
    """The :class:`Estimate` of each metric of ``table`` that every seed measured, in table order.

    Args:
        seeds: one record per seed.
        table: the section's metrics (:mod:`hierclf.evaluation.catalog`).
        level: level of the pooled intervals.
        provenance: each metric's provenance string.
        policy: how intervals are chosen and numbers flagged (default :class:`IntervalPolicy`).
    """
    out = {}
    for metric in table:
        key = metric.key
        if not seeds or any(key not in s.values for s in seeds):
            continue
        replicates = [s.replicates[key] for s in seeds if key in s.replicates]
        sizes = [s.size_of(key) for s in seeds]
        groups = [g for _, g in sizes]
        counts = [s.counts[key] for s in seeds] if all(key in s.counts for s in seeds) else None
        events = [s.events[key] for s in seeds] if all(key in s.events for s in seeds) else None
        out[key] = estimate_over_seeds(
            [s.values[key] for s in seeds],
            replicates or None,
            level=level,
            n=[n for n, _ in sizes],
            n_groups=None if None in groups else [int(g) for g in groups if g is not None],
            provenance=provenance(metric),
            counts=counts if metric.proportion else None,
            events=events,
            policy=policy,
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
    counts: Sequence[M.EffectiveCounts] | None = None,
    events: Sequence[int] | None = None,
    policy: IntervalPolicy | None = None,
) -> Estimate:
    """Aggregate per-seed values: mean, sample std (``ddof=1``), and an interval: the pooled percentile
    interval of all replicates, or, for a proportion (``counts`` given) where :class:`IntervalPolicy` says
    so, the binomial interval at the seeds' mean effective counts (widened to the pooled bootstrap interval
    with several seeds).

    Example:
        >>> reps = [np.array([0.7, 0.8]), np.array([0.9, 1.0])]
        >>> e = estimate_over_seeds([0.8, 0.9], reps, level=0.5, n=[10, 10])
        >>> round(e.value, 6), round(e.std, 6), e.n, [round(x, 3) for x in e.ci], e.interval.value
        (0.85, 0.070711, 10, [0.775, 0.925], 'percentile_bootstrap')
    """
    vals = np.asarray(per_seed, dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    value = float(finite.mean()) if finite.size else math.nan
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan
    stacked = _stack(replicates)
    ci, method = choose_interval(stacked, counts, level, policy or IntervalPolicy())
    flags = _flags(ci, events, policy or IntervalPolicy())
    return Estimate(
        value,
        std,
        [float(v) for v in vals],
        ci,
        level,
        one_or_each(n),
        one_or_each(n_groups),
        provenance,
        method,
        one_or_each(events),
        flags,
        stacked,
    )


def _stack(replicates: Sequence[np.ndarray] | None) -> np.ndarray | None:
    """``(n_seeds, R)`` replicates (one row per seed; ragged seeds are padded with NaN)."""
    if not replicates:
        return None
    rows = [np.asarray(r, dtype=np.float64).ravel() for r in replicates]
    width = max(r.size for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):  # a loop over seeds
        out[i, : r.size] = r
    return out


def choose_interval(
    replicates: np.ndarray | None,
    counts: Sequence[M.EffectiveCounts] | None,
    level: float,
    policy: IntervalPolicy,
) -> tuple[tuple[float, float], IntervalMethod | None]:
    """The interval of one number and how it was computed (see :class:`IntervalPolicy`)."""
    boot = (math.nan, math.nan)
    if replicates is not None and np.isfinite(replicates).any():
        lo, hi = M.percentile_ci(replicates, level)
        boot = (float(lo), float(hi))
    has_boot = math.isfinite(boot[0]) and math.isfinite(boot[1])
    usable = [c for c in counts or () if c.n > 0]
    if not usable or policy.proportions == "bootstrap":
        return boot, (IntervalMethod.BOOTSTRAP if has_boot else None)
    exact = policy.proportions if policy.proportions != "auto" else policy.exact
    few = min(min(c.k, c.n - c.k) for c in usable) < policy.min_events
    if policy.proportions == "auto" and has_boot and boot[1] > boot[0] and not few:
        return boot, IntervalMethod.BOOTSTRAP
    k = float(np.mean([c.k_eff for c in usable]))
    n = float(np.mean([c.n_eff for c in usable]))
    interval = M.wilson if exact == "wilson" else M.clopper_pearson
    lo_arr, hi_arr = interval(min(k, n), n, level)
    lo, hi = float(lo_arr), float(hi_arr)
    if has_boot and len(counts or ()) > 1:  # keep the training variation the pooled replicates carry
        lo, hi = min(lo, boot[0]), max(hi, boot[1])
    clustered = any(c.design_effect > 1.0 for c in usable)
    method = {
        ("wilson", False): IntervalMethod.WILSON,
        ("wilson", True): IntervalMethod.WILSON_CLUSTERED,
        ("clopper_pearson", False): IntervalMethod.CLOPPER_PEARSON,
        ("clopper_pearson", True): IntervalMethod.CLOPPER_PEARSON_CLUSTERED,
    }[(exact, clustered)]
    return (lo, hi), method


def _flags(ci: tuple[float, float], events: Sequence[int] | None, policy: IntervalPolicy) -> list[str]:
    flags = []
    if events is not None and len(events) and min(events) < policy.small:
        flags.append(SMALL_FLAG)
    # width 0 up to rounding (a perfect classifier's partial AUC is 1 - 1e-16 in some replicates)
    if math.isfinite(ci[0]) and math.isfinite(ci[1]) and ci[1] - ci[0] <= 1e-12 * max(1.0, abs(ci[1])):
        flags.append(ZERO_WIDTH_FLAG)
    return flags


def pooled_band(replicates: Sequence[np.ndarray], level: float) -> list[list[float]]:
    """The pooled percentile band ``[low (K,), high (K,)]`` of the seeds' ``(R, K)`` replicates, column by
    column (NaN ignored; NaN where a column has no finite replicate), for the curves' bands.

    Example:
        >>> pooled_band([np.array([[0.0, 1.0], [1.0, np.nan]]), np.array([[2.0, 3.0]])], 0.5)
        [[0.5, 1.5], [1.5, 2.5]]
    """
    if not replicates:
        return [[], []]
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in replicates], axis=0)
    band = np.full((2, pooled.shape[1]), np.nan)
    finite = np.isfinite(pooled).any(axis=0)
    if finite.any():
        band[:, finite] = np.nanpercentile(
            pooled[:, finite], [50.0 * (1.0 - level), 50.0 * (1.0 + level)], axis=0
        )
    return [band[0].tolist(), band[1].tolist()]


def one_or_each(values: Sequence[int] | None) -> int | list[int] | None:
    """One number when every seed has the same, else the list."""
    if values is None:
        return None
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 else values
