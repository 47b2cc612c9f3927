"""Case-level reader studies: each reader's reads of the test cases against the model, paired, and the long
table multi-reader multi-case (MRMC) software reads.

A reads file is a CSV with ``reader``, ``case_id`` (a test sample id) and a ``decision`` (1 = the reader
calls the case positive) and/or a ``score`` (a rating, higher = more positive), optionally ``task``
(readers' reads without a task belong to the primary metric's task). Per task and reader, on the cases the
reader read:

* the reader's **sensitivity and specificity** (from the decisions), with intervals (binomial ones where the
  reads are few);
* the model at the **matched operating point**: its specificity at the reader's sensitivity and its
  sensitivity at the reader's specificity (the threshold chosen on these cases), with the paired difference
  (model minus reader): in each bootstrap replicate the cases' groups are drawn once, the reader's rates are
  re-computed and the model's threshold re-chosen at them
  (:func:`~hierclf.evaluation.metrics.bootstrap_reader_comparison`), so the interval carries both; and
  McNemar's exact test on the negatives (resp. positives) at that threshold;
* the model at its own **validation-chosen threshold**: McNemar's exact test of paired sensitivity and of
  paired specificity against the reader;
* with scores, the **AUC** of the reader against the model's: the paired bootstrap difference and DeLong's
  test (clustered when the cases come in groups).

The reads and the model's scores on the same cases are also written as one long table (``mrmc_long.csv``:
``task, reader, case, test, truth, rating``), the input of the R packages MRMCaov and iMRMC, so that a
multi-reader multi-case analysis (readers as a random effect) is one command away (``docs/evaluation.md``).
hierclf does not fit an MRMC model itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import FileFormatError, UnknownNameError
from hierclf.evaluation import metrics as M
from hierclf.evaluation.notices import EvaluationError
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.records import IntervalPolicy, TaskResult, estimate_over_seeds
from hierclf.evaluation.splits import Split
from hierclf.evaluation.tasks import task_data
from hierclf.io.csv_files import read_csv_table
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "MRMC_COLUMNS",
    "ReaderReads",
    "compare_readers",
    "is_reads_file",
    "mrmc_table",
    "read_reader_reads",
    "reader_points_from_reads",
]

#: The long table's columns: MRMCaov's names (``mrmc(empirical_auc(truth, rating), test, reader, case)``)
MRMC_COLUMNS = ("task", "reader", "case", "test", "truth", "rating")
CASE_COLUMNS = ("case_id", "case")


@dataclass(frozen=True)
class ReaderReads:
    """Case-level reads: ``(n,)`` arrays, one row per reader and case (``decision``/``score`` NaN where the
    file has no such column); ``task`` is ``""`` for the default task."""

    file: str
    reader: np.ndarray
    case: np.ndarray
    task: np.ndarray
    decision: np.ndarray
    score: np.ndarray

    @property
    def has_decisions(self) -> bool:
        return bool(np.isfinite(self.decision).any())

    @property
    def has_scores(self) -> bool:
        return bool(np.isfinite(self.score).any())


def is_reads_file(path: str | Path) -> bool:
    """Whether a reader CSV holds case-level reads (a ``case_id`` column) rather than operating points."""
    table = read_csv_table(path, what="reader file", required=("reader",))
    return table.find(*CASE_COLUMNS) is not None


def _numbers(table: Any, name: str, check: Any, expected: str) -> np.ndarray:
    """A numeric column (NaN when absent); a cell that fails ``check`` is a positioned error."""
    col = table.find(name)
    if col is None:
        return np.full(len(table), np.nan)
    cells = table.cells[:, col]
    distinct, inverse = np.unique(cells, return_inverse=True)  # parse each distinct text once
    values = np.array([_float(c) for c in distinct.tolist()], dtype=np.float64)[inverse.reshape(-1)]
    bad = np.flatnonzero(~check(values))
    if bad.size:
        r = int(bad[0])
        problem = table.problem(r, f"{name} {str(cells[r])!r} is not {expected}", column=col)
        raise FileFormatError([problem], what="reader file")
    return values


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_reader_reads(path: str | Path) -> ReaderReads:
    """Read case-level reads (see the module docstring); every problem is a positioned
    :class:`~hierclf.errors.FileFormatError` (a decision other than 0/1, a score that is not a number, a
    reader reading a case twice for one task, neither a decision nor a score column)."""
    table = read_csv_table(path, what="reader file", required=("reader",))
    case_col = table.find(*CASE_COLUMNS)
    if case_col is None or (table.find("decision") is None and table.find("score") is None):
        problem = table.problem(0, "case-level reads need a case_id column and a decision or score column")
        raise FileFormatError([problem], what="reader file")
    decision = _numbers(table, "decision", lambda v: np.isin(v, (0.0, 1.0)), "0 or 1")
    score = _numbers(table, "score", np.isfinite, "a number")
    task_col = table.find("task")
    task = table.cells[:, task_col] if task_col is not None else np.full(len(table), "", dtype=object)
    reader, case = table.column("reader").astype(str), table.cells[:, case_col].astype(str)
    key = np.char.add(np.char.add(np.char.add(reader, "\x00"), case), np.char.add("\x00", task.astype(str)))
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        again = int(np.flatnonzero(key == uniq[k])[1])
        first_line = int(table.lines[first[k]])
        who, what = str(reader[again]), str(case[again])
        message = f"reader {who!r} reads case {what!r} twice (first at line {first_line})"
        raise FileFormatError([table.problem(again, message, column=case_col)], what="reader file")
    return ReaderReads(str(path), reader, case, task.astype(str), decision, score)


def _task_of(proto: Protocol, reads: ReaderReads) -> np.ndarray:
    default = proto.primary_metric.task or proto.tasks[0].name
    names = [t.name for t in proto.tasks]
    task = np.where(reads.task == "", default, reads.task)
    for name in np.unique(task).tolist():
        if name not in names:
            raise UnknownNameError("task", name, names, f"in the reader file {reads.file}")
    return task


@dataclass(frozen=True)
class _Cases:
    """One reader's reads of one task's test cases: rows into the task's samples, labels, reads, groups."""

    rows: np.ndarray
    y: np.ndarray
    decision: np.ndarray
    score: np.ndarray
    groups: np.ndarray


