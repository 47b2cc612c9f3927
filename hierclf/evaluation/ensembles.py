"""Ensembles at the operating point (seed 003): the seed mean as a model, the or rule as a decision rule.

Two ways to combine trained models, each reported like a single model:

* **the seed mean** (:func:`seed_mean`): the mean of the members' probabilities, as one set of predictions.
  Evaluated as any model is (:func:`evaluate_seed_mean`: its own threshold chosen on the mean's validation
  predictions at the target sensitivity, the same grouped bootstrap intervals). Members whose columns differ
  are rolled up to the finest cut all of them determine first (probabilities add, so this is the roll-up
  of the mean).
* **the or rule** (:func:`or_rule`): flag a case when any model flags it at that model's own validation
  threshold ("if either model flags a lesion as suspicious, send it for biopsy"). Sensitivity can only
  rise and specificity only fall against every member; :class:`OrRuleTask` reports sensitivity,
  specificity, PPV and NPV with grouped bootstrap intervals from the same kernels as the evaluation
  (:func:`hierclf.evaluation.metrics.bootstrap_binary` on the 0/1 decisions at the fixed threshold 1/2),
  beside each member's own numbers at its threshold, so the gain in sensitivity and its price in
  specificity are read side by side.

Both take one validation and one test prediction set per member (paths or
:class:`~hierclf.evaluation.prediction_files.Predictions`), over the same samples (matched by id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.evaluation import metrics as M
from hierclf.evaluation.notices import EvaluationError
from hierclf.evaluation.prediction_files import Predictions, read_predictions
from hierclf.evaluation.protocol_format import Protocol, TaskSpec
from hierclf.evaluation.tasks import task_scores
from hierclf.functional import rollup
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "DECISION_METRICS",
    "OrRuleReport",
    "OrRuleTask",
    "evaluate_seed_mean",
    "finest_common_cut",
    "or_rule",
    "seed_mean",
    "write_or_rule",
]

#: the metrics of a decision rule, each with a grouped bootstrap interval
DECISION_METRICS = ("sensitivity", "specificity", "ppv", "npv")

PredictionSource = str | Path | Predictions


def _read(source: PredictionSource, taxonomy: Taxonomy | None) -> Predictions:
    return source if isinstance(source, Predictions) else read_predictions(source, taxonomy)


def finest_common_cut(taxonomy: Taxonomy, cuts: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The finest cut all ``cuts`` roll up to: the columns of any of them under no other column of any of
    them, in pre-order.

    Example:
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> finest_common_cut(tax, [tax.leaves, ["malignant", "benign"]])
        ('benign', 'malignant')
    """
    every = {c for cut in cuts for c in cut}
    top = [c for c in every if not any(a in every for a in taxonomy.ancestors(c))]
    row = {n: i for i, n in enumerate(taxonomy.nodes)}
    return tuple(sorted(top, key=row.__getitem__))


def _aligned(members: list[Predictions]) -> list[Predictions]:
    """The members with their rows in the first member's order (by id; by position without ids)."""
    first = members[0]
    if first.ids is None or any(m.ids is None for m in members):
        if len({len(m) for m in members}) > 1:
            raise EvaluationError(
                f"ensemble members have {sorted({len(m) for m in members})} rows and no ids to match them"
            )
        return members
    position = {sid: k for k, sid in enumerate(first.ids.tolist())}
    out = [first]
    for k, member in enumerate(members[1:], start=2):
        assert member.ids is not None
        missing = sorted(set(position) ^ set(member.ids.tolist()))
        if missing:
            raise EvaluationError(
                f"ensemble member {k} scores other samples than member 1 ({len(missing)} ids differ, e.g. "
                f"{', '.join(map(repr, missing[:3]))})"
            )
        order = np.argsort(np.asarray([position[s] for s in member.ids.tolist()]), kind="stable")
        out.append(member.select(order))
    return out


def _check_labels(members: list[Predictions]) -> None:
    first = members[0].labels
    for k, member in enumerate(members[1:], start=2):
        if first is not None and member.labels is not None and not np.array_equal(first, member.labels):
            bad = int(np.flatnonzero(first != member.labels)[0])
            raise EvaluationError(
                f"ensemble members 1 and {k} disagree on the true label of sample {bad} "
                f"({first[bad]!r} vs {member.labels[bad]!r}); they must score the same cases"
            )


