"""The prediction sets of an evaluation, read and checked: one :class:`Split` per seed and split, joined with
the metadata, each sample's bootstrap group found, and the label bookkeeping every section shares.

:func:`read_inputs` is the evaluation's first step: it refuses what cannot be evaluated (no test set, no
validation set unless thresholds on test are allowed, unpaired seeds, NaN, missing labels) and warns about
what weakens the result (thresholds on test, missing groups, validation/test leakage).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.classes.label_mapping import ClassMap
from hierclf.evaluation.catalog import ThresholdSource
from hierclf.evaluation.notices import EvaluationError, Findings
from hierclf.evaluation.prediction_files import Predictions, read_predictions
from hierclf.evaluation.protocol_format import Protocol, TaskSpec
from hierclf.evaluation.sample_metadata import Metadata, read_metadata
from hierclf.functional import rollup
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "PROBABILITY_TOLERANCE",
    "Inputs",
    "Split",
    "covered",
    "cut_labels",
    "node_probabilities",
    "read_inputs",
    "task_labels",
]

#: How far a rolled-up probability may leave [0, 1] and still be read as rounding: the prediction reader's
#: row-sum tolerance (a row of a 4-decimal CSV, or of float32 probabilities, may sum to 1.0001)
PROBABILITY_TOLERANCE = 1e-3

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
    group_source: str = ""
    blank_groups: int = 0

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

    def resampling(self, group_column: str | None, replicates: int) -> dict[str, Any]:
        """What the bootstrap resampled, seed by seed (the report's header says it)."""
        per_seed = [
            {
                "test": s.name,
                "unit": group_column if s.grouped else "rows",
                "source": s.group_source,
                "n_groups": int(len(s.group_names)),
                "blank_group_ids": s.blank_groups,
            }
            for s in self.test
        ]
        units = {row["unit"] for row in per_seed}
        return {
            "unit": units.pop() if len(units) == 1 else "mixed",
            "group_column": group_column,
            "replicates": replicates,
            "per_seed": per_seed,
        }

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
    allow_seed_mismatch: bool | None = None,
) -> Inputs:
    """Read and check every prediction set and the metadata (see the module docstring)."""
    source = _threshold_source(proto, list(val or []), list(test), allow_test_thresholds, findings)
    meta = read_metadata(metadata) if isinstance(metadata, (str, Path)) else metadata
    test_splits = _prepare(test, taxonomy, proto, meta, "test", findings)
    allow = proto.allow_seed_mismatch if allow_seed_mismatch is None else allow_seed_mismatch
    check_seeds(test_splits, allow=allow, findings=findings)
    _check_split_level(test_splits, findings)
    if source is ThresholdSource.TEST:
        _check_training_leakage([], test_splits, findings)
        return Inputs(test_splits, test_splits, source, meta)
    val_splits = _prepare(list(val or []), taxonomy, proto, meta, "validation", findings)
    _check_leakage(val_splits, test_splits, proto.group_column, findings)
    return Inputs(val_splits, test_splits, source, meta)


def check_seeds(splits: list[Split], *, allow: bool, findings: Findings) -> None:
    """Seeds of one model are tested on the same samples, and no two repeat the same predictions.

    A seed tested on other samples is another experiment (its number is not a training seed's); the same
    file twice shrinks the standard deviation over seeds. Both are refused unless ``allow``: then the
    report opens with a warning and its per-seed table shows each seed's test set.
    """
    problems = []
    for k in range(1, len(splits)):
        difference = difference_of_test_sets(splits[0], splits[k])
        if difference:
            problems.append(f"DIFFERENT TEST SETS: {difference}")
        for j in range(k):
            if _same_predictions(splits[j], splits[k]):
                problems.append(
                    f"DUPLICATE PREDICTIONS: seed {j} ({splits[j].name}) and seed {k} ({splits[k].name}) "
                    "hold identical test predictions (the same file passed twice?)"
                )
    if problems and not allow:
        raise EvaluationError(
            f"{problems[0]}; every seed must be one training run tested on the same samples "
            "(pass --allow-seed-mismatch / allow_seed_mismatch: true to report them anyway)"
        )
    for problem in problems:
        findings.warn(
            problem + "; the seed mean and std are not those of training seeds (see the per-seed table)."
        )