def _reader_cases(
    taxonomy: Taxonomy, proto: Protocol, reads: ReaderReads, test: Split, task_name: str
) -> dict[str, _Cases]:
    """Per reader, its reads of ``task_name``'s samples (cases not in the task are left out; cases not in
    the test set are an error naming a few)."""
    task = proto.task(task_name)
    rows, y, _ = task_data(taxonomy, task, test, "test")
    ids = test.preds.ids
    if ids is None:
        raise EvaluationError(f"{test.name} has no sample ids, so case-level reads cannot be matched to it")
    mine = _task_of(proto, reads) == task_name
    order = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids[order], reads.case), len(ids) - 1)
    found = ids[order][pos] == reads.case
    if not found[mine].all():
        missing = np.unique(reads.case[mine & ~found])
        raise EvaluationError(
            f"{len(missing)} case(s) of the reader file {reads.file} are not in the test set {test.name}, "
            f"e.g. {', '.join(repr(str(c)) for c in missing[:3])}"
        )
    sample = order[pos]  # row of each read in the test set
    in_task = np.full(len(ids), -1)
    in_task[rows] = np.arange(len(rows))
    out = {}
    for reader in np.unique(reads.reader[mine]).tolist():  # a loop over readers
        sel = mine & (reads.reader == reader) & (in_task[sample] >= 0)
        r = in_task[sample[sel]]
        out[reader] = _Cases(r, y[r], reads.decision[sel], reads.score[sel], test.groups[rows][r])
    return out


def reader_points_from_reads(
    taxonomy: Taxonomy, proto: Protocol, reads: ReaderReads, test: Split
) -> list[dict[str, Any]]:
    """Each reader's operating point per task from its decisions (``reader, task, sensitivity,
    specificity`` rows, the operating-point reader file's)."""
    if not reads.has_decisions:
        return []
    rows = []
    for task in np.unique(_task_of(proto, reads)).tolist():
        for reader, c in _reader_cases(taxonomy, proto, reads, test, task).items():
            pos, neg = c.y == 1, c.y == 0
            if not pos.any() or not neg.any() or not np.isfinite(c.decision).all():
                continue
            sens = float((c.decision[pos] == 1).mean())
            spec = float((c.decision[neg] == 0).mean())
            rows.append({"reader": reader, "task": task, "sensitivity": sens, "specificity": spec})
    return rows