def _on_columns(member: Predictions, taxonomy: Taxonomy | None, columns: tuple[str, ...]) -> np.ndarray:
    """``(n, len(columns))`` float64: the member's probabilities over ``columns`` (reordered or rolled up)."""
    if set(member.columns) == set(columns):
        order = [member.columns.index(c) for c in columns]
        return np.asarray(member.probs, dtype=np.float64)[:, order]
    assert taxonomy is not None
    probs = np.asarray(member.probs, dtype=np.float64)
    return np.asarray(rollup(probs, taxonomy, list(columns), columns=list(member.columns)))


def seed_mean(members: Sequence[PredictionSource], *, taxonomy: Taxonomy | None = None) -> Predictions:
    """The ensemble's predictions: the mean of the members' probabilities, sample by sample.

    Args:
        members: one prediction set per model (same samples; matched by id, else by position).
        taxonomy: needed when the members' columns differ (they are rolled up to the finest common cut).

    Returns:
        :class:`Predictions` (float64) in the first member's row order, with its ids, labels and groups.

    Raises:
        EvaluationError: no member, other samples, other labels, or other columns without a taxonomy.

    Example:
        >>> a = Predictions(np.array([[0.2, 0.8]]), ("nevus", "melanoma"), ids=np.array(["x"]))
        >>> b = Predictions(np.array([[0.6, 0.4]]), ("melanoma", "nevus"), ids=np.array(["x"]))
        >>> seed_mean([a, b]).probs.round(6).tolist()
        [[0.3, 0.7]]
    """
    if not members:
        raise EvaluationError("an ensemble needs at least one member")
    read = _aligned([_read(m, taxonomy) for m in members])
    _check_labels(read)
    columns = read[0].columns
    if any(set(m.columns) != set(columns) for m in read[1:]):
        if taxonomy is None:
            raise EvaluationError(
                "ensemble members have different columns; give the taxonomy to roll them up"
            )
        columns = finest_common_cut(taxonomy, [m.columns for m in read])
    mean = np.mean(np.stack([_on_columns(m, taxonomy, columns) for m in read]), axis=0)
    first = read[0]
    return Predictions(
        mean, columns, ids=first.ids, labels=first.labels, groups=first.groups, _checked_ids=True
    )


def evaluate_seed_mean(
    taxonomy: Taxonomy,
    protocol: Protocol,
    val: Sequence[PredictionSource],
    test: Sequence[PredictionSource],
    **options: Any,
) -> Any:
    """The seed mean evaluated as one model (its own validation-chosen thresholds, the same intervals):
    :func:`hierclf.evaluation.pipeline.evaluate` of ``[seed_mean(val)]`` and ``[seed_mean(test)]``.
    ``options`` go to ``evaluate`` (``metadata``, ``readers``, ``synthetic``)."""
    from hierclf.evaluation.pipeline import evaluate

    if len(val) != len(test):
        raise EvaluationError(f"give one validation and one test set per member ({len(val)} vs {len(test)})")
    report = evaluate(
        taxonomy,
        protocol,
        [seed_mean(val, taxonomy=taxonomy)],
        [seed_mean(test, taxonomy=taxonomy)],
        **options,
    )
    report.notes.insert(
        0,
        f"SEED ENSEMBLE: the mean of {len(test)} members' probabilities, evaluated as one model (its own "
        "thresholds chosen on the mean's validation predictions; intervals over test cases only)",
    )
    return report


# --- the or rule ---------------------------------------------------------------------------------------


