"""The prediction sets of an evaluation, read and checked: one :class:`Split` per seed and split, joined with
the metadata, each sample's bootstrap group found, and the label bookkeeping every section shares.

:func:`read_inputs` is the evaluation's first step: it refuses what cannot be evaluated (no test set, no
validation set unless thresholds on test are allowed, unpaired seeds, NaN, missing labels) and warns about
what weakens the result (thresholds on test, missing groups, validation/test leakage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hierclf.classes.label_mapping import ClassMap
from hierclf.evaluation.catalog import ThresholdSource
from hierclf.evaluation.notices import EvaluationError, Findings
from hierclf.evaluation.prediction_files import Predictions, read_predictions
from hierclf.evaluation.protocol_format import Protocol, TaskSpec
from hierclf.evaluation.sample_metadata import Metadata, read_metadata
from hierclf.taxonomy.tree import Taxonomy

__all__ = ["Inputs", "Split", "covered", "cut_labels", "read_inputs", "task_labels"]

PredictionSource = str | Path | Predictions


@dataclass
class Split:
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


@dataclass
class Inputs:
    """The checked inputs of one evaluation.

    Attributes:
        val: the splits thresholds are chosen on, one per seed (the test splits when there is no validation).
        test: the test splits, one per seed.
        source: where the thresholds are chosen.
        metadata: the metadata table, if any.
    """

    val: list[Split]
    test: list[Split]
    source: ThresholdSource
    metadata: Metadata | None

    @property
    def validation_names(self) -> list[str]:
        """The validation files (empty when thresholds are chosen on test)."""
        return [s.name for s in self.val] if self.source is ThresholdSource.VALIDATION else []


def read_inputs(
    taxonomy: Taxonomy,
    proto: Protocol,
    val: Sequence[PredictionSource] | None,
    test: Sequence[PredictionSource],
    *,
    metadata: str | Path | Metadata | None,
    allow_test_thresholds: bool | None,
    findings: Findings,
) -> Inputs:
    """Read and check every prediction set and the metadata (see the module docstring)."""
    source = _threshold_source(proto, list(val or []), list(test), allow_test_thresholds, findings)
    meta = read_metadata(metadata) if isinstance(metadata, (str, Path)) else metadata
    test_splits = _prepare(test, taxonomy, proto, meta, "test", findings)
    if source is ThresholdSource.TEST:
        return Inputs(test_splits, test_splits, source, meta)
    val_splits = _prepare(list(val or []), taxonomy, proto, meta, "validation", findings)
    _check_leakage(val_splits, test_splits, proto.group_column, findings)
    return Inputs(val_splits, test_splits, source, meta)


def _threshold_source(
    proto: Protocol,
    val: list[PredictionSource],
    test: list[PredictionSource],
    allow_test_thresholds: bool | None,
    findings: Findings,
) -> ThresholdSource:
    """Validation when given (one per test set); test only when allowed, with a warning."""
    allow = proto.allow_test_thresholds if allow_test_thresholds is None else allow_test_thresholds
    if not test:
        raise EvaluationError("no test predictions given")
    if val:
        if len(val) != len(test):
            raise EvaluationError(
                f"{len(val)} validation and {len(test)} test prediction sets: give one of each "
                "per seed, in the same order"
            )
        return ThresholdSource.VALIDATION
    if not allow:
        raise EvaluationError(
            "no validation predictions: the operating point would be chosen on test, which "
            "makes test sensitivity and specificity optimistic; pass validation predictions "
            "(--val) or allow it explicitly (--allow-test-thresholds / "
            "allow_test_thresholds: true)"
        )
    findings.warn(
        "THRESHOLDS CHOSEN ON TEST: no validation predictions were given, so every "
        "sensitivity/specificity/PPV/NPV at the operating point is optimistic."
    )
    return ThresholdSource.TEST


def _prepare(
    items: Sequence[PredictionSource],
    taxonomy: Taxonomy,
    proto: Protocol,
    metadata: Metadata | None,
    split: str,
    findings: Findings,
) -> list[Split]:
    """Read and check one split's prediction sets, join the metadata, and find each sample's group.

    Groups come from the metadata's ``group_column`` when it has one, else from the predictions' ``groups``.
    When neither carries them (e.g. MedMNIST's DermaMNIST has no lesion ids), the bootstrap falls back to
    rows and the report opens with a warning naming the missing column.
    """
    out = []
    for k, item in enumerate(items):
        preds, name = as_predictions(item, taxonomy, f"{split} predictions of seed {k}")
        rows = metadata.lookup(preds.ids, name) if metadata is not None else None
        groups = _groups(proto.group_column, preds, metadata, rows)
        grouped = groups is not None
        if groups is None:
            groups = np.arange(len(preds)).astype(str)
        out.append(Split(name, preds, np.asarray(groups).astype(str), rows, grouped=grouped))
    missing = [s.name for s in out if not s.grouped]
    gc = proto.group_column
    if missing and split == "test" and gc is not None:
        why = (
            f"neither the metadata {metadata.file} nor the predictions carry it"
            if metadata is not None
            else "the predictions carry no groups and no metadata was given"
        )
        findings.warn(
            f"NO {gc.upper()} GROUPS: the protocol resamples {gc!r}, but {why} "
            f"({', '.join(missing)}); confidence intervals resample rows and are too narrow when a "
            "patient or lesion contributes several images. Pass --metadata with that column or write a "
            "'group' column into the predictions.",
        )
    return out


def _groups(
    group_column: str | None, preds: Predictions, metadata: Metadata | None, rows: np.ndarray | None
) -> np.ndarray | None:
    """Each sample's group from the metadata or the predictions; ``None`` when neither has them (or the
    protocol resamples rows)."""
    if group_column is None:
        return None
    if metadata is not None and group_column in metadata.columns:
        return metadata.columns[group_column][rows]
    return preds.groups


def _check_leakage(val: list[Split], test: list[Split], group_column: str | None, findings: Findings) -> None:
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
            findings.warn(
                f"LEAKAGE: validation and test of seed {k} share {' and '.join(shared)}; the "
                "threshold chosen on validation has seen test patients, so test results are optimistic.",
            )


def as_predictions(item: PredictionSource, taxonomy: Taxonomy, what: str) -> tuple[Predictions, str]:
    """A prediction set read from a file or checked in memory (columns a cut, labels resolved to ids), and
    its name in messages; NaN probabilities and missing labels are errors."""
    if isinstance(item, Predictions):
        preds, name = _resolved(item, taxonomy), what
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


def _resolved(preds: Predictions, taxonomy: Taxonomy) -> Predictions:
    """In-memory predictions with columns and labels as taxonomy ids (aliases resolved)."""
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
    return Predictions(preds.probs, columns, preds.ids, labels, preds.groups)


# --- label bookkeeping ---------------------------------------------------------------------------------


def task_labels(taxonomy: Taxonomy, split: Split, task: TaskSpec) -> np.ndarray:
    """Per sample: 1 positive, 0 negative, -1 not in the task (label elsewhere or above both sides)."""
    idx = taxonomy.index
    rows = idx.rows(split.label_names)
    positive = idx.under_any(rows, idx.rows(task.positive))
    negative = idx.under_any(rows, idx.rows(task.negative))
    return split.per_label_table(np.where(positive, 1, np.where(negative, 0, -1)))


def cut_labels(taxonomy: Taxonomy, split: Split, cut: Sequence[str]) -> np.ndarray:
    """Per sample: index of the cut class containing its label, -1 when the label lies above the cut."""
    table = ClassMap.of(taxonomy, cut).class_index(split.label_names, above="ignore")
    return split.per_label_table(table)


def covered(taxonomy: Taxonomy, nodes: Sequence[str], columns: Sequence[str]) -> list[str]:
    """The nodes that lie strictly below the prediction columns (their probability is unknown)."""
    start, _ = taxonomy.column_ranges(columns)
    pos = taxonomy.index.position
    return [n for n in nodes if start[pos[n]] < 0]
