"""Clinically partitioned evaluation: the numbers a protocol pre-registered, with their provenance.

:func:`evaluate` takes validation and test predictions (one file or
:class:`~hierclf.evaluation.prediction_files.Predictions`
per seed) and a :class:`~hierclf.evaluation.protocol_format.Protocol`, and returns an
:class:`EvaluationReport`:

* **binary tasks** -- samples whose true label lies under the task's positive or negative nodes; score =
  conditional roll-up ``P(pos) / (P(pos) + P(neg))``; ROC, AUC, partial AUC above the target sensitivity; the
  threshold chosen on **validation** at the target sensitivity, then applied to **test** (sensitivity,
  specificity, PPV, NPV); the optimistic specificity at the target sensitivity chosen on test itself,
  reported separately and labelled so; calibration; reader comparison;
* **partitions** (cuts) -- confusion matrix, per-class recall, balanced accuracy (Esteva's "mean of
  per-class accuracies"), macro one-vs-rest AUC and cancer sensitivity (recall of ``malignant``);
* **hierarchical** -- mistake severity and hierarchical precision / recall / F1 of the predicted column;
* **subgroups** -- task metrics broken down by metadata columns, with counts and CIs, small groups flagged;
* **uncertainty** -- percentile bootstrap CIs that resample the protocol's groups (patients, lesions), and
  across seeds the mean, the sample standard deviation (``ddof=1``) and a pooled CI (the bootstrap
  replicates of all seeds together, so it carries both sampling and training variation).

The numeric kernels live in :mod:`hierclf.evaluation.metrics`; this module decides *which* samples, scores and
thresholds go into them and records where each number came from. :mod:`hierclf.evaluation.report` writes the
report.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.classes.label_mapping import ClassMap
from hierclf.errors import FileFormatError, HierclfError, Problem, UnknownNameError
from hierclf.evaluation import metrics as M
from hierclf.evaluation.prediction_files import Predictions, read_predictions
from hierclf.evaluation.protocol_format import Protocol, TaskSpec
from hierclf.functional import conditional, rollup
from hierclf.io.csv_files import read_csv_table
from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationError",
    "EvaluationReport",
    "Estimate",
    "Evaluator",
    "Metadata",
    "PartitionResult",
    "ReaderPoint",
    "TaskResult",
    "evaluate",
    "read_metadata",
    "read_readers",
    "reader_dominance",
    "task_scores",
]

#: metadata CSV columns (case-insensitive) that hold the sample id, in order of preference
METADATA_ID_COLUMNS = ("id", "image_id", "image")
SYNTHETIC_BANNER = "SYNTHETIC DATA — not a clinical result"
PRIMARY_KEYS = {
    "specificity_at_target_sensitivity": "specificity",
    "sensitivity_at_target_sensitivity": "sensitivity",
    "auc": "auc",
    "partial_auc": "partial_auc",
    "ppv": "ppv",
    "npv": "npv",
    "balanced_accuracy": "balanced_accuracy",
    "macro_auc": "macro_auc",
    "cancer_sensitivity": "cancer_sensitivity",
}


class EvaluationError(HierclfError, ValueError):
    """Inputs that cannot be evaluated under the protocol (missing labels, empty task sides, NaN, ...)."""


# --- result records ------------------------------------------------------------------------------------


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
    threshold_source: str
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
    """The result of :func:`evaluate`; :func:`hierclf.evaluation.report.write_report` renders it."""

    taxonomy: str
    protocol: dict[str, Any]
    seeds: list[str]
    synthetic: bool
    threshold_source: str
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
        """Plain JSON-ready data (NaN -> ``None``, arrays -> lists)."""
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


#: ROC curves in report.json keep at most this many points (evenly spaced along the curve, ends kept)
JSON_ROC_POINTS = 1001


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
    """JSON-ready copy: NaN/inf -> None, numpy scalars and arrays -> Python values."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
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


def _estimate(
    per_seed: Sequence[float] | np.ndarray,
    replicates: Sequence[np.ndarray] | None = None,
    *,
    level: float = 0.95,
    n: Sequence[int] | None = None,
    n_groups: Sequence[int] | None = None,
    provenance: str = "",
) -> Estimate:
    """Aggregate per-seed values: mean, sample std (ddof=1), pooled percentile CI of all replicates."""
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
    return Estimate(value, std, [float(v) for v in vals], ci, level, _one(n), _one(n_groups), provenance)


def _one(values: Sequence[int] | None) -> int | list[int] | None:
    if values is None:
        return None
    values = [int(v) for v in values]
    return values[0] if len(set(values)) == 1 else values


# --- inputs --------------------------------------------------------------------------------------------


@dataclass
class Metadata:
    """A metadata table keyed by sample id (e.g. HAM10000_metadata.csv keyed by ``image_id``)."""

    file: str
    id_column: str
    ids: np.ndarray
    columns: dict[str, np.ndarray]

    def lookup(self, ids: np.ndarray | None, what: str) -> np.ndarray:
        """Row of each id in this table; unknown ids are an error listing examples."""
        if ids is None:
            raise EvaluationError(
                f"{what} has no sample ids, so it cannot be joined with the metadata "
                f"{self.file}; write an 'id' column / 'ids' array"
            )
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        pos = np.searchsorted(sorted_ids, ids)
        pos = np.minimum(pos, max(len(sorted_ids) - 1, 0))
        found = sorted_ids[pos] == ids if len(sorted_ids) else np.zeros(len(ids), bool)
        if not found.all():
            missing = ids[~found]
            examples = ", ".join(repr(str(x)) for x in missing[:5])
            raise EvaluationError(
                f"{len(missing)} of {len(ids)} sample ids of {what} are not in the metadata "
                f"{self.file} (column {self.id_column!r}), e.g. {examples}"
            )
        return order[pos]

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise UnknownNameError("metadata column", name, list(self.columns), f"in {self.file}")
        return self.columns[name]


