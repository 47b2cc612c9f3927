"""Reader studies: reader operating points (a CSV ``reader,sensitivity,specificity[,task]``) and whether the
model's ROC curve dominates each of them, as Esteva et al. drew dermatologists on the model's curve."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import FileFormatError, UnknownNameError
from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import READERS_PROVENANCE
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.records import ReaderPoint, TaskResult, estimate_over_seeds
from hierclf.io.csv_files import read_csv_table

__all__ = ["attach_readers", "load_readers", "read_readers", "reader_dominance"]


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
        M.roc_polyline_height(fpr, tpr, x)
        >= np.asarray(sensitivity, dtype=np.float64) - 1e-12
    )


def load_readers(readers: str | Path | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Reader rows from a CSV file (:func:`read_readers`) or given as mappings."""
    return read_readers(readers) if isinstance(readers, (str, Path)) else [dict(r) for r in readers]


def attach_readers(proto: Protocol, tasks: dict[str, TaskResult], rows: list[dict[str, Any]]) -> None:
    """Put each reader on its task (readers without a task: the primary metric's task, else the first) and
    record, per seed, whether the task's test ROC curve dominates them."""
    default = proto.primary_metric.task or proto.tasks[0].name
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        name = r.get("task") or default
        if name not in tasks:
            raise UnknownNameError("task", name, list(tasks), "in the reader file")
        by_task.setdefault(name, []).append(r)
    for name, rs in by_task.items():
        _place(proto, tasks[name], rs)


def _place(proto: Protocol, res: TaskResult, rows: list[dict[str, Any]]) -> None:
    sens = np.array([float(r["sensitivity"]) for r in rows])
    spec = np.array([float(r["specificity"]) for r in rows])
    dom = np.stack([reader_dominance(roc["fpr"], roc["tpr"], sens, spec) for roc in res.roc])  # (seeds, r)
    res.readers = [
        ReaderPoint(str(r["reader"]), float(s), float(p), dom[:, i].tolist())
        for i, (r, s, p) in enumerate(zip(rows, sens, spec))
    ]
    res.reader_fraction_dominated = estimate_over_seeds(
        dom.mean(axis=1), level=proto.bootstrap.ci_level, n=[len(rows)], provenance=READERS_PROVENANCE
    )