def difference_of_test_sets(first: Split, other: Split) -> str:
    """How ``other``'s test samples differ from ``first``'s, in words (``""`` when they are the same):
    missing and extra sample ids with a few examples, or true labels that differ for the same id."""
    a, b = first.preds, other.preds
    if a.ids is None or b.ids is None:
        same = len(a) == len(b) and np.array_equal(np.asarray(a.labels), np.asarray(b.labels))
        return "" if same else f"{other.name} and {first.name} differ in their samples (and carry no ids)"
    missing = np.setdiff1d(a.ids, b.ids)
    extra = np.setdiff1d(b.ids, a.ids)
    if len(missing) or len(extra):
        parts = []
        if len(missing):
            parts.append(
                f"lacks {len(missing)} of the {len(a)} sample ids of {first.name}, e.g. {_examples(missing)}"
            )
        if len(extra):
            parts.append(f"has {len(extra)} other(s), e.g. {_examples(extra)}")
        return f"{other.name} " + " and ".join(parts)
    order_a, order_b = np.argsort(a.ids), np.argsort(b.ids)
    differ = np.asarray(a.labels)[order_a] != np.asarray(b.labels)[order_b]
    if differ.any():
        ids = a.ids[order_a][differ]
        return (
            f"{other.name} gives other true labels than {first.name} for {len(ids)} sample id(s), "
            f"e.g. {_examples(ids)}"
        )
    return ""


def _examples(ids: np.ndarray, k: int = 3) -> str:
    return ", ".join(repr(str(i)) for i in ids[:k])


def _same_predictions(a: Split, b: Split) -> bool:
    pa, pb = a.preds, b.preds
    if pa.probs.shape != pb.probs.shape or pa.columns != pb.columns:
        return False
    if (pa.ids is None) != (pb.ids is None):
        return False
    if pa.ids is not None and pb.ids is not None and not np.array_equal(pa.ids, pb.ids):
        return False
    return bool(np.array_equal(pa.probs, pb.probs))


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
        groups, source = _groups(proto.group_column, preds, metadata, rows)
        grouped = groups is not None
        blank = 0
        if groups is None:
            groups, source = np.arange(len(preds)).astype(str), "rows"
        else:
            groups, blank = _own_groups_for_blanks(np.asarray(groups).astype(str), f"{split}{k}")
        out.append(Split(name, preds, groups, rows, grouped=grouped, group_source=source, blank_groups=blank))
    _warn_about_blank_groups(out, proto.group_column, split, findings)
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
) -> tuple[np.ndarray | None, str]:
    """Each sample's group from the metadata or the predictions, and where it came from; ``None`` when
    neither has them (or the protocol resamples rows)."""
    if group_column is None:
        return None, "rows"
    if metadata is not None and group_column in metadata.columns:
        return metadata.columns[group_column][rows], f"metadata {metadata.file}, column {group_column!r}"
    if preds.groups is not None:
        return preds.groups, "the prediction file's 'group' field"
    return None, "rows"


#: Group ids that mean "no group": empty cells (the metadata reader writes them as "(missing)") and the
#: words pandas and R write for a missing value.
BLANK_GROUP_IDS = ("", "(missing)", "nan", "none", "null", "na", "n/a", "<na>")


def _own_groups_for_blanks(groups: np.ndarray, tag: str) -> tuple[np.ndarray, int]:
    """Samples with a blank group id each get a group of their own (never one shared "blank" group, which
    would pool every such image into one patient and collapse the intervals); the number of such samples.

    The new ids start with a NUL character, so they cannot equal a real id, and carry the split's ``tag``,
    so a blank validation sample never "shares" a group with a blank test sample.
    """
    blank = np.isin(np.char.lower(np.char.strip(groups)), BLANK_GROUP_IDS)
    n_blank = int(blank.sum())
    if not n_blank:
        return groups, 0
    out = groups.astype(object)
    out[blank] = np.char.add(f"\x00blank:{tag}:", np.flatnonzero(blank).astype(str))
    return out.astype(str), n_blank


def _warn_about_blank_groups(
    splits: list[Split], group_column: str | None, role: str, found: Findings
) -> None:
    for s in splits:
        if s.blank_groups:
            found.warn(
                f"BLANK {str(group_column).upper()} IDS: {s.blank_groups} of {len(s.preds)} {role} samples "
                f"of {s.name} have no {group_column} ({s.group_source}); each is resampled as its own "
                "group, so the intervals are too narrow if they share patients."
            )


