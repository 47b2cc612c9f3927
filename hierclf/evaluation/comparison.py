"""Paired comparison of two or more models on the same test cases under one protocol (``hierclf compare``).

Each model is given as its validation and test prediction files, one pair per seed. Every model's seeds,
and every model, must be tested on the same samples (the same ids with the same true labels; the test files
are aligned by id). For every task of the protocol, and every pair of models ``A - B``:

* **differences** in AUC, partial AUC above the target sensitivity, and sensitivity and specificity at each
  model's own validation-chosen threshold, with **paired, group-clustered bootstrap** intervals and two-sided
  p-values: each replicate resamples the groups (patients, lesions) once, and every model and seed is
  measured on that same resampled data set (:func:`~hierclf.evaluation.metrics.paired_bootstrap_binary`);
  with several seeds, the difference's replicates are pooled over every pair of seeds (the point is the
  difference of the seed means), so the interval carries both the sampling and the training variation, as
  :func:`~hierclf.evaluation.pipeline.evaluate`'s pooled intervals do;
* **DeLong's test** of the AUC difference (of the seed means), O(n log n) (Sun & Xu 2014), with Obuchowski's
  clustered covariance when the cases come in groups (:func:`~hierclf.evaluation.metrics.delong_test`);
* **McNemar's exact test** of paired sensitivity (on the positives) and paired specificity (on the
  negatives) at the two operating points, per pair of seeds, beside its clustered form (Durkalski 2003).

A model may be an **or rule** (``ModelInputs(..., rule="or")``, ``hierclf compare --or-rule NAME``): its files
are the members' (one validation and one test file per member, not seeds), and it flags a case when any
member flags it at that member's own validation threshold (seed 003; :mod:`~hierclf.evaluation.ensembles`).
It enters the comparison as one "seed" whose score is the margin ``max_k (score_k - threshold_k)`` at the
threshold 0, so its sensitivity and specificity, their paired differences and McNemar's test are exactly
those of the rule; its AUC is that of the margin (the rule's family ``margin >= c``, which passes through the
operating point at ``c = 0``). Partitions need probabilities, which an or rule has not: they compare the
other models only.

Per partition: the differences in balanced accuracy and per-class recall, with the same paired intervals.
Each model's own numbers are those ``hierclf evaluate`` reports for it (the same draws, the same
intervals). Refused: a single model, test sets that differ between models (naming a few ids), test files
that put a sample in different groups, and a task whose nodes one model's columns cannot be rolled up to.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import IntervalMethod, ThresholdSource, task_metric
from hierclf.evaluation.notices import EvaluationError, Findings
from hierclf.evaluation.partitions import _bootstrap_partition
from hierclf.evaluation.protocol_format import PartitionSpec, Protocol, TaskSpec
from hierclf.evaluation.records import (
    NOT_JSON,
    SYNTHETIC_BANNER,
    Estimate,
    IntervalPolicy,
    _clean,
    _fields,
    estimate_over_seeds,
)
from hierclf.evaluation.sample_metadata import Metadata, read_metadata
from hierclf.evaluation.splits import (
    Inputs,
    PredictionSource,
    Split,
    covered,
    cut_labels,
    difference_of_test_sets,
    node_probabilities,
    read_inputs,
)
from hierclf.evaluation.tasks import task_data
from hierclf.evaluation.utility import choose_threshold
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "COMPARED_TASK_KEYS",
    "ComparisonReport",
    "MetricComparison",
    "ModelInputs",
    "PartitionComparison",
    "TaskComparison",
    "compare",
]

#: The task metrics compared, in table order (keys of :data:`~hierclf.evaluation.catalog.TASK_TABLE`).
COMPARED_TASK_KEYS = ("auc", "partial_auc", "sensitivity", "specificity")


@dataclass(frozen=True)
class ModelInputs:
    """One model of a comparison: its name and its validation and test predictions, one per seed (or, with
    ``rule="or"``, one per member of an or rule; module docstring)."""

    name: str
    val: Sequence[PredictionSource] | None
    test: Sequence[PredictionSource]
    rule: str = "seeds"

    def __post_init__(self) -> None:
        if self.rule not in ("seeds", "or"):
            raise EvaluationError(f"model {self.name!r}: rule must be 'seeds' or 'or', got {self.rule!r}")
        if self.rule == "or" and (len(self.test) < 2 or not self.val):
            raise EvaluationError(
                f"model {self.name!r}: an or rule needs a validation and a test file for each of two or more "
                "members (each member's threshold is chosen on its own validation set)"
            )


@dataclass
class MetricComparison:
    """One metric of every model and its difference between every pair of models.

    Attributes:
        key, label: the metric (the catalog's words).
        models: each model's estimate (as ``hierclf evaluate`` reports it).
        differences: ``"A - B"`` -> the estimate of the difference (pooled paired replicates).
        p_values: ``"A - B"`` -> the two-sided bootstrap p-value of "no difference".
        tests: ``"A - B"`` -> the analytic tests (DeLong for the AUC, McNemar for sensitivity/specificity).
    """

    key: str
    label: str
    models: dict[str, Estimate]
    differences: dict[str, Estimate]
    p_values: dict[str, float]
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class TaskComparison:
    """Every compared number of one task."""

    name: str
    positive: list[str]
    negative: list[str]
    n_positive: int
    n_negative: int
    n_groups: int
    thresholds: dict[str, Estimate]
    metrics: dict[str, MetricComparison]
    roc: dict[str, list[dict[str, np.ndarray]]]
    operating_points: dict[str, list[dict[str, float]]]


@dataclass
class PartitionComparison:
    """Balanced accuracy and per-class recall of every model at one cut, with paired differences."""

    name: str
    classes: list[str]
    n: int
    balanced_accuracy: MetricComparison
    per_class_recall: dict[str, MetricComparison]


@dataclass
class ComparisonReport:
    """The result of :func:`compare`; :func:`hierclf.evaluation.comparison_report.write_comparison` renders
    it."""

    taxonomy: str
    protocol: dict[str, Any]
    models: list[str]
    files: dict[str, dict[str, list[str]]]
    threshold_source: ThresholdSource
    synthetic: bool
    resampling: dict[str, Any]
    warnings: list[str]
    notes: list[str]
    tasks: dict[str, TaskComparison]
    partitions: dict[str, PartitionComparison]
    pairs: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, metadata=NOT_JSON)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN -> ``None``; replicates left out)."""
        out = _fields(self)
        out["banner"] = SYNTHETIC_BANNER if self.synthetic else None
        return _clean(out)

    def replicates(self) -> dict[str, np.ndarray]:
        """Every replicate array by its path in ``comparison.json`` (``tasks/<task>/auc/models/<model>``,
        ``tasks/<task>/auc/differences/<A - B>``, ...)."""
        out: dict[str, np.ndarray] = {}
        for where, comparisons in _all_comparisons(self):
            for mc in comparisons:
                for group in ("models", "differences"):
                    for name, est in getattr(mc, group).items():
                        if est.replicates is not None:
                            out[f"{where}/{mc.key}/{group}/{name}"] = est.replicates
        return out


def _all_comparisons(report: ComparisonReport) -> list[tuple[str, list[MetricComparison]]]:
    out = [(f"tasks/{name}", list(t.metrics.values())) for name, t in report.tasks.items()]
    for name, p in report.partitions.items():
        out.append((f"partitions/{name}", [p.balanced_accuracy]))
        out.append((f"partitions/{name}/per_class_recall", list(p.per_class_recall.values())))
    return out


@dataclass
class _Model:
    """One model's checked inputs, its test splits aligned to the reference order of cases."""

    name: str
    inputs: Inputs
    test: list[Split]
    rule: str = "seeds"


def compare(
    taxonomy: Taxonomy,
    protocol: Protocol,
    models: Sequence[ModelInputs] | Mapping[str, tuple[Any, Any]],
    *,
    metadata: str | Path | Metadata | None = None,
    synthetic: bool = False,
    allow_test_thresholds: bool | None = None,
) -> ComparisonReport:
    """Compare two or more models, paired on the same test cases, under one protocol.

    Args:
        taxonomy: the disease tree.
        protocol: a loaded protocol; its tasks, partitions, target sensitivity, groups and bootstrap apply.
        models: :class:`ModelInputs`, or ``{name: (val files, test files)}``, one file per seed.
        metadata: a metadata CSV (groups for the bootstrap), as for ``evaluate``.
        synthetic: mark the report "SYNTHETIC DATA — not a clinical result".
        allow_test_thresholds: overrides the protocol's ``allow_test_thresholds``.

    Returns:
        The :class:`ComparisonReport`.

    Raises:
        EvaluationError: fewer than two models, repeated model names, test sets that differ between (or
            within) models, a sample in different groups in two files, a task node below a model's
            columns, and everything ``evaluate`` refuses in a prediction file.

    Example:
        >>> from hierclf.evaluation.prediction_files import Predictions
        >>> from hierclf.evaluation.protocol_format import protocol_from_dict
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> proto = protocol_from_dict({"name": "demo", "target_sensitivity": 0.9, "group_column": None,
        ...     "min_seeds": 1, "bootstrap": {"replicates": 50},
        ...     "primary_metric": {"metric": "auc", "task": "mel_vs_nv"},
        ...     "tasks": [{"name": "mel_vs_nv", "positive": ["mel"], "negative": ["nv"]}]}, tax)
        >>> rng = np.random.default_rng(0)
        >>> labels = np.array(["melanoma", "melanocytic_nevus"] * 30)
        >>> ids = np.array([f"s{i}" for i in range(60)])
        >>> def model(signal):
        ...     p = rng.dirichlet(np.ones(7), size=60)
        ...     p[labels == "melanoma", 4] += signal
        ...     return Predictions(p / p.sum(1, keepdims=True), tax.leaves, ids, labels)
        >>> a, b = model(2.0), model(0.2)
        >>> report = compare(tax, proto, {"A": ([a], [a]), "B": ([b], [b])})
        >>> report.tasks["mel_vs_nv"].metrics["auc"].differences["A - B"].value > 0
        True
    """
    found = Findings()
    entries = _model_inputs(models)
    meta = read_metadata(metadata) if isinstance(metadata, (str, Path)) else metadata
    checked = [_read_model(taxonomy, protocol, m, meta, allow_test_thresholds, found) for m in entries]
    reference = checked[0].test[0]
    aligned = [
        _Model(m.name, m.inputs, [_aligned(reference, s, m.name, entries[0].name) for s in m.test], m.rule)
        for m in checked
    ]
    _note_or_rules(aligned, found)
    pairs = [f"{a.name} - {b.name}" for a, b in itertools.combinations(aligned, 2)]
    tasks = {t.name: _compare_task(taxonomy, protocol, t, aligned) for t in protocol.tasks}
    partitions = _compare_partitions(taxonomy, protocol, aligned, found)
    source = checked[0].inputs.source
    return ComparisonReport(
        taxonomy=taxonomy.name,
        protocol=protocol.model_dump(mode="json"),
        models=[m.name for m in aligned],
        files={
            m.name: {"val": list(m.inputs.validation_names), "test": [s.name for s in m.inputs.test]}
            for m in checked
        },
        threshold_source=source,
        synthetic=synthetic,
        resampling=checked[0].inputs.resampling(protocol.group_column, protocol.bootstrap.replicates),
        warnings=found.warnings,
        notes=found.notes,
        tasks=tasks,
        partitions=partitions,
        pairs=pairs,
    )


def _note_or_rules(models: list[_Model], found: Findings) -> None:
    for m in models:
        if m.rule == "or":
            found.note(
                f"model {m.name!r} is the or rule of {len(m.test)} members, each at its own validation "
                "threshold: its score is the margin max_k (score_k - threshold_k), decided at 0; its "
                "partitions are not compared (an or rule gives decisions, not probabilities)"
            )


def _model_inputs(models: Sequence[ModelInputs] | Mapping[str, tuple[Any, Any]]) -> list[ModelInputs]:
    """The models as :class:`ModelInputs`; at least two, with distinct names."""
    if isinstance(models, Mapping):
        entries = [ModelInputs(str(name), val, test) for name, (val, test) in models.items()]
    else:
        entries = list(models)
    if len(entries) < 2:
        given = ", ".join(repr(m.name) for m in entries) or "none"
        raise EvaluationError(
            f"compare needs two or more models, got {len(entries)} ({given}); evaluate a single model with "
            "hierclf evaluate"
        )
    names = [m.name for m in entries]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EvaluationError(
            f"model names must differ: {', '.join(map(repr, repeated))} given more than once"
        )
    return entries


def _read_model(
    taxonomy: Taxonomy,
    protocol: Protocol,
    model: ModelInputs,
    metadata: Metadata | None,
    allow_test_thresholds: bool | None,
    found: Findings,
) -> _Model:
    """One model's inputs, read and checked as ``evaluate`` checks them (its seeds share their test set)."""
    inputs = read_inputs(
        taxonomy,
        protocol,
        model.val,
        model.test,
        metadata=metadata,
        allow_test_thresholds=allow_test_thresholds,
        findings=found,
        allow_seed_mismatch=False,
    )
    return _Model(model.name, inputs, inputs.test, model.rule)


def _aligned(reference: Split, split: Split, model: str, reference_model: str) -> Split:
    """``split`` with its rows in the reference's order of cases; the test sets must hold the same samples
    with the same labels, and no sample may sit in two groups."""
    difference = difference_of_test_sets(reference, split)
    if difference:
        raise EvaluationError(
            f"TEST SETS DIFFER BETWEEN MODELS: model {model!r}: {difference} (model {reference_model!r}); "
            "a paired comparison needs every model tested on the same samples"
        )
    preds = split.preds
    if preds.ids is None or reference.preds.ids is None:
        order = np.arange(len(preds))
    else:  # the same ids (checked above): sort both, match by position
        sorted_here = np.argsort(preds.ids, kind="stable")
        order = sorted_here[np.searchsorted(preds.ids[sorted_here], reference.preds.ids)]
    out = Split(split.name, preds.select(order), reference.group_names[reference.groups], split.meta_rows)
    if split.grouped and reference.grouped:
        _check_same_groups(reference, split, split.group_names[split.groups[order]], model, reference_model)
    out.grouped, out.group_source, out.blank_groups = (
        reference.grouped,
        reference.group_source,
        reference.blank_groups,
    )
    return out


def _check_same_groups(
    reference: Split, split: Split, groups: np.ndarray, model: str, reference_model: str
) -> None:
    """Every case sits in the same group in both files (``groups``: ``split``'s, in the reference order)."""
    theirs = reference.group_names[reference.groups]
    clash = np.flatnonzero(groups != theirs)
    if clash.size:
        i = int(clash[0])
        ident = str(reference.preds.ids[i]) if reference.preds.ids is not None else str(i)
        raise EvaluationError(
            f"model {model!r}: {split.name} puts sample {ident!r} in group {str(groups[i])!r}, model "
            f"{reference_model!r}: {reference.name} in {str(theirs[i])!r} ({clash.size} such samples); the "
            "models must share one grouping of the cases (pass --metadata)"
        )


# --- tasks -------------------------------------------------------------------------------------------------


def _compare_task(
    taxonomy: Taxonomy, proto: Protocol, task: TaskSpec, models: list[_Model]
) -> TaskComparison:
    """Every model and seed of one task on one set of draws."""
    scores, thresholds, owners = [], [], []
    rows = y = None
    for m in models:
        member_scores, member_thresholds = [], []
        for k, test in enumerate(m.test):
            val = m.inputs.val[k]
            _, yv, sv = task_data(taxonomy, task, val, m.inputs.source.value)
            rows, y, s = task_data(taxonomy, task, test, "test")
            member_thresholds.append(choose_threshold(proto.operating_point(task), yv, sv))  # the task's rule
            member_scores.append(s)
        if m.rule == "or":  # one rule: flagged when any member is at or above its own threshold
            member_scores = [_or_margin(member_scores, member_thresholds)]
            member_thresholds = [0.0]
        scores += member_scores
        thresholds += member_thresholds
        owners += [m.name] * len(member_scores)
    assert rows is not None and y is not None
    groups = models[0].test[0].groups[rows]
    boots = M.paired_bootstrap_binary(
        y,
        np.stack(scores),
        groups,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        thresholds=thresholds,
        ci_level=proto.bootstrap.ci_level,
        queries=M.CurveQueries(partial_auc_above=proto.target_sensitivity),
    )
    by_model = {m.name: [i for i, o in enumerate(owners) if o == m.name] for m in models}
    metrics = {
        key: _metric(proto, key, y, np.stack(scores), groups, thresholds, boots, by_model)
        for key in COMPARED_TASK_KEYS
    }
    _analytic_tests(
        metrics, y, np.stack(scores), groups, thresholds, by_model, grouped=models[0].test[0].grouped
    )
    return TaskComparison(
        task.name,
        list(task.positive),
        list(task.negative),
        int((y == 1).sum()),
        int((y == 0).sum()),
        int(len(np.unique(groups))),
        {name: _threshold_estimate(proto, [thresholds[i] for i in idx]) for name, idx in by_model.items()},
        metrics,
        {name: [_roc(y, scores[i]) for i in idx] for name, idx in by_model.items()},
        {name: [_point(boots[i], thresholds[i]) for i in idx] for name, idx in by_model.items()},
    )


def _or_margin(scores: list[np.ndarray], thresholds: list[float]) -> np.ndarray:
    """``max_k (scores[k] - thresholds[k])``, ``(n,)``: at least 0 exactly when some member flags the case
    (``s >= t`` and ``s - t >= 0`` agree in IEEE arithmetic)."""
    return np.max(np.stack(scores) - np.asarray(thresholds)[:, None], axis=0)


def _threshold_estimate(proto: Protocol, values: list[float]) -> Estimate:
    return estimate_over_seeds(values, level=proto.bootstrap.ci_level, provenance="chosen on validation")


def _roc(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    fpr, tpr, _ = M.roc_curve(y, s)
    return {"fpr": np.asarray(fpr), "tpr": np.asarray(tpr)}


def _point(boot: M.BootstrapResult, threshold: float) -> dict[str, float]:
    return {
        "threshold": threshold,
        "sensitivity": float(boot["sensitivity"].point),
        "specificity": float(boot["specificity"].point),
    }


def _metric(
    proto: Protocol,
    key: str,
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    thresholds: list[float],
    boots: list[M.BootstrapResult],
    by_model: dict[str, list[int]],
) -> MetricComparison:
    """One metric: each model's estimate (its seeds), and the pooled paired differences."""
    meta = task_metric(key)
    name = meta.bootstrap or key
    level, policy = proto.bootstrap.ci_level, IntervalPolicy.of(proto)
    models = {}
    for model, idx in by_model.items():
        counts = None
        if meta.proportion:
            counts = [_rate_counts(key, y, scores[i], groups, thresholds[i]) for i in idx]
        models[model] = estimate_over_seeds(
            [boots[i][name].point for i in idx],
            [boots[i][name].replicates for i in idx],
            level=level,
            n=[len(y)] * len(idx),
            n_groups=[int(len(np.unique(groups)))] * len(idx),
            provenance=meta.provenance_for(ThresholdSource.VALIDATION, proto.target_sensitivity),
            counts=counts,
            events=[_events(key, y)] * len(idx),
            policy=policy,
        )
    differences, p_values = {}, {}
    for a, b in itertools.combinations(by_model, 2):
        pair = f"{a} - {b}"
        est = _difference(
            [boots[i][name] for i in by_model[a]],
            [boots[j][name] for j in by_model[b]],
            level,
            f"{meta.label}: {pair}",
        )
        differences[pair], p_values[pair] = est, M.bootstrap_p_value(est.replicates, 0.0)
    return MetricComparison(key, meta.label, models, differences, p_values)


def _events(key: str, y: np.ndarray) -> int:
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    return {"auc": min(n_pos, n_neg), "specificity": n_neg}.get(key, n_pos)


def _rate_counts(
    key: str, y: np.ndarray, s: np.ndarray, groups: np.ndarray, threshold: float
) -> M.EffectiveCounts:
    called, pos = s >= threshold, y == 1
    if key == "sensitivity":
        return M.effective_counts(called[pos], groups[pos])
    return M.effective_counts(~called[~pos], groups[~pos])


def _difference(
    first: list[M.BootstrapEstimate], second: list[M.BootstrapEstimate], level: float, provenance: str
) -> Estimate:
    """The difference of two models' seed means, with the replicates of every pair of seeds pooled."""
    reps = [a.replicates - b.replicates for a in first for b in second]
    value = float(np.mean([a.point for a in first]) - np.mean([b.point for b in second]))
    est = estimate_over_seeds(
        [a.point - b.point for a in first for b in second], reps, level=level, provenance=provenance
    )
    est.value = value  # the mean over seed pairs, computed once more without its rounding
    return est


def _analytic_tests(
    metrics: dict[str, MetricComparison],
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    thresholds: list[float],
    by_model: dict[str, list[int]],
    *,
    grouped: bool,
) -> None:
    """DeLong's test of each AUC difference, McNemar's of each sensitivity and specificity difference."""
    for a, b in itertools.combinations(by_model, 2):
        pair = f"{a} - {b}"
        ia, ib = by_model[a], by_model[b]
        contrast = np.zeros(scores.shape[0])
        contrast[ia], contrast[ib] = 1.0 / len(ia), -1.0 / len(ib)
        metrics["auc"].tests[pair] = _delong(y, scores, contrast, groups if grouped else None)
        for key, cases in (("sensitivity", y == 1), ("specificity", y == 0)):
            metrics[key].tests[pair] = _mcnemar(y, scores, groups, thresholds, ia, ib, cases, grouped=grouped)


def _delong(
    y: np.ndarray, scores: np.ndarray, contrast: np.ndarray, groups: np.ndarray | None
) -> dict[str, Any]:
    try:
        r = M.delong_test(y, scores, contrast, groups=groups)
    except M.MetricError as exc:
        return {"test": "DeLong", "note": str(exc)}
    return {
        "test": "DeLong (clustered, Obuchowski 1997)" if r.clustered else "DeLong",
        "difference": r.difference,
        "std_error": r.std_error,
        "z": r.z,
        "p_value": r.p_value,
        "ci": list(r.ci),
        "interval": IntervalMethod.NORMAL.value,
    }


def _mcnemar(
    y: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    thresholds: list[float],
    first: list[int],
    second: list[int],
    cases: np.ndarray,
    *,
    grouped: bool,
) -> dict[str, Any]:
    """McNemar's exact test on ``cases`` (the positives for sensitivity, the negatives for specificity),
    per pair of seeds (the ``k``-th seed of each model), and its clustered form."""
    per_pair = []
    for i, j in zip(first, second):  # a loop over seed pairs
        truth = y[cases] == 1
        da, db = scores[i][cases] >= thresholds[i], scores[j][cases] >= thresholds[j]
        exact = M.mcnemar_exact(truth, da, db)
        row: dict[str, Any] = {
            "seeds": [first.index(i), second.index(j)],
            "n": exact.n,
            "first_only": exact.first_only,
            "second_only": exact.second_only,
            "p_value": exact.p_value,
        }
        if grouped:
            row["p_value_clustered"] = M.clustered_mcnemar(truth, da, db, groups[cases]).p_value
        per_pair.append(row)
    return {
        "test": "exact McNemar",
        "per_seed_pair": per_pair,
        "p_value": per_pair[0]["p_value"] if per_pair else math.nan,
    }


# --- partitions --------------------------------------------------------------------------------------------


def _compare_partitions(
    taxonomy: Taxonomy, proto: Protocol, models: list[_Model], found: Findings
) -> dict[str, PartitionComparison]:
    out: dict[str, PartitionComparison] = {}
    models = [m for m in models if m.rule != "or"]
    if len(models) < 2:
        if proto.partitions:
            found.note("partitions not compared: fewer than two of the models give probabilities")
        return out
    for part in proto.partitions:
        below = sorted(
            {n for m in models for s in m.test for n in covered(taxonomy, part.nodes, s.preds.columns)}
        )
        if below:
            found.warn(
                f"PARTITION {part.name!r} SKIPPED: its node(s) {', '.join(below)} lie below some model's "
                "prediction columns, whose probabilities cannot be split."
            )
            continue
        out[part.name] = _compare_partition(taxonomy, proto, part, models)
    return out


def _compare_partition(
    taxonomy: Taxonomy, proto: Protocol, part: PartitionSpec, models: list[_Model]
) -> PartitionComparison:
    """Balanced accuracy and per-class recall of every model and seed, from the same draws of the cut's
    groups (the same groups and seed give the same draws)."""
    cut, n_classes = list(part.nodes), len(part.nodes)
    reference = models[0].test[0]
    labels = cut_labels(taxonomy, reference, cut)
    rows = np.flatnonzero(labels >= 0)
    y, groups = labels[rows], reference.groups[rows]
    boot: dict[str, list[dict[str, np.ndarray]]] = {}
    points: dict[str, list[np.ndarray]] = {}
    for m in models:
        for split in m.test:
            pred = node_probabilities(taxonomy, split, cut, rows).argmax(axis=1)
            b = _bootstrap_partition(
                y,
                pred,
                groups,
                n_classes,
                cancer=None,
                replicates=proto.bootstrap.replicates,
                seed=proto.bootstrap.seed,
            )
            recall = np.asarray(M.per_class_recall(y, pred, n_classes), dtype=np.float64)
            boot.setdefault(m.name, []).append(b)
            points.setdefault(m.name, []).append(np.r_[M.balanced_accuracy(y, pred, n_classes), recall])
    level = proto.bootstrap.ci_level
    balanced = _partition_metric("balanced_accuracy", "balanced accuracy", boot, points, 0, level, None)
    per_class = {
        c: _partition_metric(c, f"recall of {c}", boot, points, i + 1, level, i) for i, c in enumerate(cut)
    }
    return PartitionComparison(part.name, cut, int(len(rows)), balanced, per_class)


def _partition_metric(
    key: str,
    label: str,
    boot: dict[str, list[dict[str, np.ndarray]]],
    points: dict[str, list[np.ndarray]],
    column: int,
    level: float,
    recall_class: int | None,
) -> MetricComparison:
    def reps(b: dict[str, np.ndarray]) -> np.ndarray:
        return b["balanced_accuracy"] if recall_class is None else b["recall"][:, recall_class]

    models = {
        name: estimate_over_seeds(
            [p[column] for p in points[name]],
            [reps(b) for b in boot[name]],
            level=level,
            provenance=f"test, {label}",
        )
        for name in boot
    }
    differences, p_values = {}, {}
    for a, b in itertools.combinations(boot, 2):
        pair = f"{a} - {b}"
        first = [
            M.BootstrapEstimate(float(p[column]), math.nan, math.nan, reps(x))
            for p, x in zip(points[a], boot[a])
        ]
        second = [
            M.BootstrapEstimate(float(p[column]), math.nan, math.nan, reps(x))
            for p, x in zip(points[b], boot[b])
        ]
        est = _difference(first, second, level, f"{label}: {pair}")
        differences[pair], p_values[pair] = est, M.bootstrap_p_value(est.replicates, 0.0)
    return MetricComparison(key, label, models, differences, p_values)
