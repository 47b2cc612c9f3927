"""Binary clinical tasks: the samples of a task, their conditional score, and everything measured on them.

A task's samples are those whose true label lies at or under its positive or negative nodes; the score is
the conditional roll-up ``P(positive) / (P(positive) + P(negative))``. Per seed (:class:`TaskSeed`): the
threshold chosen on validation at the target sensitivity, the test metrics at that threshold with grouped
bootstrap replicates, the threshold-free AUCs, the optimistic test-chosen numbers, the ROC curve, the
operating point and the calibration of the score. :func:`evaluate_tasks` aggregates the seeds into one
:class:`~hierclf.evaluation.records.TaskResult` per task, with the provenance of
:data:`~hierclf.evaluation.catalog.TASK_TABLE`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.calibration import Reliability, measure_reliability
from hierclf.evaluation.catalog import (
    TASK_ECE_PROVENANCE,
    TASK_TABLE,
    THRESHOLD_PROVENANCE,
    ThresholdSource,
)
from hierclf.evaluation.notices import EvaluationError
from hierclf.evaluation.prediction_files import Predictions
from hierclf.evaluation.protocol_format import Protocol, TaskSpec
from hierclf.evaluation.records import SeedMetrics, TaskResult, aggregate_metrics, estimate_over_seeds
from hierclf.evaluation.splits import Split, as_predictions, covered, task_labels
from hierclf.functional import conditional
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["TaskCounts", "TaskSeed", "evaluate_tasks", "task_data", "task_scores"]


@dataclass(frozen=True)
class TaskCounts:
    """One seed's sample counts of a task (the keys of ``TaskResult.counts``)."""

    val_positive: int
    val_negative: int
    test_positive: int
    test_negative: int
    test_groups: int


@dataclass(frozen=True)
class OperatingPoint:
    """The validation-chosen threshold and the test sensitivity and specificity it gives."""

    threshold: float
    sensitivity: float
    specificity: float


@dataclass(frozen=True)
class TaskSeed:
    """Everything one seed measured for one task.

    Attributes:
        threshold: chosen on the threshold source at the target sensitivity.
        counts: samples on each side, per split.
        metrics: test values and bootstrap replicates of every :data:`TASK_TABLE` metric.
        fpr, tpr: the test ROC curve.
        operating_point: the threshold applied to test.
        calibration: ECE and reliability curve of the test score.
    """

    threshold: float
    counts: TaskCounts
    metrics: SeedMetrics
    fpr: np.ndarray
    tpr: np.ndarray
    operating_point: OperatingPoint
    calibration: Reliability