def _training_of(split: Split) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The training images' ids and groups that a prediction file of ``hierclf train`` records
    (``info["training"]``), or None."""
    text = split.preds.info.get("training")
    if not text:
        return None
    try:
        data = json.loads(text)
        ids = np.asarray([str(i) for i in data["ids"]])
        groups = data.get("groups")
    except (ValueError, KeyError, TypeError):
        return None
    return ids, (None if groups is None else np.asarray([str(g) for g in groups]))


def _shared_with_training(split: Split, training: tuple[np.ndarray, np.ndarray | None]) -> list[str]:
    """What a split shares with the training images: sample ids, and groups when both have them."""
    ids, groups = training
    shared = []
    if split.preds.ids is not None:
        common = np.intersect1d(ids, np.asarray(split.preds.ids).astype(str))
        if len(common):
            shared.append(f"{len(common)} sample id(s), e.g. {str(common[0])!r}")
    if groups is not None and split.preds.groups is not None:
        own = np.asarray(split.preds.groups).astype(str)
        common = np.intersect1d(groups[groups != ""], own[own != ""])
        if len(common):
            shared.append(f"{len(common)} group(s), e.g. {str(common[0])!r}")
    return shared


def _check_split_level(test: list[Split], findings: Findings) -> None:
    """Say plainly when the files record a split by image (DermaMNIST's official split has no lesion ids):
    images of one lesion may then sit in training and test, which no id check can see (docs/data.md)."""
    by_image = [s for s in test if s.preds.info.get("split_level") == "image"]
    if by_image:
        notice = by_image[0].preds.info.get("notice") or "no lesion or patient ids"  # the file's own words
        names = ", ".join(s.name for s in by_image)
        findings.warn(f"SPLIT BY IMAGE: {names}: {notice} (docs/data.md)")


def _check_training_leakage(val: list[Split], test: list[Split], findings: Findings) -> None:
    """Warn when the training images (recorded in the prediction files by ``hierclf train``) overlap the
    validation or test samples of the same seed, by id or by group."""
    for k, t in enumerate(test):
        splits = [("test", t)] + ([("validation", val[k])] if k < len(val) and val[k] is not t else [])
        for role, split in splits:
            training = _training_of(split)
            shared = _shared_with_training(split, training) if training is not None else []
            if shared:
                findings.warn(
                    f"LEAKAGE: training and {role} of seed {k} share {' and '.join(shared)} "
                    f"({split.name}); the model has seen {role} patients, so its results are optimistic.",
                    alert="LEAKAGE",
                )


def _check_leakage(val: list[Split], test: list[Split], group_column: str | None, findings: Findings) -> None:
    """Warn when a validation and a test set of the same seed share sample ids or patients/lesions: the
    threshold would then be chosen partly on test data (seed 001: split by patient, never by image); and
    when the training images recorded in the files overlap either."""
    _check_training_leakage(val, test, findings)
    for k, (v, t) in enumerate(zip(val, test)):
        shared = []
        if v.preds.ids is not None and t.preds.ids is not None:
            ids = np.intersect1d(v.preds.ids, t.preds.ids)
            if len(ids):
                shared.append(f"{len(ids)} sample id(s), e.g. {str(ids[0])!r}")
        if v.grouped and t.grouped:
            groups = np.intersect1d(v.group_names, t.group_names)
            groups = groups[~np.char.startswith(groups.astype(str), "\x00blank:")]
            if len(groups):
                shared.append(f"{len(groups)} {group_column} group(s), e.g. {str(groups[0])!r}")
        if shared:
            findings.warn(
                f"LEAKAGE: validation and test of seed {k} share {' and '.join(shared)}; the "
                "threshold chosen on validation has seen test patients, so test results are optimistic.",
                alert="LEAKAGE",
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
    return Predictions(
        preds.probs,
        columns,
        preds.ids,
        labels,
        preds.groups,
        preds.split,
        preds.seed,
        metadata=dict(preds.metadata),
        info=dict(preds.info),  # in memory as from a file: the training ids, the synthetic flag, the source
    )


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


def node_probabilities(
    taxonomy: Taxonomy, split: Split, nodes: Sequence[str], rows: np.ndarray | None = None
) -> np.ndarray:
    """``(m, len(nodes))`` rolled-up probabilities of ``nodes`` for the samples ``rows`` (all by default),
    clipped to [0, 1].

    A row that sums to 1 within the readers' tolerance can roll up to ``P(malignant) = 1.0001``; values
    within :data:`PROBABILITY_TOLERANCE` of [0, 1] are rounding and are clipped. A value further out is an
    error naming the file, the row (and its id) and the node.
    """
    probs = np.asarray(split.preds.probs if rows is None else split.preds.probs[rows], dtype=np.float64)
    p = np.asarray(rollup(probs, taxonomy, list(nodes), columns=list(split.preds.columns)), dtype=np.float64)
    bad = (p < -PROBABILITY_TOLERANCE) | (p > 1.0 + PROBABILITY_TOLERANCE)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        row = int(rows[r]) if rows is not None else r
        ids = split.preds.ids
        ident = f" (id {str(ids[row])!r})" if ids is not None else ""
        raise EvaluationError(
            f"{split.name}: row {row}{ident}: P({nodes[c]}) = {p[r, c]:.6g} is outside [0, 1] by more than "
            f"{PROBABILITY_TOLERANCE:g} (the row's probabilities sum to {float(probs[r].sum()):.6g}); "
            f"{int(bad.any(axis=1).sum())} such row(s)"
        )
    return np.clip(p, 0.0, 1.0)