def read_metadata(path: str | Path) -> Metadata:
    """Read a metadata CSV whose id column is ``id``, ``image_id`` or ``image`` (case-insensitive).

    Values are kept as text; empty cells become ``"(missing)"``. Every problem of the file is a positioned
    :class:`~hierclf.errors.FileFormatError`.
    """
    table = read_csv_table(path, what="metadata")
    id_col = table.find(*METADATA_ID_COLUMNS)
    if id_col is None:
        problem = Problem(
            f"no sample id column; expected one of {', '.join(METADATA_ID_COLUMNS)} "
            f"(found {', '.join(table.header)})",
            table.file,
            1,
            code="missing-column",
        )
        raise FileFormatError([problem], what="metadata")
    cells = np.where(table.cells == "", "(missing)", table.cells)
    ids = cells[:, id_col]
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        again = int(np.flatnonzero(ids == uniq[k])[1])
        message = (
            f"sample id {str(uniq[k])!r} appears {int(counts[k])} times in column {table.header[id_col]!r} "
            f"(first at line {int(table.lines[first[k]])}); ids must be unique"
        )
        raise FileFormatError(
            [table.problem(again, message, column=id_col, code="duplicate-id")], what="metadata"
        )
    columns = {h: cells[:, k] for k, h in enumerate(table.header) if k != id_col}
    return Metadata(table.file, table.header[id_col], ids, columns)


def read_readers(path: str | Path) -> list[dict[str, Any]]:
    """Read reader operating points: CSV ``reader,sensitivity,specificity`` and an optional ``task`` column.

    Values are fractions in [0, 1]; every problem of the file is a positioned
    :class:`~hierclf.errors.FileFormatError`.
    """
    table = read_csv_table(path, what="reader file", required=("reader", "sensitivity", "specificity"))
    values = {}
    for key in ("sensitivity", "specificity"):
        col = table.index_of(key)
        cells = table.cells[:, col]
        number = np.array([_fraction(c) for c in cells.tolist()], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(number) | (number < 0.0) | (number > 1.0))
        if bad.size:
            r = int(bad[0])
            why = (
                "is not a number"
                if np.isnan(number[r])
                else "is outside [0, 1]; write fractions, not percentages"
            )
            problem = table.problem(r, f"{key} {str(cells[r])!r} {why}", column=col)
            raise FileFormatError([problem], what="reader file")
        values[key] = number
    task_col = table.find("task")
    readers = table.column("reader")
    return [
        {
            "reader": str(readers[i]),
            "task": (str(table.cells[i, task_col]) or None) if task_col is not None else None,
            "sensitivity": float(values["sensitivity"][i]),
            "specificity": float(values["specificity"][i]),
        }
        for i in range(len(table))
    ]


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _as_predictions(item: str | Path | Predictions, taxonomy: Taxonomy, what: str) -> tuple[Predictions, str]:
    if isinstance(item, Predictions):
        preds, name = item, what
        columns = tuple(taxonomy.resolve(c) for c in preds.columns)
        taxonomy.cut(columns)  # the columns must partition the leaves
        labels = preds.labels
        if labels is not None:
            uniq, inv = np.unique(labels, return_inverse=True)
            labels = (
                np.asarray([taxonomy.resolve(str(u)) for u in uniq], dtype=str)[inv.reshape(-1)]
                if len(uniq)
                else labels
            )
        preds = Predictions(preds.probs, columns, preds.ids, labels, preds.groups)
    else:
        preds, name = read_predictions(item, taxonomy), str(item)
    probs = np.asarray(preds.probs)
    if not np.isfinite(probs).all():
        r, c = np.argwhere(~np.isfinite(probs))[0]
        raise EvaluationError(
            f"{name}: row {int(r)}, column {preds.columns[c]!r}: probability {probs[r, c]} is "
            "not a finite number (NaN or inf)"
        )
    if preds.labels is None:
        raise EvaluationError(
            f"{name}: the predictions carry no true labels ('label' column / 'labels' "
            "array); evaluation needs them"
        )
    return preds, name


# --- label bookkeeping ---------------------------------------------------------------------------------


def _task_labels(taxonomy: Taxonomy, split: _Split, task: TaskSpec) -> np.ndarray:
    """Per sample: 1 positive, 0 negative, -1 not in the task (label elsewhere or above both sides)."""
    idx = taxonomy.index
    rows = idx.rows(split.label_names)
    positive = idx.under_any(rows, idx.rows(task.positive))
    negative = idx.under_any(rows, idx.rows(task.negative))
    return split.per_label_table(np.where(positive, 1, np.where(negative, 0, -1)))


def _cut_labels(taxonomy: Taxonomy, split: _Split, cut: Sequence[str]) -> np.ndarray:
    """Per sample: index of the cut class containing its label, -1 when the label lies above the cut."""
    table = ClassMap.of(taxonomy, cut).class_index(split.label_names, above="ignore")
    return split.per_label_table(table)


def _covered(taxonomy: Taxonomy, nodes: Sequence[str], columns: Sequence[str]) -> list[str]:
    """The nodes that lie strictly below the prediction columns (their probability is unknown)."""
    start, _ = taxonomy.column_ranges(columns)
    pos = taxonomy.index.position
    return [n for n in nodes if start[pos[n]] < 0]


