"""Subgroups: the task metrics broken down by the values of metadata columns (sex, age band, localisation,
skin type), and each value against the rest or against a declared reference value.

Per value of each ``subgroups`` column: the test counts per seed and, per task, the counts, the
:data:`~hierclf.evaluation.catalog.SUBGROUP_TASK_KEYS` metrics at each seed's chosen threshold and the
calibration (ECE) of the task score, with grouped-bootstrap intervals; a proportion resting on few events
gets a binomial interval, and a number driven by fewer than ``min_group_size`` events (positives for a
sensitivity, negatives for a specificity) is flagged ``SMALL``. A numeric column is first binned by the
``bands`` the protocol declares (``subgroup_options``).

**Differences**: per value, each metric minus the same metric on the rest of the task's samples (or on the
``reference`` value), with a bootstrap interval and p-value: the two sides are subsets of one resampled data
set (:func:`~hierclf.evaluation.metrics.subset_bootstrap_binary` over all the task's groups), so the
interval of the difference keeps the pairing.

A small subgroup often misses a class in bootstrap replicates: that is expected there, so the bootstrap does
not log it (``warn_missing=False``); the count goes into one note per column instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.errors import UnknownNameError
from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import (
    SUBGROUP_TASK_KEYS,
    ReportedMetric,
    ThresholdSource,
    subgroup_provenance,
    task_metric,
)
from hierclf.evaluation.notices import Findings
from hierclf.evaluation.protocol_format import Protocol, SubgroupOptions
from hierclf.evaluation.records import (
    IntervalPolicy,
    SeedMetrics,
    TaskResult,
    aggregate_metrics,
    estimate_over_seeds,
    one_or_each,
)
from hierclf.evaluation.sample_metadata import Metadata
from hierclf.evaluation.splits import Split
from hierclf.evaluation.tasks import task_data
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["SUBGROUP_ECE", "band_labels", "evaluate_subgroups"]

SUBGROUP_ECE = ReportedMetric(
    "ece", "ECE", "test subgroup {column}={value}, conditional task score", events="samples"
)
_TABLE = tuple(task_metric(key) for key in SUBGROUP_TASK_KEYS) + (SUBGROUP_ECE,)
MISSING = "(missing)"


@dataclass(frozen=True)
class SubgroupSeed:
    """One seed's measurement of one task in one subgroup.

    Attributes:
        n_positive, n_negative: the subgroup's task samples.
        metrics: values (NaN without samples; AUC NaN without both classes) and, with both classes, the
            bootstrap replicates.
        missing: bootstrap replicates that missed a class (0 without a bootstrap).
        drawn: bootstrap replicates drawn (0 without a bootstrap).
    """

    n_positive: int
    n_negative: int
    metrics: SeedMetrics
    missing: int = 0
    drawn: int = 0


@dataclass(frozen=True)
class _Context:
    """What every subgroup of an evaluation shares: the protocol, the tasks' thresholds, each seed's task
    samples and scores (computed once), and the replicates kept for ``--save-replicates``."""

    proto: Protocol
    tasks: dict[str, TaskResult]
    test: list[Split]
    scored: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
    replicates: dict[str, np.ndarray]


def evaluate_subgroups(
    taxonomy: Taxonomy,
    proto: Protocol,
    meta: Metadata | None,
    tasks: dict[str, TaskResult],
    test: list[Split],
    findings: Findings,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, np.ndarray]]:
    """``({column: [row per value]}, replicates by path)`` for each of the protocol's ``subgroups`` columns
    (a warning and nothing when no metadata was given)."""
    if not proto.subgroups:
        return {}, {}
    if meta is None:
        findings.warn(
            f"SUBGROUPS NOT COMPUTED: the protocol lists {', '.join(proto.subgroups)} but no "
            "metadata was given (--metadata)."
        )
        return {}, {}
    columns = {column: meta.column(column) for column in proto.subgroups}  # unknown columns first
    scored = {(t.name, k): task_data(taxonomy, t, s, "test") for t in proto.tasks for k, s in enumerate(test)}
    context = _Context(proto, tasks, test, scored, {})
    rows = {
        column: _column_rows(context, column, values, proto.subgroup_options.get(column), findings)
        for column, values in columns.items()
    }
    return rows, context.replicates


def band_labels(values: np.ndarray, edges: list[float]) -> tuple[np.ndarray, list[str]]:
    """Numeric metadata binned by band edges: ``< a``, ``[a, b)``, ..., ``>= z``; text that is not a number
    (an empty cell) is ``(missing)``. Returns each value's label and the labels in band order.

    Example:
        >>> labels, order = band_labels(np.array(["25", "45.0", "", "80"]), [30, 60])
        >>> labels.tolist(), order
        (['< 30', '[30, 60)', '(missing)', '>= 60'], ['< 30', '[30, 60)', '>= 60', '(missing)'])
    """
    names = [f"< {edges[0]:g}"] + [f"[{a:g}, {b:g})" for a, b in zip(edges[:-1], edges[1:])]
    names.append(f">= {edges[-1]:g}")
    distinct, inverse = np.unique(values, return_inverse=True)  # parse each distinct text once
    number = np.array([_number(v) for v in distinct.tolist()], dtype=np.float64)[inverse.reshape(-1)]
    band = np.searchsorted(np.asarray(edges, dtype=np.float64), number, side="right")
    labels = np.where(
        np.isnan(number), MISSING, np.asarray(names, dtype=object)[np.minimum(band, len(edges))]
    )
    return labels.astype(str), names + [MISSING]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _levels(
    context: _Context, column: str, values_all: np.ndarray, options: SubgroupOptions | None
) -> tuple[list[np.ndarray], list[str]]:
    """Each seed's ``(n,)`` level of every sample, and the levels in report order (bands in band order,
    other values sorted)."""
    per_seed = [values_all[s.meta_rows] for s in context.test]
    if options is not None and options.bands is not None:
        binned = [band_labels(v, list(options.bands)) for v in per_seed]
        present = set(np.concatenate([b for b, _ in binned]).tolist())
        return [b for b, _ in binned], [name for name in binned[0][1] if name in present]
    return per_seed, sorted(set(np.unique(np.concatenate(per_seed)).tolist()))


def _column_rows(
    context: _Context,
    column: str,
    values_all: np.ndarray,
    options: SubgroupOptions | None,
    findings: Findings,
) -> list[dict[str, Any]]:
    """One row per value of ``column``; notes on the small values and on replicates that missed a class."""
    per_seed_values, levels = _levels(context, column, values_all, options)
    reference = options.reference if options is not None else None
    if reference is not None and reference not in levels:
        raise UnknownNameError(
            "subgroup level", reference, levels, f"for subgroup_options.{column}.reference"
        )
    rows, missing, drawn = [], 0, 0
    for value in levels:
        inside = [v == value for v in per_seed_values]
        n = [int(sel.sum()) for sel in inside]
        row: dict[str, Any] = {"value": value, "n": n, "tasks": {}}
        row["small"] = min(n) < context.proto.min_group_size
        for task in context.proto.tasks:
            seeds = [_measure_seed(context, task.name, k, sel) for k, sel in enumerate(inside)]
            row["tasks"][task.name] = _aggregate(context, column, value, task.name, seeds)
            missing += sum(s.missing for s in seeds)
            drawn += sum(s.drawn for s in seeds)
        rows.append(row)
    for task in context.proto.tasks:
        _differences(context, column, task.name, per_seed_values, rows, reference)
    _notes(context, column, rows, missing, drawn, findings)
    return rows


def _notes(
    context: _Context, column: str, rows: list[dict[str, Any]], missing: int, drawn: int, findings: Findings
) -> None:
    small = [str(r["value"]) for r in rows if r["small"]]
    if small:
        findings.note(
            f"subgroups of {column!r} with fewer than {context.proto.min_group_size} test samples (flagged "
            f"small): {', '.join(small)}"
        )
    if missing:
        findings.note(
            f"subgroups of {column!r}: {missing} of {drawn} bootstrap replicates missed a class (expected in "
            "small subgroups); the intervals use the others"
        )


def _measure_seed(context: _Context, task: str, k: int, inside: np.ndarray) -> SubgroupSeed:
    """Seed ``k`` of ``task`` restricted to the samples ``inside`` the subgroup (``(n,)`` bool)."""
    rows, y, score = context.scored[task, k]
    sel = inside[rows]
    ys, ss, gs = y[sel], score[sel], context.test[k].groups[rows][sel]
    n_pos, n_neg = int((ys == 1).sum()), int((ys == 0).sum())
    n_groups = int(len(np.unique(gs)))
    events = {"auc": min(n_pos, n_neg), "sensitivity": n_pos, "specificity": n_neg, "ece": len(ys)}
    if len(ys) == 0:
        values = dict.fromkeys((*SUBGROUP_TASK_KEYS, "ece"), math.nan)
        return SubgroupSeed(0, 0, SeedMetrics(values, n=0, n_groups=n_groups, events=events))
    threshold = context.tasks[task].thresholds.per_seed[k]
    at = M.binary_metrics_at_threshold(ys, ss, threshold)
    both = n_pos > 0 and n_neg > 0
    proto = context.proto
    values = {
        "auc": float(M.roc_auc(ys, ss)) if both else math.nan,
        "sensitivity": float(at["sensitivity"]),
        "specificity": float(at["specificity"]),
        "ece": float(M.expected_calibration_error(ys, ss, n_bins=proto.calibration_bins)),
    }
    called = ss >= threshold
    counts = {
        "sensitivity": M.effective_counts(called[ys == 1], gs[ys == 1]),
        "specificity": M.effective_counts(~called[ys == 0], gs[ys == 0]),
    }
    if not both:
        metrics = SeedMetrics(values, n=len(ys), n_groups=n_groups, counts=counts, events=events)
        return SubgroupSeed(n_pos, n_neg, metrics)
    boot = M.bootstrap_binary(
        ys,
        ss,
        gs,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        threshold=threshold,
        ci_level=proto.bootstrap.ci_level,
        queries=M.CurveQueries(calibration_bins=proto.calibration_bins),
        warn_missing=False,
    )
    replicates = {m.key: np.asarray(boot[m.bootstrap or m.key].replicates, dtype=np.float64) for m in _TABLE}
    metrics = SeedMetrics(values, replicates, len(ys), n_groups, counts, events)
    return SubgroupSeed(n_pos, n_neg, metrics, boot["auc"].n_nan, boot.n_replicates)


def _aggregate(
    context: _Context, column: str, value: str, task: str, seeds: list[SubgroupSeed]
) -> dict[str, Any]:
    """One task's cell of a subgroup row: counts, and each metric's estimate as JSON-ready data."""
    source: ThresholdSource = context.tasks[task].threshold_source
    estimates = aggregate_metrics(
        [s.metrics for s in seeds],
        _TABLE,
        level=context.proto.bootstrap.ci_level,
        provenance=lambda m: (
            m.provenance.format(column=column, value=value)
            if m is SUBGROUP_ECE
            else subgroup_provenance(m.key, column, value, source)
        ),
        policy=IntervalPolicy.of(context.proto),
    )
    for key, est in estimates.items():
        if est.replicates is not None:
            context.replicates[f"subgroups/{column}/{value}/{task}/{key}"] = est.replicates
    return {
        "n_positive": one_or_each([s.n_positive for s in seeds]),
        "n_negative": one_or_each([s.n_negative for s in seeds]),
        "n_groups": one_or_each([s.metrics.n_groups or 0 for s in seeds]),
        **{key: est.to_dict() for key, est in estimates.items()},
    }


def _differences(
    context: _Context,
    column: str,
    task: str,
    per_seed_values: list[np.ndarray],
    rows: list[dict[str, Any]],
    reference: str | None,
) -> None:
    """Each row's ``tasks[task]["difference"]``: every metric of the level minus the rest's (or the
    reference level's), with the interval and p-value of paired replicates."""
    by_level: dict[str, list[dict[str, tuple[float, np.ndarray]]]] = {}
    for k, values in enumerate(per_seed_values):  # a loop over seeds
        for value, diffs in _seed_differences(
            context, task, k, values, [r["value"] for r in rows], reference
        ):
            by_level.setdefault(value, []).append(diffs)
    proto = context.proto
    against = "the rest" if reference is None else reference
    for row in rows:
        seeds = by_level.get(row["value"], [])
        out: dict[str, Any] = {"against": against}
        if row["value"] == reference or len(seeds) != len(per_seed_values):
            row["tasks"][task]["difference"] = out | {"note": "not computed (a side lacks a class)"}
            continue
        for key in ("auc", "sensitivity", "specificity", "ece"):
            est = estimate_over_seeds(
                [d[key][0] for d in seeds],
                [d[key][1] for d in seeds],
                level=proto.bootstrap.ci_level,
                provenance=f"test subgroup {column}={row['value']} minus {against}",
            )
            reps = est.replicates if est.replicates is not None else np.zeros((0, 0))
            context.replicates[f"subgroups/{column}/{row['value']}/{task}/difference/{key}"] = reps
            out[key] = est.to_dict() | {"p_value": M.bootstrap_p_value(reps, 0.0)}
        row["tasks"][task]["difference"] = out


def _seed_differences(
    context: _Context, task: str, k: int, values: np.ndarray, levels: list[str], reference: str | None
) -> list[tuple[str, dict[str, tuple[float, np.ndarray]]]]:
    """Seed ``k``: per level, ``{metric: (point difference, replicate differences)}`` against the rest (or
    the reference level), both sides subsets of one resampled task."""
    rows, y, score = context.scored[task, k]
    level_of = values[rows]
    proto = context.proto
    compared = [lv for lv in levels if lv != reference]
    masks = [level_of == lv for lv in compared]
    others = [level_of == reference] if reference is not None else [~m for m in masks]
    results = M.subset_bootstrap_binary(
        y,
        score,
        context.test[k].groups[rows],
        np.stack(masks + others),
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        threshold=context.tasks[task].thresholds.per_seed[k],
        ci_level=proto.bootstrap.ci_level,
        queries=M.CurveQueries(calibration_bins=proto.calibration_bins),
    )
    mine, theirs = results[: len(masks)], results[len(masks) :]
    out = []
    for i, level in enumerate(compared):
        a, b = mine[i], theirs[0] if reference is not None else theirs[i]
        if a is None or b is None:
            continue
        out.append((level, {key: (a[key].point - b[key].point, a[key].replicates - b[key].replicates)
                            for key in ("auc", "sensitivity", "specificity", "ece")}))  # fmt: skip
    return out
