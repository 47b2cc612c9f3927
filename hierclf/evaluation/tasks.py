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
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.calibration import (
    TASK_CALIBRATION_TABLE,
    Reliability,
    measure_reliability,
    measure_task_calibration,
    reliability_band,
)
from hierclf.evaluation.catalog import (
    TASK_TABLE,
    THRESHOLD_PROVENANCE,
    ThresholdSource,
)
from hierclf.evaluation.notices import EvaluationError
from hierclf.evaluation.prediction_files import Predictions
from hierclf.evaluation.protocol_format import Protocol, TaskSpec
from hierclf.evaluation.readers import place_readers, reader_points
from hierclf.evaluation.records import (
    IntervalPolicy,
    SeedMetrics,
    TaskResult,
    aggregate_metrics,
    estimate_over_seeds,
    pooled_band,
)
from hierclf.evaluation.splits import Split, as_predictions, covered, task_labels
from hierclf.evaluation.utility import (
    DecisionSeed,
    aggregate_decision_curve,
    choose_threshold,
    measure_decision_curve,
    predictive_values,
    threshold_replicates,
)
from hierclf.functional import conditional
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "ReaderSeed",
    "TaskCounts",
    "TaskSeed",
    "ThresholdSeed",
    "evaluate_tasks",
    "task_data",
    "task_scores",
]


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
        threshold_replicates: the threshold re-chosen in each replicate of the validation bootstrap.
        calibration_metrics: ECE and Brier score with their test replicates.
        readers: the model's numbers at the task's reader points (``None`` without readers).
        decision: the test decision curve with its replicates.
        reliability_band: ``(R, n_bins)`` bootstrap replicates of the reliability curve's frequencies.
        roc_band: ``(R, len(ROC_BAND_FPR))`` bootstrap replicates of the ROC curve's height.
    """

    threshold: float
    counts: TaskCounts
    metrics: SeedMetrics
    fpr: np.ndarray
    tpr: np.ndarray
    operating_point: OperatingPoint
    calibration: Reliability
    threshold_replicates: ThresholdSeed
    calibration_metrics: SeedMetrics
    readers: ReaderSeed | None = None
    decision: DecisionSeed | None = None
    reliability_band: np.ndarray | None = None
    roc_band: np.ndarray | None = None


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
    taxonomy: Taxonomy,
    proto: Protocol,
    val: list[Split],
    test: list[Split],
    source: ThresholdSource,
    *,
    readers: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, TaskResult]:
    """Every task of the protocol over every seed (``val[k]`` chooses the threshold used on ``test[k]``).

    ``readers``: each task's reader rows (:func:`~hierclf.evaluation.readers.assign_readers`); the model's
    numbers at their points and at the mean reader's come from the same test replicates as the rest.
    """
    out = {}
    for task in proto.tasks:
        rows = (readers or {}).get(task.name, [])
        points = reader_points({task.name: rows})[task.name] if rows else []
        seeds = [
            measure_task_seed(taxonomy, proto, task, v, t, source, reader_points=points)
            for v, t in zip(val, test)
        ]
        out[task.name] = aggregate_task(proto, task, seeds, source)
        if rows:
            place_readers(proto, out[task.name], rows, [s.readers for s in seeds])
    return out


@dataclass(frozen=True)
class ReaderSeed:
    """One seed's model numbers at a task's reader points, from the task's test replicates.

    Each list has one :class:`~hierclf.evaluation.metrics.BootstrapEstimate` per reader point: the model's
    specificity at the reader's sensitivity, its sensitivity at the reader's specificity, and the ROC
    polyline's height at the reader's false-positive rate (the dominance test).
    """

    specificity: list[M.BootstrapEstimate]
    sensitivity: list[M.BootstrapEstimate]
    height: list[M.BootstrapEstimate]


def measure_task_seed(
    taxonomy: Taxonomy,
    proto: Protocol,
    task: TaskSpec,
    val: Split,
    test: Split,
    source: ThresholdSource,
    *,
    reader_points: list[tuple[float, float]] | None = None,
) -> TaskSeed:
    """One seed of one task: the threshold from ``val``, everything else on ``test``."""
    rows_v, yv, sv = task_data(taxonomy, task, val, source.value)
    rows, yt, st = task_data(taxonomy, task, test, "test")
    rule = proto.operating_point(task)
    threshold = choose_threshold(rule, yv, sv)
    groups = test.groups[rows]
    points = reader_points or []
    boot = _test_bootstrap(proto, yt, st, groups, threshold, points)
    val_boot = boot if val is test else _validation_bootstrap(proto, yv, sv, val.groups[rows_v], threshold)
    chosen = _threshold_seed(yv, val.groups[rows_v], threshold, val_boot)
    if rule.rule != "target_sensitivity" or rule.target != proto.target_sensitivity:
        reps = threshold_replicates(proto, rule, yv, sv, val.groups[rows_v])
        chosen = ThresholdSeed(reps, chosen.n, chosen.n_groups, chosen.events)
    metrics = _seed_metrics(proto, yt, st, groups, threshold, boot, (yv, sv, val.groups[rows_v], val_boot))
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
        chosen,
        measure_task_calibration(proto, (yv, sv), (yt, st, groups), boot),
        _reader_seed(boot, points),
        measure_decision_curve(proto, yt, st, groups),
        reliability_band(proto, yt, st, groups),
        _roc_band(boot, len(points)),
    )


def _test_bootstrap(
    proto: Protocol,
    y: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    points: list[tuple[float, float]],
) -> M.BootstrapResult:
    """The grouped bootstrap of a task's test samples: every number of the task from the same draws (the
    threshold fixed, as chosen; the optimistic one re-chosen in each replicate)."""
    queries = M.CurveQueries(
        partial_auc_above=proto.target_sensitivity,
        calibration_bins=proto.calibration_bins,
        sensitivities=tuple(_queryable(sens) for sens, _ in points),
        specificities=tuple(_queryable(spec) for _, spec in points),
        false_positive_rates=tuple(1.0 - spec for _, spec in points) + ROC_BAND_FPR,
    )
    return M.bootstrap_binary(
        y,
        score,
        groups,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        threshold=threshold,
        ci_level=proto.bootstrap.ci_level,
        queries=queries,
    )


def _queryable(rate: float) -> float:
    """A reader's rate as a query target: a rate of 0 is met by every threshold, so query the smallest
    positive rate instead (the model's number there is the trivial corner, see :func:`_reader_seed`)."""
    return float(rate) if rate > 0 else 1e-300


def _validation_bootstrap(
    proto: Protocol, y: np.ndarray, score: np.ndarray, groups: np.ndarray, threshold: float
) -> M.BootstrapResult:
    """The grouped bootstrap of the validation samples: the threshold re-chosen in each replicate (how much
    the choice moves with the validation sample) and the validation sensitivity at the chosen one."""
    return M.bootstrap_binary(
        y,
        score,
        groups,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        threshold=threshold,
        ci_level=proto.bootstrap.ci_level,
        warn_missing=False,
    )


def _proportion_counts(
    y: np.ndarray, score: np.ndarray, groups: np.ndarray, threshold: float
) -> dict[str, M.EffectiveCounts]:
    """Successes and trials, with their clustered effective counts, of each rate at the threshold."""
    called = score >= threshold
    pos = y == 1
    return {
        "sensitivity": M.effective_counts(called[pos], groups[pos]),
        "specificity": M.effective_counts(~called[~pos], groups[~pos]),
        "ppv": M.effective_counts(pos[called], groups[called]),
        "npv": M.effective_counts(~pos[~called], groups[~called]),
    }


def _seed_metrics(
    proto: Protocol,
    y: np.ndarray,
    score: np.ndarray,
    groups: np.ndarray,
    threshold: float,
    boot: M.BootstrapResult,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray, M.BootstrapResult],
) -> SeedMetrics:
    """Test values of every :data:`TASK_TABLE` metric, their replicates (the test bootstrap's; the
    validation sensitivity's from the validation bootstrap), their counts and the events behind them."""
    yv, sv, gv, val_boot = validation
    at_val = M.binary_metrics_at_threshold(yv, sv, threshold)
    values = {key: float(boot[name].point) for key, name in _TEST_KEYS.items()}
    values["validation_sensitivity"] = float(at_val["sensitivity"])
    replicates = {key: np.asarray(boot[name].replicates, np.float64) for key, name in _TEST_KEYS.items()}
    replicates["validation_sensitivity"] = np.asarray(val_boot["sensitivity"].replicates, np.float64)
    counts = _proportion_counts(y, score, groups, threshold)
    val_pos = yv == 1
    counts["validation_sensitivity"] = M.effective_counts(sv[val_pos] >= threshold, gv[val_pos])
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    called = int((score >= threshold).sum())
    events = {
        "auc": min(n_pos, n_neg),
        "partial_auc": n_pos,
        "sensitivity": n_pos,
        "specificity": n_neg,
        "ppv": called,
        "npv": len(y) - called,
        "validation_sensitivity": int(val_pos.sum()),
        "specificity_at_target_chosen_on_test": n_neg,
        "threshold_chosen_on_test": n_pos,
    }
    sizes: dict[str, tuple[int, int | None]] = {"validation_sensitivity": (len(yv), int(len(np.unique(gv))))}
    n_groups = int(len(np.unique(groups)))
    return SeedMetrics(values, replicates, len(y), n_groups, counts, events, sizes)