def task_scores(
    taxonomy: Taxonomy,
    task: TaskSpec,
    predictions: Predictions | str | Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples of a binary task and their conditional scores.

    Returns:
        ``(rows, y, scores)``: ``rows`` ``(m,)`` indices of the samples whose true label lies under the
        task's positive or negative nodes, ``y`` ``(m,)`` 1 for positive / 0 for negative, and ``scores``
        ``(m,)`` = ``P(positive) / (P(positive) + P(negative))`` from the rolled-up probabilities.
    """
    preds, name = as_predictions(predictions, taxonomy, "predictions")
    split = Split(name, preds, np.arange(len(preds)).astype(str), None)
    return task_data(taxonomy, task, split, "given")


def task_data(
    taxonomy: Taxonomy, task: TaskSpec, split: Split, role: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows in the task, y in {0, 1}, conditional score)`` of one split; errors for empty sides.

    Args:
        role: the split's role in messages (``"validation"``, ``"test"``).
    """
    below = covered(taxonomy, task.positive + task.negative, split.preds.columns)
    if below:
        raise EvaluationError(
            f"{split.name}: task {task.name!r}: node(s) {', '.join(map(repr, below))} lie "
            f"below the prediction columns ({', '.join(split.preds.columns)}), so their "
            "probability is unknown"
        )
    code = task_labels(taxonomy, split, task)
    rows = np.flatnonzero(code >= 0)
    y = code[rows]
    for value, side, nodes in ((1, "positive", task.positive), (0, "negative", task.negative)):
        if not (y == value).any():
            raise EvaluationError(
                f"{split.name}: task {task.name!r} has no {side} samples in the {role} split "
                f"(no true label under {', '.join(nodes)}); its metrics are undefined"
            )
    probs = np.asarray(split.preds.probs[rows], dtype=np.float64)
    score = np.asarray(
        conditional(probs, taxonomy, task.positive, task.negative, columns=list(split.preds.columns)),
        dtype=np.float64,
    )
    return rows, y, score


def evaluate_tasks(
    taxonomy: Taxonomy, proto: Protocol, val: list[Split], test: list[Split], source: ThresholdSource
) -> dict[str, TaskResult]:
    """Every task of the protocol over every seed (``val[k]`` chooses the threshold used on ``test[k]``)."""
    out = {}
    for task in proto.tasks:
        seeds = [measure_task_seed(taxonomy, proto, task, v, t, source) for v, t in zip(val, test)]
        out[task.name] = aggregate_task(proto, task, seeds, source)
    return out


def measure_task_seed(
    taxonomy: Taxonomy, proto: Protocol, task: TaskSpec, val: Split, test: Split, source: ThresholdSource
) -> TaskSeed:
    """One seed of one task: the threshold from ``val``, everything else on ``test``."""
    _, yv, sv = task_data(taxonomy, task, val, source.value)
    rows, yt, st = task_data(taxonomy, task, test, "test")
    threshold = float(M.threshold_at_sensitivity(yv, sv, proto.target_sensitivity))
    groups = test.groups[rows]
    metrics = _seed_metrics(
        proto, yt, st, groups, threshold, M.binary_metrics_at_threshold(yv, sv, threshold)
    )
    counts = TaskCounts(
        int((yv == 1).sum()),
        int((yv == 0).sum()),
        int((yt == 1).sum()),
        int((yt == 0).sum()),
        metrics.n_groups or 0,
    )
    fpr, tpr, _ = M.roc_curve(yt, st)
    point = OperatingPoint(threshold, metrics.values["sensitivity"], metrics.values["specificity"])
    return TaskSeed(
        threshold,
        counts,
        metrics,
        np.asarray(fpr, np.float64),
        np.asarray(tpr, np.float64),
        point,
        measure_reliability(yt, st, n_bins=proto.calibration_bins),
    )


def _seed_metrics(
    proto: Protocol,
    y: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    at_val: dict[str, float],
) -> SeedMetrics:
    """Test values of every :data:`TASK_TABLE` metric and the grouped bootstrap replicates of those with an
    interval (the threshold fixed, as chosen; the optimistic one re-chosen in each replicate)."""
    target = proto.target_sensitivity
    boot = M.bootstrap_binary(
        y,
        score,
        groups,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=target,
        threshold=threshold,
        ci_level=proto.bootstrap.ci_level,
    )
    at = M.binary_metrics_at_threshold(y, score, threshold)
    optimistic_spec, optimistic_thr = M.specificity_at_sensitivity(y, score, target)
    values = {
        "auc": float(M.roc_auc(y, score)),
        "partial_auc": float(M.partial_auc_above_sensitivity(y, score, target)),
        **{key: float(at[key]) for key in ("sensitivity", "specificity", "ppv", "npv")},
        "validation_sensitivity": float(at_val["sensitivity"]),
        "specificity_at_target_chosen_on_test": float(optimistic_spec),
        "threshold_chosen_on_test": float(optimistic_thr),
    }
    replicates = {
        m.key: np.asarray(boot[m.bootstrap].replicates, dtype=np.float64) for m in TASK_TABLE if m.bootstrap
    }
    return SeedMetrics(values, replicates, n=len(y), n_groups=int(len(np.unique(groups))))


def aggregate_task(
    proto: Protocol, task: TaskSpec, seeds: list[TaskSeed], source: ThresholdSource
) -> TaskResult:
    """The seeds of one task as its :class:`TaskResult`."""
    level, target = proto.bootstrap.ci_level, proto.target_sensitivity
    metrics = aggregate_metrics(
        [s.metrics for s in seeds],
        TASK_TABLE,
        level=level,
        provenance=lambda m: m.provenance_for(source, target),
    )
    n_val = [s.counts.val_positive + s.counts.val_negative for s in seeds]
    thresholds = estimate_over_seeds(
        [s.threshold for s in seeds],
        level=level,
        n=n_val,
        provenance=THRESHOLD_PROVENANCE.format(source=source.description, target=target),
    )
    calibration = {
        "ece": estimate_over_seeds(
            [s.calibration.ece for s in seeds],
            level=level,
            n=[s.metrics.n for s in seeds],
            provenance=TASK_ECE_PROVENANCE,
        ),
        "reliability": [s.calibration.curve() for s in seeds],
        "n_bins": proto.calibration_bins,
    }
    return TaskResult(
        task.name,
        list(task.positive),
        list(task.negative),
        source,
        {f.name: [getattr(s.counts, f.name) for s in seeds] for f in fields(TaskCounts)},
        thresholds,
        metrics,
        [{"fpr": s.fpr, "tpr": s.tpr} for s in seeds],
        [asdict(s.operating_point) for s in seeds],
        calibration,
    )
