"""Reader studies: reader operating points (a CSV ``reader,sensitivity,specificity[,task]``), whether the
model's ROC curve dominates each of them (as Esteva et al. drew dermatologists on the model's curve), the
mean reader, and the model's specificity at each reader's sensitivity and sensitivity at each reader's
specificity on test, with grouped-bootstrap intervals and p-values against the reader's own value (the
comparison of Haenssle et al. 2018 and Tschandl et al. 2019). Every interval comes from the task's test
replicates (:mod:`hierclf.evaluation.tasks`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import FileFormatError, UnknownNameError
from hierclf.evaluation import metrics as M
from hierclf.evaluation.catalog import READER_COMPARISON_PROVENANCE, READERS_PROVENANCE
from hierclf.evaluation.protocol_format import Protocol
from hierclf.evaluation.records import Estimate, IntervalPolicy, ReaderPoint, TaskResult, estimate_over_seeds
from hierclf.io.csv_files import read_csv_table

__all__ = [
    "assign_readers",
    "load_readers",
    "place_readers",
    "read_readers",
    "reader_dominance",
    "reader_points",
]


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
    return M.roc_polyline_height(fpr, tpr, x) >= np.asarray(sensitivity, dtype=np.float64) - 1e-12


def load_readers(readers: str | Path | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Reader rows from a CSV file (:func:`read_readers`) or given as mappings."""
    return read_readers(readers) if isinstance(readers, (str, Path)) else [dict(r) for r in readers]


def assign_readers(proto: Protocol, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each reader's task (readers without a task: the primary metric's task, else the first); an unknown
    task is an error with "did you mean"."""
    default = proto.primary_metric.task or proto.tasks[0].name
    names = [t.name for t in proto.tasks]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        name = r.get("task") or default
        if name not in names:
            raise UnknownNameError("task", name, names, "in the reader file")
        by_task.setdefault(name, []).append(r)
    return by_task


def reader_points(by_task: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[float, float]]]:
    """Per task, the ``(sensitivity, specificity)`` of each reader and, last, of the mean reader (the mean
    of the readers' sensitivities and of their specificities)."""
    out = {}
    for name, rows in by_task.items():
        points = [(float(r["sensitivity"]), float(r["specificity"])) for r in rows]
        mean = (float(np.mean([p[0] for p in points])), float(np.mean([p[1] for p in points])))
        out[name] = points + [mean]
    return out


def place_readers(proto: Protocol, res: TaskResult, rows: list[dict[str, Any]], seeds: Sequence[Any]) -> None:
    """Put a task's readers and its mean reader on the task's result: per seed whether the test ROC curve
    dominates each, the fraction dominated with its interval, and the model's specificity at each reader's
    sensitivity and sensitivity at each reader's specificity with intervals and p-values against the
    reader's own value.

    Args:
        seeds: each seed's :class:`~hierclf.evaluation.tasks.ReaderSeed` (the readers' points in order, the
            mean reader last), from the task's test replicates.
    """
    points = reader_points({res.name: rows})[res.name]
    sens = np.array([p[0] for p in points])
    spec = np.array([p[1] for p in points])
    dom = np.stack([reader_dominance(roc["fpr"], roc["tpr"], sens, spec) for roc in res.roc])  # (seeds, r+1)
    names = [str(r["reader"]) for r in rows] + ["mean reader"]
    placed = [
        _reader_point(proto, res, names[i], sens[i], spec[i], dom[:, i], [s_.specificity[i] for s_ in seeds],
                      [s_.sensitivity[i] for s_ in seeds])
        for i in range(len(points))
    ]  # fmt: skip
    placed[-1].mean_reader = True
    res.readers, res.mean_reader = placed[:-1], placed[-1]
    res.reader_fraction_dominated = _fraction_dominated(proto, sens[:-1], dom[:, :-1], seeds)


def _reader_point(
    proto: Protocol,
    res: TaskResult,
    name: str,
    sens: float,
    spec: float,
    dominated: np.ndarray,
    model_spec: list[M.BootstrapEstimate],
    model_sens: list[M.BootstrapEstimate],
) -> ReaderPoint:
    """One reader point with the model's numbers there (one bootstrap estimate per seed of each)."""
    level, policy = proto.bootstrap.ci_level, IntervalPolicy.of(proto)
    c = res.counts

    def estimate(per_seed: list[M.BootstrapEstimate], events: list[int], what: str) -> Estimate:
        return estimate_over_seeds(
            [e.point for e in per_seed],
            [e.replicates for e in per_seed],
            level=level,
            n=[p + n for p, n in zip(c["test_positive"], c["test_negative"])],
            n_groups=c["test_groups"],
            provenance=READER_COMPARISON_PROVENANCE.format(what=what, reader=name),
            events=events,
            policy=policy,
        )

    model_specificity = estimate(model_spec, c["test_negative"], f"specificity at sensitivity {sens:.3f}")
    model_sensitivity = estimate(model_sens, c["test_positive"], f"sensitivity at specificity {spec:.3f}")
    return ReaderPoint(
        name,
        float(sens),
        float(spec),
        dominated.tolist(),
        model_specificity,
        model_sensitivity,
        M.bootstrap_p_value(np.concatenate([e.replicates for e in model_spec]), spec),
        M.bootstrap_p_value(np.concatenate([e.replicates for e in model_sens]), sens),
    )


def _fraction_dominated(
    proto: Protocol, sens: np.ndarray, dominated: np.ndarray, seeds: Sequence[Any]
) -> Estimate:
    """The fraction of readers on or below the ROC curve, per seed, with replicates: in replicate ``r`` a
    reader is dominated when that replicate's ROC polyline reaches the reader's sensitivity."""
    replicates = []
    for seed in seeds:  # a loop over seeds; each (R, readers) at once
        heights = np.stack([e.replicates for e in seed.height[: len(sens)]], axis=1)
        missing = np.isnan(heights).any(axis=1)
        frac = (heights >= sens[None, :] - 1e-12).mean(axis=1)
        replicates.append(np.where(missing, np.nan, frac))
    return estimate_over_seeds(
        dominated.mean(axis=1),
        replicates,
        level=proto.bootstrap.ci_level,
        n=[len(sens)],
        provenance=READERS_PROVENANCE,
        policy=IntervalPolicy.of(proto),
    )
