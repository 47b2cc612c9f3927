"""Subgroups: the task metrics broken down by the values of metadata columns (sex, localisation, skin type).

Per value of each ``subgroups`` column: the test counts per seed and, per task, the counts and the
:data:`~hierclf.evaluation.catalog.SUBGROUP_TASK_KEYS` metrics at each seed's chosen threshold, with grouped
bootstrap intervals. Values with fewer than ``min_group_size`` test samples are flagged small. A small
subgroup often misses a class in many bootstrap replicates: that is expected there, so the bootstrap does
not log it (``warn_missing=False``); the count goes into one note per column instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import SUBGROUP_TASK_KEYS, ThresholdSource, subgroup_provenance, task_metric
from hierclf.evaluation.notices import Findings
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.records import SeedMetrics, TaskResult, aggregate_metrics, one_or_each
from hierclf.evaluation.sample_metadata import Metadata
from hierclf.evaluation.splits import Split
from hierclf.evaluation.tasks import task_data
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["evaluate_subgroups"]

_TABLE = tuple(task_metric(key) for key in SUBGROUP_TASK_KEYS)


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
    """What every subgroup of an evaluation shares: the protocol, the tasks' thresholds and each seed's task
    samples and scores (computed once)."""

    proto: Protocol
    tasks: dict[str, TaskResult]
    test: list[Split]
    scored: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def evaluate_subgroups(
    taxonomy: Taxonomy,
    proto: Protocol,
    meta: Metadata | None,
    tasks: dict[str, TaskResult],
    test: list[Split],
    findings: Findings,
) -> dict[str, list[dict[str, Any]]]:
    """``{column: [row per value]}`` for each of the protocol's ``subgroups`` columns (a warning and nothing
    when no metadata was given)."""
    if not proto.subgroups:
        return {}
    if meta is None:
        findings.warn(
            f"SUBGROUPS NOT COMPUTED: the protocol lists {', '.join(proto.subgroups)} but no "
            "metadata was given (--metadata)."
        )
        return {}
    columns = {column: meta.column(column) for column in proto.subgroups}  # unknown columns first
    scored = {(t.name, k): task_data(taxonomy, t, s, "test") for t in proto.tasks for k, s in enumerate(test)}
    context = _Context(proto, tasks, test, scored)
    return {column: _column_rows(context, column, values, findings) for column, values in columns.items()}


def _column_rows(
    context: _Context, column: str, values_all: np.ndarray, findings: Findings
) -> list[dict[str, Any]]:
    """One row per value of ``column``; notes on the small values and on replicates that missed a class."""
    per_seed_values = [values_all[s.meta_rows] for s in context.test]  # (n,) column value of each sample
    rows, missing, drawn = [], 0, 0
    for value in sorted(set(np.unique(np.concatenate(per_seed_values)).tolist())):
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
    return rows


def _measure_seed(context: _Context, task: str, k: int, inside: np.ndarray) -> SubgroupSeed:
    """Seed ``k`` of ``task`` restricted to the samples ``inside`` the subgroup (``(n,)`` bool)."""
    rows, y, score = context.scored[task, k]
    sel = inside[rows]
    ys, ss, gs = y[sel], score[sel], context.test[k].groups[rows][sel]
    n_pos, n_neg = int((ys == 1).sum()), int((ys == 0).sum())
    n_groups = int(len(np.unique(gs)))
    if len(ys) == 0:
        return SubgroupSeed(
            0, 0, SeedMetrics(dict.fromkeys(SUBGROUP_TASK_KEYS, math.nan), n=0, n_groups=n_groups)
        )
    threshold = context.tasks[task].thresholds.per_seed[k]
    at = M.binary_metrics_at_threshold(ys, ss, threshold)
    both = n_pos > 0 and n_neg > 0
    values = {
        "auc": float(M.roc_auc(ys, ss)) if both else math.nan,
        "sensitivity": float(at["sensitivity"]),
        "specificity": float(at["specificity"]),
    }
    if not both:
        return SubgroupSeed(n_pos, n_neg, SeedMetrics(values, n=len(ys), n_groups=n_groups))
    proto = context.proto
    boot = M.bootstrap_binary(
        ys,
        ss,
        gs,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        threshold=threshold,
        ci_level=proto.bootstrap.ci_level,
        warn_missing=False,
    )
    replicates = {
        m.key: np.asarray(boot[m.bootstrap].replicates, dtype=np.float64) for m in _TABLE if m.bootstrap
    }
    metrics = SeedMetrics(values, replicates, n=len(ys), n_groups=n_groups)
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
        provenance=lambda m: subgroup_provenance(m.key, column, value, source),
    )
    return {
        "n_positive": one_or_each([s.n_positive for s in seeds]),
        "n_negative": one_or_each([s.n_negative for s in seeds]),
        "n_groups": one_or_each([s.metrics.n_groups or 0 for s in seeds]),
        **{key: est.to_dict() for key, est in estimates.items()},
    }