def compare_readers(
    taxonomy: Taxonomy, proto: Protocol, reads: ReaderReads, tasks: dict[str, TaskResult], test: list[Split]
) -> None:
    """Each task's ``reader_study``: per reader the paired comparisons of the module docstring."""
    for name in np.unique(_task_of(proto, reads)).tolist():
        cases = _reader_cases(taxonomy, proto, reads, test[0], name)
        scores = [task_data(taxonomy, proto.task(name), s, "test")[2] for s in test]
        result = tasks[name]
        rows = [_one_reader(proto, reader, c, scores, result) for reader, c in cases.items()]
        tasks[name].reader_study = {"file": reads.file, "readers": [r for r in rows if r is not None]}


def _one_reader(
    proto: Protocol, reader: str, c: _Cases, scores: list[np.ndarray], task: TaskResult
) -> dict[str, Any] | None:
    pos, neg = c.y == 1, c.y == 0
    if not pos.any() or not neg.any():
        return None
    model = np.stack([s[c.rows] for s in scores])  # (seeds, cases)
    out: dict[str, Any] = {"reader": reader, "n_cases": int(len(c.y)), "n_positive": int(pos.sum())}
    out["n_negative"] = int(neg.sum())
    if np.isfinite(c.decision).all():
        out.update(_decision_comparison(proto, c, model, task))
    if np.isfinite(c.score).all():
        out["auc"] = _auc_comparison(proto, c, model)
    return out


def _decision_comparison(proto: Protocol, c: _Cases, model: np.ndarray, task: TaskResult) -> dict[str, Any]:
    """The reader's rates, the model at the matched operating points, McNemar at them and at the model's
    validation-chosen thresholds."""
    level, policy = proto.bootstrap.ci_level, IntervalPolicy.of(proto)
    pos, neg = c.y == 1, c.y == 0
    d = c.decision == 1
    reps = M.bootstrap_reader_comparison(
        c.y, model, d, c.groups, n_replicates=proto.bootstrap.replicates, seed=proto.bootstrap.seed
    )
    sens, spec = float(d[pos].mean()), float((~d[neg]).mean())

    def rate(value: float, replicates: np.ndarray, counts: M.EffectiveCounts, events: int) -> dict[str, Any]:
        return estimate_over_seeds(
            [value], [replicates], level=level, n=[len(c.y)], counts=[counts], events=[events], policy=policy
        ).to_dict()

    out: dict[str, Any] = {
        "sensitivity": rate(
            sens, reps["reader_sensitivity"], M.effective_counts(d[pos], c.groups[pos]), int(pos.sum())
        ),
        "specificity": rate(
            spec, reps["reader_specificity"], M.effective_counts(~d[neg], c.groups[neg]), int(neg.sum())
        ),
    }
    out["matched_specificity"] = _matched(
        "specificity", model, c, sens, spec, reps["model_specificity"], reps["reader_specificity"], level
    )
    out["matched_sensitivity"] = _matched(
        "sensitivity", model, c, spec, sens, reps["model_sensitivity"], reps["reader_sensitivity"], level
    )
    thresholds = task.thresholds.per_seed
    out["at_model_threshold"] = [
        {
            "seed": k,
            "threshold": float(thresholds[k]),
            "sensitivity": M.mcnemar_exact(c.y[pos], model[k][pos] >= thresholds[k], d[pos]).__dict__,
            "specificity": M.mcnemar_exact(c.y[neg], model[k][neg] >= thresholds[k], d[neg]).__dict__,
        }
        for k in range(len(model))
    ]
    return out


def _matched(
    what: str,
    model: np.ndarray,
    c: _Cases,
    at: float,
    reader_value: float,
    model_reps: np.ndarray,
    reader_reps: np.ndarray,
    level: float,
) -> dict[str, Any]:
    """The model's ``what`` at the reader's other rate ``at`` (threshold chosen on these cases), the paired
    difference model - reader, and McNemar on the cases that rate is about."""
    y = c.y
    if what == "specificity":
        points = [M.specificity_at_sensitivity(y, s, max(at, 1e-300)) for s in model]
        cases = y == 0
    else:
        points = [M.sensitivity_at_specificity(y, s, max(at, 1e-300)) for s in model]
        cases = y == 1
    values = [p[0] if at > 0 else 1.0 for p in points]
    model_est = estimate_over_seeds(values, list(model_reps), level=level)
    diff = estimate_over_seeds(
        [v - reader_value for v in values], list(model_reps - reader_reps), level=level
    )
    tests = [
        M.mcnemar_exact(y[cases], s[cases] >= thr, c.decision[cases] == 1).__dict__
        for s, (_, thr) in zip(model, points)
    ]
    return {
        "at_reader": at,
        "model": model_est.to_dict(),
        "difference": diff.to_dict() | {"p_value": M.bootstrap_p_value(diff.replicates, 0.0)},
        "mcnemar": tests,
    }