def _roc_envelope(fpr: np.ndarray, tpr: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Height of the ROC polyline at false-positive rates ``x``: at a vertical step, its top.

    Args:
        fpr, tpr: ROC points sorted by increasing ``fpr`` (ties: increasing ``tpr``), from (0, 0) to (1, 1).
        x: ``(k,)`` false-positive rates.
    """
    ux, first = np.unique(fpr, return_index=True)
    hi, lo = np.maximum.reduceat(tpr, first), np.minimum.reduceat(tpr, first)  # top / bottom of each step
    tol = 1e-12  # 1 - specificity is rarely exact in floating point (1 - 0.8 = 0.19999999999999996)
    k = np.clip(np.searchsorted(ux, x + tol, side="right") - 1, 0, len(ux) - 1)
    at = np.abs(ux[k] - x) <= tol
    nxt = np.minimum(k + 1, len(ux) - 1)
    span = np.where(nxt > k, ux[nxt] - ux[k], 1.0)
    frac = np.where(nxt > k, np.clip((x - ux[k]) / span, 0.0, 1.0), 0.0)
    between = hi[k] + frac * (lo[nxt] - hi[k])
    return np.where(at, hi[k], between)


def reader_dominance(
    fpr: np.ndarray, tpr: np.ndarray, sensitivity: np.ndarray, specificity: np.ndarray
) -> np.ndarray:
    """Which reader points lie on or below the model's ROC curve (the model is at least as good there).

    A reader with sensitivity ``s`` and specificity ``p`` is dominated when the ROC polyline (points joined
    by straight lines, as Esteva's figures draw it) reaches a true-positive rate ``>= s`` at false-positive
    rate ``1 - p``.

    Example:
        >>> fpr, tpr = np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.6, 0.9, 1.0])
        >>> reader_dominance(fpr, tpr, np.array([0.5, 0.75, 0.95]), np.array([1.0, 0.75, 0.5])).tolist()
        [True, True, False]
    """
    x = 1.0 - np.asarray(specificity, dtype=np.float64)
    return (
        _roc_envelope(np.asarray(fpr, np.float64), np.asarray(tpr, np.float64), x)
        >= np.asarray(sensitivity, dtype=np.float64) - 1e-12
    )


# --- bootstrap adapters --------------------------------------------------------------------------------


def _boot_binary(
    y: np.ndarray, s: np.ndarray, groups: np.ndarray, proto: Protocol, threshold: float | None
) -> dict[str, tuple[float, np.ndarray]]:
    """Point estimate and replicates of each binary metric (grouped bootstrap, see
    :mod:`hierclf.evaluation.metrics`)."""
    res = M.bootstrap_binary(
        y,
        s,
        groups,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        target_sensitivity=proto.target_sensitivity,
        threshold=threshold,
        ci_level=proto.bootstrap.ci_level,
    )
    return {k: (float(e.point), np.asarray(e.replicates, dtype=np.float64)) for k, e in res.estimates.items()}


def _boot_partition(
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    cancer: np.ndarray | None,
    proto: Protocol,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of per-class recall ``(R, C)``, balanced accuracy ``(R,)`` and cancer sensitivity.

    A replicate draws groups with replacement (:func:`hierclf.evaluation.metrics.grouped_bootstrap_counts`
    over the
    distinct groups, the same draws as for the samples) and counts each group's samples as often as it was
    drawn. Samples are first summed per group, so a chunk of replicates costs two ``(chunk, n_groups) @
    (n_groups, C + 1)`` products: recall_c = drawn correct class-c samples / drawn class-c samples.

    Args:
        y, pred: ``(n,)`` true and predicted class indices.
        groups: ``(n,)`` int group codes ``0..n_groups-1``.
        n_classes: C.
        cancer: optional ``(2, n)`` bool: truth under ``malignant``, prediction under ``malignant``.
        proto: replicates, seed.
    """
    codes, g = np.unique(groups, return_inverse=True)
    g = g.reshape(-1)
    n_groups = len(codes)
    extra = 1 if cancer is not None else 0
    total = np.zeros((n_groups, n_classes + extra))
    hits = np.zeros((n_groups, n_classes + extra))
    np.add.at(total, (g, y), 1.0)
    np.add.at(hits, (g, y), (pred == y).astype(np.float64))
    if cancer is not None:
        np.add.at(total[:, n_classes], g, cancer[0].astype(np.float64))
        np.add.at(hits[:, n_classes], g, (cancer[0] & cancer[1]).astype(np.float64))
    present = total[:, :n_classes].sum(0) > 0
    parts = []
    for counts in M.grouped_bootstrap_counts(codes, proto.bootstrap.replicates, proto.bootstrap.seed):
        w = np.asarray(counts, dtype=np.float64)  # (chunk, n_groups): draws of each group
        with np.errstate(invalid="ignore", divide="ignore"):
            parts.append((w @ hits) / (w @ total))
    ratios = np.concatenate(parts) if parts else np.zeros((0, n_classes + extra))
    rec = ratios[:, :n_classes]
    rec[:, ~present] = np.nan
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates stay NaN ('mean of empty slice')
        bal = np.nanmean(rec[:, present], axis=1) if present.any() else np.full(len(rec), np.nan)
    out = {"recall": rec, "balanced_accuracy": bal}
    if cancer is not None:
        out["cancer_sensitivity"] = ratios[:, n_classes]
    return out


# --- the evaluation ------------------------------------------------------------------------------------


@dataclass
class _Split:
    """One prediction set, ready for the metrics.

    ``groups`` are ``(n,)`` int64 group codes (the bootstrap unit); ``label_names`` / ``label_codes`` are the
    distinct true labels and each sample's index into them, computed once (string sorting is the slow part).
    """

    name: str
    preds: Predictions
    groups: np.ndarray
    meta_rows: np.ndarray | None
    label_names: list[str] = field(default_factory=list)
    label_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    group_names: np.ndarray = field(default_factory=lambda: np.zeros(0, str))
    grouped: bool = True

    def __post_init__(self) -> None:
        labels = self.preds.labels
        if labels is not None and not self.label_names:
            uniq, inv = np.unique(labels, return_inverse=True)
            self.label_names, self.label_codes = uniq.tolist(), inv.reshape(-1).astype(np.int64)
        names, codes = np.unique(np.asarray(self.groups).astype(str), return_inverse=True)
        self.group_names, self.groups = names, codes.reshape(-1).astype(np.int64)

    def per_label_table(self, table: np.ndarray) -> np.ndarray:
        """``(n,)`` int64: ``table[k]`` for the samples whose label is ``label_names[k]``."""
        table = np.asarray(table, dtype=np.int64)
        return table[self.label_codes] if len(table) else np.zeros(len(self.label_codes), np.int64)

    def per_label(self, value: Callable[[str], int]) -> np.ndarray:
        """``(n,)`` int64: ``value(label)`` of each sample, computed once per distinct label."""
        table = np.asarray([value(u) for u in self.label_names], dtype=np.int64)
        return table[self.label_codes] if len(table) else np.zeros(len(self.label_codes), np.int64)