@dataclass
class OrRuleTask:
    """One task decided by the or rule.

    Attributes:
        task: the task's name.
        thresholds: each member's validation threshold.
        ids: ``(m,)`` test sample ids of the task (or row numbers).
        y: ``(m,)`` 1 positive, 0 negative.
        decisions: ``(m,)`` bool, the or rule's flags.
        member_decisions: ``(n_members, m)`` bool, each member's flags at its own threshold.
        metrics: ``{metric: {"value", "ci_low", "ci_high"}}`` of the or rule (:data:`DECISION_METRICS`).
        member_metrics: the same for each member at its own threshold.
        validation: the or rule's sensitivity and specificity on validation (NaN when the models were
            validated on different samples).
        n, n_positive, n_negative, n_groups: test counts.
    """

    task: str
    thresholds: list[float]
    ids: np.ndarray
    y: np.ndarray
    decisions: np.ndarray
    member_decisions: np.ndarray
    metrics: dict[str, dict[str, float]]
    member_metrics: list[dict[str, dict[str, float]]]
    validation: dict[str, float]
    n: int
    n_positive: int
    n_negative: int
    n_groups: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (no per-case arrays)."""
        keep = ("task", "thresholds", "metrics", "member_metrics", "validation", "n", "n_positive")
        out = {k: getattr(self, k) for k in keep}
        out.update(n_negative=self.n_negative, n_groups=self.n_groups)
        return out


@dataclass
class OrRuleReport:
    """The or rule over every task of a protocol."""

    members: list[str]
    target_sensitivity: float
    ci_level: float
    tasks: dict[str, OrRuleTask] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": "or",
            "members": self.members,
            "target_sensitivity": self.target_sensitivity,
            "ci_level": self.ci_level,
            "tasks": {k: v.to_dict() for k, v in self.tasks.items()},
        }

    def markdown(self) -> str:
        """One table per task: the or rule and each member, ``value [low, high]`` per metric."""
        lines = [f"# The or rule over {len(self.members)} models", ""]
        for name, task in self.tasks.items():
            lines += [
                f"## {name}",
                "",
                f"Test: {task.n_positive} positive, {task.n_negative} negative, {task.n_groups} groups; each "
                "model at its own threshold chosen on validation by the task's operating-point rule "
                f"(default: sensitivity {self.target_sensitivity:g}); {self.ci_level:.0%} grouped bootstrap "
                "intervals.",
                "",
                "| rule | " + " | ".join(DECISION_METRICS) + " |",
                "| --- | " + " | ".join("---" for _ in DECISION_METRICS) + " |",
            ]
            rows = [("or rule", task.metrics)] + [
                (f"{m} (threshold {t:.4g})", mm)
                for m, t, mm in zip(self.members, task.thresholds, task.member_metrics)
            ]
            lines += [
                "| " + label + " | " + " | ".join(_cell(values[k]) for k in DECISION_METRICS) + " |"
                for label, values in rows
            ]
            lines.append("")
        return "\n".join(lines)


def write_or_rule(report: OrRuleReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``or_rule.md`` and ``or_rule.json`` (NaN as null) into ``out_dir``, atomically; returns them."""
    import json

    from hierclf.evaluation.records import _clean
    from hierclf.io.atomic import atomic_write_text, output_folder

    out = output_folder(out_dir)
    files = {"markdown": out / "or_rule.md", "json": out / "or_rule.json"}
    atomic_write_text(files["markdown"], report.markdown() + "\n")
    text = json.dumps(_clean(report.to_dict()), indent=2, allow_nan=False)
    atomic_write_text(files["json"], text + "\n")
    return files


def _cell(value: dict[str, float]) -> str:
    def num(x: float) -> str:
        return "n/a" if not np.isfinite(x) else f"{x:.3f}"

    return f"{num(value['value'])} [{num(value['ci_low'])}, {num(value['ci_high'])}]"


def _decision_metrics(
    y: np.ndarray, flags: np.ndarray, groups: np.ndarray | None, proto: Protocol
) -> dict[str, dict[str, float]]:
    """Sensitivity, specificity, PPV and NPV of 0/1 decisions with grouped bootstrap intervals: the
    evaluation's kernel on the score ``flags`` at the fixed threshold 1/2."""
    score = flags.astype(np.float64)
    boot = M.bootstrap_binary(
        y,
        score,
        groups,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        threshold=0.5,
        ci_level=proto.bootstrap.ci_level,
        warn_missing=False,
    )
    point = M.binary_metrics_at_threshold(y, score, 0.5)
    return {
        k: {"value": float(point[k]), "ci_low": float(boot[k].low), "ci_high": float(boot[k].high)}
        for k in DECISION_METRICS
    }