def _auc_comparison(proto: Protocol, c: _Cases, model: np.ndarray) -> dict[str, Any]:
    """The reader's AUC from its scores against the model's, paired: bootstrap difference and DeLong."""
    level = proto.bootstrap.ci_level
    stacked = np.vstack([model, c.score[None]])
    boots = M.paired_bootstrap_binary(
        c.y,
        stacked,
        c.groups,
        n_replicates=proto.bootstrap.replicates,
        seed=proto.bootstrap.seed,
        ci_level=level,
    )
    reader = boots[-1]["auc"]
    model_est = estimate_over_seeds(
        [b["auc"].point for b in boots[:-1]], [b["auc"].replicates for b in boots[:-1]], level=level
    )
    diff = estimate_over_seeds(
        [b["auc"].point - reader.point for b in boots[:-1]],
        [b["auc"].replicates - reader.replicates for b in boots[:-1]],
        level=level,
    )
    contrast = np.r_[np.full(len(model), 1.0 / len(model)), -1.0]
    grouped = len(np.unique(c.groups)) < len(c.groups)
    try:
        r = M.delong_test(c.y, stacked, contrast, groups=c.groups if grouped else None, level=level)
        delong: dict[str, Any] = {"p_value": r.p_value, "z": r.z, "ci": list(r.ci), "clustered": r.clustered}
    except M.MetricError as exc:
        delong = {"note": str(exc)}
    return {
        "reader": estimate_over_seeds([reader.point], [reader.replicates], level=level).to_dict(),
        "model": model_est.to_dict(),
        "difference": diff.to_dict() | {"p_value": M.bootstrap_p_value(diff.replicates, 0.0)},
        "delong": delong,
    }


def mrmc_table(
    taxonomy: Taxonomy, proto: Protocol, reads: ReaderReads, test: list[Split]
) -> dict[str, np.ndarray]:
    """The long table of MRMC software: one row per (task, reader, case) read, and one per (task, model seed,
    case) for every case some reader read; ``test`` is ``human`` or ``model``, ``truth`` 1/0, ``rating`` the
    reader's score (else its decision) or the model's score. Columns :data:`MRMC_COLUMNS`."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in MRMC_COLUMNS}
    for name in np.unique(_task_of(proto, reads)).tolist():
        cases = _reader_cases(taxonomy, proto, reads, test[0], name)
        rows, _, _ = task_data(taxonomy, proto.task(name), test[0], "test")
        assert test[0].preds.ids is not None  # checked by _reader_cases
        ids = test[0].preds.ids[rows]
        scores = [task_data(taxonomy, proto.task(name), s, "test")[2] for s in test]
        for reader, c in cases.items():  # a loop over readers
            rating = np.where(np.isfinite(c.score), c.score, c.decision)
            _extend(parts, name, reader, ids[c.rows], "human", c.y, rating)
        read = np.unique(np.concatenate([c.rows for c in cases.values()])) if cases else np.zeros(0, np.int64)
        y = task_data(taxonomy, proto.task(name), test[0], "test")[1]
        for k, s in enumerate(scores):  # a loop over seeds
            label = "model" if len(scores) == 1 else f"model_seed{k}"
            _extend(parts, name, label, ids[read], "model", y[read], s[read])
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def _extend(
    parts: dict[str, list[np.ndarray]],
    task: str,
    reader: str,
    case: np.ndarray,
    test: str,
    truth: np.ndarray,
    rating: np.ndarray,
) -> None:
    n = len(case)
    for key, value in zip(
        MRMC_COLUMNS,
        (np.full(n, task), np.full(n, reader), case, np.full(n, test), truth.astype(np.int64), rating),
    ):
        parts[key].append(np.asarray(value))