def _prepare(
    items: Sequence[str | Path | Predictions],
    taxonomy: Taxonomy,
    proto: Protocol,
    metadata: Metadata | None,
    split: str,
    warnings_: list[str],
) -> list[_Split]:
    """Read and check one split's prediction sets, join the metadata, and find each sample's group.

    Groups come from the metadata's ``group_column`` when it has one, else from the predictions' ``groups``.
    When neither carries them (e.g. MedMNIST's DermaMNIST has no lesion ids), the bootstrap falls back to
    rows and the report opens with a warning naming the missing column.
    """
    out = []
    missing_groups = []
    for k, item in enumerate(items):
        preds, name = _as_predictions(item, taxonomy, f"{split} predictions of seed {k}")
        rows = metadata.lookup(preds.ids, name) if metadata is not None else None
        gc = proto.group_column
        if metadata is not None and gc is not None and gc in metadata.columns:
            groups = metadata.columns[gc][rows]
        elif gc is not None and preds.groups is not None:
            groups = preds.groups
        else:
            groups = np.arange(len(preds)).astype(str)
            if gc is not None:
                missing_groups.append(name)
        grouped = gc is not None and name not in missing_groups
        out.append(_Split(name, preds, np.asarray(groups).astype(str), rows, grouped=grouped))
    gc = proto.group_column
    if missing_groups and split == "test" and gc is not None:
        why = (
            f"neither the metadata {metadata.file} nor the predictions carry it"
            if metadata is not None
            else "the predictions carry no groups and no metadata was given"
        )
        _warn(
            warnings_,
            f"NO {gc.upper()} GROUPS: the protocol resamples {gc!r}, but {why} "
            f"({', '.join(missing_groups)}); confidence intervals resample rows and are too narrow when a "
            "patient or lesion contributes several images. Pass --metadata with that column or write a "
            "'group' column into the predictions.",
        )
    return out


def _check_leakage(
    val: list[_Split], test: list[_Split], group_column: str | None, warnings_: list[str]
) -> None:
    """Warn when a validation and a test set of the same seed share sample ids or patients/lesions: the
    threshold would then be chosen partly on test data (seed 001: split by patient, never by image)."""
    for k, (v, t) in enumerate(zip(val, test)):
        shared = []
        if v.preds.ids is not None and t.preds.ids is not None:
            ids = np.intersect1d(v.preds.ids, t.preds.ids)
            if len(ids):
                shared.append(f"{len(ids)} sample id(s), e.g. {str(ids[0])!r}")
        if v.grouped and t.grouped:
            groups = np.intersect1d(v.group_names, t.group_names)
            if len(groups):
                shared.append(f"{len(groups)} {group_column} group(s), e.g. {str(groups[0])!r}")
        if shared:
            _warn(
                warnings_,
                f"LEAKAGE: validation and test of seed {k} share {' and '.join(shared)}; the "
                "threshold chosen on validation has seen test patients, so test results are optimistic.",
            )


def _warn(warnings_: list[str], message: str) -> None:
    """A loud warning: at the top of the report, and logged."""
    warnings_.append(message)
    logger.warning("%s", message)


def evaluate(
    taxonomy: Taxonomy,
    protocol: Protocol,
    val: Sequence[str | Path | Predictions] | None,
    test: Sequence[str | Path | Predictions],
    *,
    metadata: str | Path | Metadata | None = None,
    readers: str | Path | Sequence[Mapping[str, Any]] | None = None,
    synthetic: bool = False,
    allow_test_thresholds: bool | None = None,
) -> EvaluationReport:
    """Evaluate predictions under a pre-registered protocol.

    Args:
        taxonomy: the disease tree.
        protocol: a protocol loaded with :func:`hierclf.evaluation.protocol_format.load_protocol` (node names
        resolved).
        val: validation predictions, one per seed (paths or :class:`Predictions`), paired with ``test`` by
            position; thresholds are chosen on them. ``None`` or empty: thresholds would be chosen on test,
            which is refused unless ``allow_test_thresholds`` (or the protocol's flag) allows it.
        test: test predictions, one per seed. Each needs ``labels``; the columns may be leaves or any cut.
        metadata: a metadata CSV (or :class:`Metadata`) keyed by sample id: groups for the bootstrap and
            subgroup columns. Every prediction id must be in it.
        readers: a reader CSV (``reader,sensitivity,specificity[,task]``) or its rows; readers without a task
            belong to the primary task (or the first task).
        synthetic: mark every section of the report "SYNTHETIC DATA — not a clinical result".
        allow_test_thresholds: overrides the protocol's ``allow_test_thresholds``.

    Returns:
        The :class:`EvaluationReport`.

    Raises:
        EvaluationError: unequal numbers of val and test files, missing labels, NaN, a task with no
            positives or no negatives in a split, ids not in the metadata, a task node below the columns.
    """
    warnings_: list[str] = []
    notes: list[str] = []
    allow = protocol.allow_test_thresholds if allow_test_thresholds is None else allow_test_thresholds
    val = list(val or [])
    test = list(test)
    if not test:
        raise EvaluationError("no test predictions given")
    if not val:
        if not allow:
            raise EvaluationError(
                "no validation predictions: the operating point would be chosen on test, which "
                "makes test sensitivity and specificity optimistic; pass validation predictions "
                "(--val) or allow it explicitly (--allow-test-thresholds / "
                "allow_test_thresholds: true)"
            )
        source = "test (no validation predictions; optimistic, allowed by allow_test_thresholds)"
        _warn(
            warnings_,
            "THRESHOLDS CHOSEN ON TEST: no validation predictions were given, so every "
            "sensitivity/specificity/PPV/NPV at the operating point is optimistic.",
        )
    else:
        source = "validation"
        if len(val) != len(test):
            raise EvaluationError(
                f"{len(val)} validation and {len(test)} test prediction sets: give one of each "
                "per seed, in the same order"
            )
    meta = read_metadata(metadata) if isinstance(metadata, (str, Path)) else metadata
    test_splits = _prepare(test, taxonomy, protocol, meta, "test", warnings_)
    val_splits = _prepare(val, taxonomy, protocol, meta, "validation", warnings_) if val else test_splits
    if val:
        _check_leakage(val_splits, test_splits, protocol.group_column, warnings_)
    n_seeds = len(test_splits)
    if n_seeds < protocol.min_seeds:
        _warn(
            warnings_,
            f"ONLY {n_seeds} SEED{'S' if n_seeds != 1 else ''}: the protocol asks for at least "
            f"{protocol.min_seeds}; the seed mean ± std is not the pre-registered estimate.",
        )
    if protocol.group_column is None:
        _warn(
            warnings_,
            "ROW-LEVEL CONFIDENCE INTERVALS: the protocol has no group_column, so the bootstrap "
            "resamples images, not patients or lesions; intervals are too narrow when a patient "
            "contributes several images.",
        )

    tasks = {
        t.name: _evaluate_task(taxonomy, protocol, t, val_splits, test_splits, source) for t in protocol.tasks
    }
    partitions = {}
    for part in protocol.partitions:
        res = _evaluate_partition(taxonomy, protocol, part.name, part.nodes, test_splits, warnings_)
        if res is not None:
            partitions[part.name] = res
    hier = _evaluate_hierarchical(taxonomy, test_splits, notes)
    calib = {n: _calibration_node(taxonomy, protocol, n, test_splits) for n in protocol.calibration_nodes}
    if readers is not None:
        rows = read_readers(readers) if isinstance(readers, (str, Path)) else [dict(r) for r in readers]
        _attach_readers(protocol, tasks, rows)
    subgroups: dict[str, list[dict[str, Any]]] = {}
    if protocol.subgroups:
        if meta is None:
            _warn(
                warnings_,
                f"SUBGROUPS NOT COMPUTED: the protocol lists {', '.join(protocol.subgroups)} but no "
                "metadata was given (--metadata).",
            )
        else:
            quiet = logging.getLogger("hierclf.evaluation.metrics")
            old_level = quiet.level
            quiet.setLevel(logging.ERROR)  # small subgroups miss a class in many replicates: expected there
            try:
                for col in protocol.subgroups:
                    subgroups[col] = _subgroups(taxonomy, protocol, meta, col, tasks, test_splits)
            finally:
                quiet.setLevel(old_level)
    for col, rows_ in subgroups.items():
        small = [str(r["value"]) for r in rows_ if r["small"]]
        if small:
            notes.append(
                f"subgroups of {col!r} with fewer than {protocol.min_group_size} test samples (flagged "
                f"small): {', '.join(small)}"
            )
    primary = _primary(protocol, tasks, partitions)
    return EvaluationReport(
        taxonomy=taxonomy.name,
        protocol=protocol.model_dump(mode="json"),
        seeds=[s.name for s in test_splits],
        validation=[s.name for s in val_splits] if val else [],
        synthetic=synthetic,
        threshold_source=source,
        group_column=protocol.group_column,
        warnings=warnings_,
        notes=notes,
        primary=primary,
        tasks=tasks,
        partitions=partitions,
        hierarchical=hier,
        calibration_nodes=calib,
        subgroups=subgroups,
    )


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
    preds, name = _as_predictions(predictions, taxonomy, "predictions")
    split = _Split(name, preds, np.arange(len(preds)).astype(str), None)
    rows, y, scores = _task_data(taxonomy, task, split, "given")
    return rows, y, scores