#: The task metrics measured on test, and the bootstrap estimate each one reads (its point is the metric
#: on the full data: the unweighted functions, bit for bit).
_TEST_KEYS = {m.key: m.bootstrap for m in TASK_TABLE if m.key != "validation_sensitivity" and m.bootstrap}


@dataclass(frozen=True)
class ThresholdSeed:
    """One seed's chosen threshold, its bootstrap replicates on validation (re-chosen in each) and size."""

    replicates: np.ndarray
    n: int
    n_groups: int
    events: int


def _threshold_seed(
    y: np.ndarray, groups: np.ndarray, threshold: float, val_boot: M.BootstrapResult
) -> ThresholdSeed:
    reps = np.asarray(val_boot["threshold_at_sensitivity"].replicates, np.float64)
    return ThresholdSeed(reps, len(y), int(len(np.unique(groups))), int((y == 1).sum()))


#: False-positive rates at which the ROC figure's bootstrap band is drawn (each test replicate's height).
ROC_BAND_FPR = tuple(k / 50 for k in range(51))


def _roc_band(boot: M.BootstrapResult, n_points: int) -> np.ndarray:
    """``(R, len(ROC_BAND_FPR))`` heights of each test replicate's ROC polyline (after the readers')."""
    heights = boot.per_target["roc_height"][n_points:]
    return np.stack([np.asarray(e.replicates, np.float64) for e in heights], axis=1)