def _member_flags(
    taxonomy: Taxonomy, task: TaskSpec, val: Predictions, test: Predictions, proto: Protocol
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One member: its validation threshold (the task's operating-point rule), validation ``(y, flags)`` and
    test ``(rows, y, flags)``."""
    from hierclf.evaluation.utility import choose_threshold

    _, yv, sv = task_scores(taxonomy, task, val)
    threshold = choose_threshold(proto.operating_point(task), yv, sv)
    rows, yt, st = task_scores(taxonomy, task, test)
    return threshold, yv, sv >= threshold, rows, yt, st >= threshold


def _validation_rates(each: list[Any], same_samples: bool) -> dict[str, float]:
    """The or rule's sensitivity and specificity on validation (NaN when the models were validated on
    different samples: then no case has every model's decision)."""
    if not same_samples:
        return {"sensitivity": float("nan"), "specificity": float("nan")}
    flags = np.stack([e[2] for e in each]).any(axis=0).astype(np.float64)
    at_val = M.binary_metrics_at_threshold(each[0][1], flags, 0.5)
    return {k: float(at_val[k]) for k in ("sensitivity", "specificity")}


def _or_task(
    taxonomy: Taxonomy,
    proto: Protocol,
    task: TaskSpec,
    val: list[Predictions],
    test: list[Predictions],
    same_validation: bool,
) -> OrRuleTask:
    each = [_member_flags(taxonomy, task, v, t, proto) for v, t in zip(val, test)]
    rows, yt = each[0][3], each[0][4]
    member_flags = np.stack([e[5] for e in each])
    flags: np.ndarray = np.asarray(member_flags.any(axis=0))
    groups = None if test[0].groups is None else test[0].groups[rows]
    ids = test[0].ids[rows] if test[0].ids is not None else rows.astype(str)
    return OrRuleTask(
        task=task.name,
        thresholds=[e[0] for e in each],
        ids=ids,
        y=yt,
        decisions=flags,
        member_decisions=member_flags,
        metrics=_decision_metrics(yt, flags, groups, proto),
        member_metrics=[_decision_metrics(yt, f, groups, proto) for f in member_flags],
        validation=_validation_rates(each, same_validation),
        n=int(len(yt)),
        n_positive=int(yt.sum()),
        n_negative=int(len(yt) - yt.sum()),
        n_groups=int(len(np.unique(groups))) if groups is not None else int(len(yt)),
    )


def or_rule(
    taxonomy: Taxonomy,
    protocol: Protocol,
    val: Sequence[PredictionSource],
    test: Sequence[PredictionSource],
    *,
    names: Sequence[str] | None = None,
) -> OrRuleReport:
    """Decide every task of ``protocol`` by the or rule over the models (module docstring).

    Args:
        taxonomy: the tree.
        protocol: the tasks, the target sensitivity and the bootstrap settings.
        val, test: one validation and one test prediction set per model, paired by position; the test sets
            must hold the same samples (matched by id; the first's groups are the bootstrap unit).
        names: the models' names in the report (default ``model 1``, ``model 2``, ...).

    Raises:
        EvaluationError: fewer than two models, unpaired sets, other samples or labels, a task with no
            positive or negative sample.
    """
    if len(val) != len(test):
        raise EvaluationError(f"give one validation and one test set per model ({len(val)} vs {len(test)})")
    if len(test) < 2:
        raise EvaluationError("the or rule combines at least two models")
    val_sets = [_read(v, taxonomy) for v in val]
    try:
        val_sets, same_validation = _aligned(val_sets), True
    except EvaluationError:  # validated on other samples: thresholds still each model's own
        same_validation = False
    test_sets = _aligned([_read(t, taxonomy) for t in test])
    _check_labels(test_sets)
    labels = list(names) if names is not None else [f"model {k + 1}" for k in range(len(test))]
    report = OrRuleReport(labels, protocol.target_sensitivity, protocol.bootstrap.ci_level)
    for task in protocol.tasks:
        report.tasks[task.name] = _or_task(taxonomy, protocol, task, val_sets, test_sets, same_validation)
    return report