def _task_data(taxonomy: Taxonomy, task: TaskSpec, split: _Split, role: str) -> tuple[np.ndarray, ...]:
    """(rows in the task, y in {0,1}, conditional score) of one split; errors for empty sides."""
    below = _covered(taxonomy, task.positive + task.negative, split.preds.columns)
    if below:
        raise EvaluationError(
            f"{split.name}: task {task.name!r}: node(s) {', '.join(map(repr, below))} lie "
            f"below the prediction columns ({', '.join(split.preds.columns)}), so their "
            "probability is unknown"
        )
    code = _task_labels(taxonomy, split, task)
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


def _evaluate_task(
    taxonomy: Taxonomy,
    proto: Protocol,
    task: TaskSpec,
    val: list[_Split],
    test: list[_Split],
    source: str,
) -> TaskResult:
    level = proto.bootstrap.ci_level
    target = proto.target_sensitivity
    per: dict[str, list[float]] = {}
    reps: dict[str, list[np.ndarray]] = {}
    counts: dict[str, list[int]] = {
        k: [] for k in ("val_positive", "val_negative", "test_positive", "test_negative", "test_groups")
    }
    thresholds, rocs, points, eces, curves = [], [], [], [], []
    n_test, n_groups = [], []
    for v, t in zip(val, test):
        _, yv, sv = _task_data(taxonomy, task, v, "validation" if source == "validation" else "test")
        rows, yt, st = _task_data(taxonomy, task, t, "test")
        threshold = float(M.threshold_at_sensitivity(yv, sv, target))
        thresholds.append(threshold)
        val_at = M.binary_metrics_at_threshold(yv, sv, threshold)
        boot = _boot_binary(yt, st, t.groups[rows], proto, threshold)
        at = M.binary_metrics_at_threshold(yt, st, threshold)
        opt_spec, opt_thr = M.specificity_at_sensitivity(yt, st, target)
        values = {
            "auc": (float(M.roc_auc(yt, st)), boot.get("auc")),
            "partial_auc": (float(M.partial_auc_above_sensitivity(yt, st, target)), None),
            "sensitivity": (float(at["sensitivity"]), boot.get("sensitivity")),
            "specificity": (float(at["specificity"]), boot.get("specificity")),
            "ppv": (float(at["ppv"]), boot.get("ppv")),
            "npv": (float(at["npv"]), boot.get("npv")),
            "validation_sensitivity": (float(val_at["sensitivity"]), None),
            "specificity_at_target_chosen_on_test": (
                float(opt_spec),
                _first(boot, "specificity_at_sensitivity"),
            ),
            "threshold_chosen_on_test": (float(opt_thr), None),
        }
        for k, (value, rep) in values.items():
            per.setdefault(k, []).append(value)
            if rep is not None:
                reps.setdefault(k, []).append(rep[1])
        counts["val_positive"].append(int((yv == 1).sum()))
        counts["val_negative"].append(int((yv == 0).sum()))
        counts["test_positive"].append(int((yt == 1).sum()))
        counts["test_negative"].append(int((yt == 0).sum()))
        counts["test_groups"].append(int(len(np.unique(t.groups[rows]))))
        n_test.append(len(yt))
        n_groups.append(counts["test_groups"][-1])
        fpr, tpr, _ = M.roc_curve(yt, st)
        rocs.append({"fpr": np.asarray(fpr, np.float64), "tpr": np.asarray(tpr, np.float64)})
        points.append(
            {
                "threshold": threshold,
                "sensitivity": float(at["sensitivity"]),
                "specificity": float(at["specificity"]),
            }
        )
        eces.append(float(M.expected_calibration_error(yt, st, n_bins=proto.calibration_bins)))
        conf, acc, cnt = M.reliability_curve(yt, st, n_bins=proto.calibration_bins)
        curves.append({"confidence": np.asarray(conf), "accuracy": np.asarray(acc), "count": np.asarray(cnt)})
    at_val = f"test, at the threshold chosen on {source}"
    prov = {
        "auc": "test (threshold-free)",
        "partial_auc": f"test, ROC area above sensitivity {target} "
        "(normalised to 1 for a perfect classifier)",
        "sensitivity": at_val,
        "specificity": at_val,
        "ppv": at_val,
        "npv": at_val,
        "validation_sensitivity": f"{source}, at the threshold chosen there",
        "specificity_at_target_chosen_on_test": "OPTIMISTIC: test, threshold chosen on test itself "
        f"at sensitivity {target} (for comparison only)",
        "threshold_chosen_on_test": "OPTIMISTIC: test",
    }
    metrics = {
        k: _estimate(per[k], reps.get(k), level=level, n=n_test, n_groups=n_groups, provenance=prov[k])
        for k in per
    }
    n_val = [a + b for a, b in zip(counts["val_positive"], counts["val_negative"])]
    thr = _estimate(
        thresholds, level=level, n=n_val, provenance=f"chosen on {source} at sensitivity {target}"
    )
    calibration = {
        "ece": _estimate(eces, level=level, n=n_test, provenance="test, conditional task score"),
        "reliability": curves,
        "n_bins": proto.calibration_bins,
    }
    return TaskResult(
        task.name,
        list(task.positive),
        list(task.negative),
        source,
        counts,
        thr,
        metrics,
        rocs,
        points,
        calibration,
    )