def _reader_seed(boot: M.BootstrapResult, points: list[tuple[float, float]]) -> ReaderSeed | None:
    """The model's numbers at each reader point (a rate of 0 is the trivial corner: the model reaches
    specificity 1 at sensitivity 0 and sensitivity 1 at specificity 0)."""
    if not points:
        return None
    spec = boot.per_target["specificity_at_sensitivities"]
    sens = boot.per_target["sensitivity_at_specificities"]
    spec = [_corner(e) if s <= 0 else e for e, (s, _) in zip(spec, points)]
    sens = [_corner(e) if p <= 0 else e for e, (_, p) in zip(sens, points)]
    return ReaderSeed(spec, sens, boot.per_target["roc_height"][: len(points)])


def _corner(est: M.BootstrapEstimate) -> M.BootstrapEstimate:
    """The estimate of a rate that is 1 whatever the data (NaN where the replicate missed a class)."""
    reps = np.where(np.isnan(est.replicates), np.nan, 1.0)
    return M.BootstrapEstimate(1.0, 1.0, 1.0, reps, est.n_nan)


def aggregate_task(
    proto: Protocol, task: TaskSpec, seeds: list[TaskSeed], source: ThresholdSource
) -> TaskResult:
    """The seeds of one task as its :class:`TaskResult`."""
    level, target = proto.bootstrap.ci_level, proto.target_sensitivity
    policy = IntervalPolicy.of(proto)
    metrics = aggregate_metrics(
        [s.metrics for s in seeds],
        TASK_TABLE,
        level=level,
        provenance=lambda m: m.provenance_for(source, target),
        policy=policy,
    )
    rule = proto.operating_point(task)
    thresholds = estimate_over_seeds(
        [s.threshold for s in seeds],
        [s.threshold_replicates.replicates for s in seeds],
        level=level,
        n=[s.threshold_replicates.n for s in seeds],
        n_groups=[s.threshold_replicates.n_groups for s in seeds],
        provenance=_threshold_provenance(rule, source, target),
        events=[s.threshold_replicates.events for s in seeds],
        policy=policy,
    )
    calibration = aggregate_metrics(
        [s.calibration_metrics for s in seeds],
        TASK_CALIBRATION_TABLE,
        level=level,
        provenance=lambda m: m.provenance,
        policy=policy,
    )
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
        {
            "ece": calibration["ece"],
            "reliability": [s.calibration.curve() for s in seeds],
            "n_bins": proto.calibration_bins,
            "brier": calibration["brier"],
            **{k: v for k, v in calibration.items() if k not in ("ece", "brier")},
            "reliability_band": pooled_band(
                [s.reliability_band for s in seeds if s.reliability_band is not None], level
            ),
        },
        operating_rule=rule.model_dump(mode="json") | {"description": rule.describe()},
        roc_band={
            "fpr": list(ROC_BAND_FPR),
            "tpr_ci": pooled_band([s.roc_band for s in seeds if s.roc_band is not None], level),
            "ci_level": level,
        },
        utility={
            "prevalences": predictive_values(proto, list(task.prevalences), [s.metrics for s in seeds]),
            "decision_curve": aggregate_decision_curve(proto, [s.decision for s in seeds if s.decision]),
        },
    )


def _threshold_provenance(rule: Any, source: ThresholdSource, target: float) -> str:
    """Where the thresholds come from: the protocol's words for the default rule, the rule's otherwise."""
    if rule.rule == "target_sensitivity" and rule.target == target:
        return THRESHOLD_PROVENANCE.format(source=source.description, target=target)
    return f"chosen on {source.description}: {rule.describe().removesuffix(' on validation')}"