def _first(boot: dict[str, tuple[float, np.ndarray]], *keys: str) -> tuple[float, np.ndarray] | None:
    return next((boot[k] for k in keys if k in boot), None)


def _attach_readers(proto: Protocol, tasks: dict[str, TaskResult], rows: list[dict[str, Any]]) -> None:
    default = proto.primary_metric.task or proto.tasks[0].name
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        name = r.get("task") or default
        if name not in tasks:
            raise UnknownNameError("task", name, list(tasks), "in the reader file")
        by_task.setdefault(name, []).append(r)
    for name, rs in by_task.items():
        res = tasks[name]
        sens = np.array([float(r["sensitivity"]) for r in rs])
        spec = np.array([float(r["specificity"]) for r in rs])
        dom = np.stack(
            [reader_dominance(roc["fpr"], roc["tpr"], sens, spec) for roc in res.roc]
        )  # (seeds, r)
        res.readers = [
            ReaderPoint(str(r["reader"]), float(s), float(p), dom[:, i].tolist())
            for i, (r, s, p) in enumerate(zip(rs, sens, spec))
        ]
        res.reader_fraction_dominated = _estimate(
            dom.mean(axis=1),
            level=proto.bootstrap.ci_level,
            n=[len(rs)],
            provenance="fraction of readers on or below the test ROC curve",
        )


def _cancer_node(taxonomy: Taxonomy) -> str | None:
    try:
        return taxonomy.resolve("malignant")
    except UnknownNameError:
        return None


def _evaluate_partition(
    taxonomy: Taxonomy, proto: Protocol, name: str, cut: list[str], test: list[_Split], warnings_: list[str]
) -> PartitionResult | None:
    below = sorted({n for s in test for n in _covered(taxonomy, cut, s.preds.columns)})
    if below:
        _warn(
            warnings_,
            f"PARTITION {name!r} SKIPPED: its node(s) {', '.join(below)} lie below the prediction "
            "columns, whose probabilities cannot be split.",
        )
        return None
    level = proto.bootstrap.ci_level
    C = len(cut)
    cancer = _cancer_node(taxonomy)
    cancer_cls = None
    notes: list[str] = []
    if cancer is not None:
        idx = taxonomy.index
        inside = np.flatnonzero(idx.is_under(idx.rows(cut), idx.position[cancer])).tolist()
        if inside and sorted(taxonomy.leaves_under(cancer)) == sorted(
            leaf for i in inside for leaf in taxonomy.leaves_under(cut[i])
        ):
            cancer_cls = np.zeros(C, bool)
            cancer_cls[inside] = True
        else:
            notes.append(f"cancer sensitivity not reported: {cancer!r} lies inside a class of this cut")
    per: dict[str, list[float]] = {"balanced_accuracy": [], "macro_auc": [], "accuracy": []}
    reps: dict[str, list[np.ndarray]] = {"balanced_accuracy": []}
    rec_per: list[np.ndarray] = []
    rec_reps: list[np.ndarray] = []
    cms, ns, excl, groups_n = [], [], [], []
    if cancer_cls is not None:
        per["cancer_sensitivity"], reps["cancer_sensitivity"] = [], []
    for s in test:
        y_all = _cut_labels(taxonomy, s, cut)
        rows = np.flatnonzero(y_all >= 0)
        y = y_all[rows]
        probs = np.asarray(
            rollup(
                np.asarray(s.preds.probs[rows], dtype=np.float64),
                taxonomy,
                list(cut),
                columns=list(s.preds.columns),
            ),
            dtype=np.float64,
        )
        pred = probs.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
        cms.append(np.asarray(M.confusion_matrix(y, pred, C)))
        rec_per.append(np.asarray(M.per_class_recall(y, pred, C), dtype=np.float64))
        per["balanced_accuracy"].append(float(M.balanced_accuracy(y, pred, C)))
        per["accuracy"].append(float((y == pred).mean()) if len(y) else math.nan)
        present = np.unique(y)
        per["macro_auc"].append(float(M.macro_ovr_auc(y, probs)) if len(present) > 1 else math.nan)
        cancer_pair = None
        if cancer_cls is not None:
            cancer_pair = (cancer_cls[y], cancer_cls[pred])
            truth = cancer_cls[y]
            per["cancer_sensitivity"].append(
                float((cancer_cls[pred] & truth).sum() / truth.sum()) if truth.any() else math.nan
            )
        boot = _boot_partition(
            y, pred, s.groups[rows], C, None if cancer_pair is None else np.stack(cancer_pair), proto
        )
        rec_reps.append(boot["recall"])
        reps["balanced_accuracy"].append(boot["balanced_accuracy"])
        if cancer_cls is not None:
            reps["cancer_sensitivity"].append(boot["cancer_sensitivity"])
        ns.append(len(rows))
        excl.append(int(len(y_all) - len(rows)))
        groups_n.append(int(len(np.unique(s.groups[rows]))))
    if any(excl):
        notes.append(
            f"{max(excl)} test sample(s) per seed at most have a label above this cut and are left out"
        )
    prov = "test, argmax of the rolled-up cut probabilities"
    metrics = {
        k: _estimate(
            v,
            reps.get(k),
            level=level,
            n=ns,
            n_groups=groups_n,
            provenance=prov + (" (one-vs-rest, classes present)" if k == "macro_auc" else ""),
        )
        for k, v in per.items()
    }
    rec = np.stack(rec_per)  # (seeds, C)
    per_class = {
        c: _estimate(
            rec[:, i],
            [r[:, i] for r in rec_reps],
            level=level,
            n=[int(cm[i].sum()) for cm in cms],
            provenance=prov,
        )
        for i, c in enumerate(cut)
    }
    return PartitionResult(name, list(cut), ns, excl, cms, per_class, metrics, notes)


def _evaluate_hierarchical(taxonomy: Taxonomy, test: list[_Split], notes: list[str]) -> dict[str, Estimate]:
    """Mistake severity (leaf columns only) and hierarchical P/R/F1 of the predicted column."""
    pos = taxonomy.index.position
    leaf_pos = {leaf: i for i, leaf in enumerate(taxonomy.leaves)}
    per: dict[str, list[float]] = {}
    ns: list[int] = []
    skipped = False
    for s in test:
        cols = s.preds.columns
        pred_node = np.asarray([pos[c] for c in cols])[np.asarray(s.preds.probs).argmax(axis=1)]
        true_node = s.per_label(pos.__getitem__)
        p, r, f = M.hierarchical_prf(true_node, pred_node, taxonomy)
        for k, v in (("hierarchical_precision", p), ("hierarchical_recall", r), ("hierarchical_f1", f)):
            per.setdefault(k, []).append(float(v))
        ns.append(len(s.preds))
        if all(taxonomy.is_leaf(c) for c in cols):
            leaf_code = s.per_label(lambda u: leaf_pos.get(u, -1))
            is_leaf = leaf_code >= 0  # samples labelled at a leaf
            t_idx = leaf_code[is_leaf]
            col_leaf = np.asarray([leaf_pos[c] for c in cols])
            p_idx = col_leaf[np.asarray(s.preds.probs)[is_leaf].argmax(axis=1)] if len(t_idx) else t_idx
            dist, lca_h = M.mistake_severity(t_idx, p_idx, taxonomy)
            wrong = t_idx != p_idx
            per.setdefault("mistake_distance", []).append(float(np.mean(dist[wrong])) if wrong.any() else 0.0)
            per.setdefault("mistake_lca_height", []).append(
                float(np.mean(lca_h[wrong])) if wrong.any() else 0.0
            )
            per.setdefault("error_rate", []).append(float(wrong.mean()) if len(wrong) else math.nan)
        else:
            skipped = True
    if skipped:
        notes.append("mistake severity needs leaf-level prediction columns; not computed for coarser columns")
    prov = {
        "hierarchical_precision": "test, predicted column vs true label; ancestor sets without the root "
        "(HiClass), micro-averaged",
        "mistake_distance": "test, mean tree distance between true and predicted leaf over the mistakes",
        "mistake_lca_height": "test, mean height of the lowest common "
        "ancestor over the mistakes (making-better-mistakes)",
        "error_rate": "test, leaf-level top-1 error",
    }
    prov["hierarchical_recall"] = prov["hierarchical_f1"] = prov["hierarchical_precision"]
    return {k: _estimate(v, n=ns, provenance=prov[k]) for k, v in per.items() if len(v) == len(test)}


def _calibration_node(taxonomy: Taxonomy, proto: Protocol, node: str, test: list[_Split]) -> dict[str, Any]:
    """ECE and reliability of P(node) against 'true label under node' (labels above the node left out)."""
    eces, curves, ns = [], [], []

    idx = taxonomy.index
    row = idx.position[node]

    for s in test:
        if _covered(taxonomy, [node], s.preds.columns):
            return {"note": f"{node!r} lies below the prediction columns; not computed"}
        labels = idx.rows(s.label_names)  # 1 under the node, -1 above it (unknown), 0 elsewhere
        code = s.per_label_table(
            np.where(idx.is_under(labels, row), 1, np.where(idx.is_under(row, labels), -1, 0))
        )
        rows = np.flatnonzero(code >= 0)
        p = np.asarray(
            rollup(
                np.asarray(s.preds.probs[rows], dtype=np.float64),
                taxonomy,
                [node],
                columns=list(s.preds.columns),
            ),
            dtype=np.float64,
        )[:, 0]
        y = code[rows]
        eces.append(float(M.expected_calibration_error(y, p, n_bins=proto.calibration_bins)))
        conf, acc, cnt = M.reliability_curve(y, p, n_bins=proto.calibration_bins)
        curves.append({"confidence": np.asarray(conf), "accuracy": np.asarray(acc), "count": np.asarray(cnt)})
        ns.append(len(rows))
    return {
        "ece": _estimate(eces, n=ns, provenance=f"test, rolled-up P({node})"),
        "reliability": curves,
        "n_bins": proto.calibration_bins,
    }


def _subgroups(
    taxonomy: Taxonomy,
    proto: Protocol,
    meta: Metadata,
    column: str,
    tasks: dict[str, TaskResult],
    test: list[_Split],
) -> list[dict[str, Any]]:
    """Per value of a metadata column: test counts and, per task, AUC / sensitivity / specificity with CIs."""
    values_all = meta.column(column)
    level = proto.bootstrap.ci_level
    values = sorted(set(np.unique(np.concatenate([values_all[s.meta_rows] for s in test])).tolist()))
    scored = {
        (t.name, k): _task_data(taxonomy, t, s, "test")  # task samples and scores, computed once
        for t in proto.tasks
        for k, s in enumerate(test)
    }
    out = []
    for value in values:
        row: dict[str, Any] = {"value": value, "n": [], "tasks": {}}
        for s in test:
            row["n"].append(int((values_all[s.meta_rows] == value).sum()))
        row["small"] = min(row["n"]) < proto.min_group_size
        for task in proto.tasks:
            per: dict[str, list[float]] = {"auc": [], "sensitivity": [], "specificity": []}
            reps: dict[str, list[np.ndarray]] = {k: [] for k in per}
            npos, nneg, ngroups = [], [], []
            for k, s in enumerate(test):
                rows, y, score = scored[task.name, k]
                sel = values_all[s.meta_rows][rows] == value
                ys, ss, gs = y[sel], score[sel], s.groups[rows][sel]
                thr = tasks[task.name].thresholds.per_seed[k]
                npos.append(int((ys == 1).sum()))
                nneg.append(int((ys == 0).sum()))
                ngroups.append(int(len(np.unique(gs))))
                if len(ys) == 0:
                    for key in per:
                        per[key].append(math.nan)
                    continue
                at = M.binary_metrics_at_threshold(ys, ss, thr)
                both = npos[-1] > 0 and nneg[-1] > 0
                per["auc"].append(float(M.roc_auc(ys, ss)) if both else math.nan)
                per["sensitivity"].append(float(at["sensitivity"]))
                per["specificity"].append(float(at["specificity"]))
                if both:
                    boot = _boot_binary(ys, ss, gs, proto, thr)
                    for key in per:
                        if key in boot:
                            reps[key].append(boot[key][1])
            source = tasks[task.name].threshold_source.split(" ")[0]
            row["tasks"][task.name] = {
                "n_positive": _one(npos),
                "n_negative": _one(nneg),
                "n_groups": _one(ngroups),
                **{
                    k: _estimate(
                        v,
                        reps[k] or None,
                        level=level,
                        n=[a + b for a, b in zip(npos, nneg)],
                        n_groups=ngroups,
                        provenance=f"test subgroup {column}={value}"
                        + ("" if k == "auc" else f", at the threshold chosen on {source}"),
                    ).to_dict()
                    for k, v in per.items()
                },
            }
        out.append(row)
    return out


def _primary(
    proto: Protocol, tasks: dict[str, TaskResult], partitions: dict[str, PartitionResult]
) -> dict[str, Any]:
    pm = proto.primary_metric
    key = PRIMARY_KEYS[pm.metric]
    est: Estimate | None
    if pm.task is not None:
        est = tasks[pm.task].metrics.get(key)
    else:
        part = partitions.get(pm.target)
        est = part.metrics.get(key) if part is not None else None
    return {
        "metric": pm.metric,
        "task": pm.task,
        "partition": pm.partition,
        "estimate": est.to_dict() if est is not None else None,
    }


class Evaluator:
    """The stateful face of :func:`evaluate`: add one seed at a time, then compute the report.

    Useful when seeds finish one after another (e.g. at the end of each training run); the result is the
    same as calling :func:`evaluate` with all seeds at once.

    Example:
        >>> from hierclf import Taxonomy
        >>> from hierclf.evaluation.protocol_format import protocol_from_dict
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> proto = protocol_from_dict({"name": "demo", "target_sensitivity": 0.9, "group_column": None,
        ...     "min_seeds": 1, "bootstrap": {"replicates": 20},
        ...     "primary_metric": {"metric": "auc", "task": "mel_vs_nv"},
        ...     "tasks": [{"name": "mel_vs_nv", "positive": ["mel"], "negative": ["nv"]}]}, tax)
        >>> rng = np.random.default_rng(0)
        >>> labels = np.array(["melanoma", "melanocytic_nevus"] * 20)
        >>> probs = rng.dirichlet(np.ones(7), size=40)
        >>> ev = Evaluator(tax, proto)
        >>> preds = Predictions(probs, tax.leaves, labels=labels)
        >>> ev.add(preds, preds)
        >>> report = ev.compute()
        >>> report.n_seeds, report.tasks["mel_vs_nv"].threshold_source
        (1, 'validation')
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        protocol: Protocol,
        *,
        metadata: str | Path | Metadata | None = None,
        readers: str | Path | Sequence[Mapping[str, Any]] | None = None,
        synthetic: bool = False,
        allow_test_thresholds: bool | None = None,
    ) -> None:
        self.taxonomy = taxonomy
        self.protocol = protocol
        self.metadata = read_metadata(metadata) if isinstance(metadata, (str, Path)) else metadata
        self.readers = readers
        self.synthetic = synthetic
        self.allow_test_thresholds = allow_test_thresholds
        self.val: list[str | Path | Predictions] = []
        self.test: list[str | Path | Predictions] = []

    def add(self, val: str | Path | Predictions | None, test: str | Path | Predictions) -> None:
        """Add one seed's validation (``None`` only if every seed has none) and test predictions."""
        if (val is None) != (not self.val) and self.test:
            raise EvaluationError("give validation predictions for every seed or for none")
        if val is not None:
            self.val.append(val)
        self.test.append(test)

    def reset(self) -> None:
        """Forget the seeds added so far."""
        self.val, self.test = [], []

    def compute(self) -> EvaluationReport:
        """The :class:`EvaluationReport` of every seed added so far."""
        return evaluate(
            self.taxonomy,
            self.protocol,
            self.val or None,
            self.test,
            metadata=self.metadata,
            readers=self.readers,
            synthetic=self.synthetic,
            allow_test_thresholds=self.allow_test_thresholds,
        )
