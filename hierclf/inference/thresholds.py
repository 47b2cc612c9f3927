"""Operating points a model carries: per task, its positive and negative nodes and the validation threshold.

A task's decision is ``score >= threshold`` with the evaluation's score, the conditional roll-up
``P(positive) / (P(positive) + P(negative))`` (:func:`hierclf.functional.conditional`), and the threshold the
evaluation chose on validation at the protocol's target sensitivity. Thresholds reach a model in two ways:

* stored in its checkpoint (``"thresholds"``; :func:`hierclf.train.checkpoint.record_thresholds` writes
  them, e.g. from a study's report with :func:`thresholds_from_report`), used by ``--thresholds``;
* read from an evaluation's ``report.json`` at prediction time, ``--thresholds-from report.json``
  (``--seed`` picks the seed's thresholds when the report has several).

A threshold chosen on test (a protocol that allowed it) is refused unless asked for: a decision rule must
not be tuned on the data it is judged on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hierclf.errors import HierclfError, UnknownNameError
from hierclf.io.text_files import read_text_file
from hierclf.taxonomy.tree import Taxonomy

__all__ = [
    "TaskThreshold",
    "ThresholdError",
    "select_thresholds",
    "stored_thresholds",
    "thresholds_from_report",
]


class ThresholdError(HierclfError, ValueError):
    """Thresholds that cannot be used: none stored, an unreadable report, an unknown task or seed."""


@dataclass(frozen=True)
class TaskThreshold:
    """One task's operating point.

    Attributes:
        task: the task's name.
        positive, negative: node ids of its two sides.
        threshold: a case is flagged when its score is at or above it.
        target_sensitivity: the sensitivity the threshold was chosen to reach (NaN when unknown).
        chosen_on: where it was chosen (``"validation"``).
    """

    task: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    threshold: float
    target_sensitivity: float = math.nan
    chosen_on: str = "validation"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["positive"], out["negative"] = list(self.positive), list(self.negative)
        return out

    @classmethod
    def from_dict(cls, task: str, data: Mapping[str, Any]) -> TaskThreshold:
        return cls(
            task=str(task),
            positive=tuple(str(n) for n in data["positive"]),
            negative=tuple(str(n) for n in data["negative"]),
            threshold=float(data["threshold"]),
            target_sensitivity=float(data.get("target_sensitivity", math.nan)),
            chosen_on=str(data.get("chosen_on", "validation")),
        )

    def resolved(self, taxonomy: Taxonomy) -> TaskThreshold:
        """The same operating point with its nodes resolved in ``taxonomy`` (aliases to ids)."""
        return TaskThreshold(
            self.task,
            tuple(taxonomy.resolve(n) for n in self.positive),
            tuple(taxonomy.resolve(n) for n in self.negative),
            self.threshold,
            self.target_sensitivity,
            self.chosen_on,
        )


def stored_thresholds(
    data: Mapping[str, TaskThreshold | Mapping[str, Any]] | None, source: str | Path
) -> dict[str, TaskThreshold]:
    """The thresholds stored with a model (a checkpoint's ``"thresholds"`` entry, read or not yet), by task.

    Raises:
        ThresholdError: there are none.
    """
    if not data:
        raise ThresholdError(
            f"{source} stores no thresholds; record them from an evaluation (hierclf.train.checkpoint."
            "record_thresholds), or give --thresholds-from report.json"
        )
    return {
        str(k): v if isinstance(v, TaskThreshold) else TaskThreshold.from_dict(k, v) for k, v in data.items()
    }


def _seed_index(seeds: Sequence[str], seed: int | None, source: str) -> int:
    """The position of ``seed`` among a report's seeds (by ``seed<k>`` / ``seed_<k>`` in their names, else
    by position); the only one when the report has one seed."""
    if seed is None:
        if len(seeds) == 1:
            return 0
        raise ThresholdError(
            f"{source} has {len(seeds)} seeds; give --seed to choose whose thresholds to use "
            f"(0 .. {len(seeds) - 1})"
        )
    pattern = re.compile(rf"seed_?{int(seed)}(?!\d)")
    named = [k for k, name in enumerate(seeds) if pattern.search(str(name))]
    if len(named) == 1:
        return named[0]
    if 0 <= seed < len(seeds):
        return int(seed)
    raise ThresholdError(f"{source} has no seed {seed} (its seeds: {', '.join(map(str, seeds))})")


def thresholds_from_report(
    report: str | Path | Mapping[str, Any], *, seed: int | None = None, allow_test: bool = False
) -> dict[str, TaskThreshold]:
    """The validation thresholds of every task of an evaluation report (``report.json`` or its data).

    Args:
        report: the report file, or the report's JSON data (``EvaluationReport.to_dict()``).
        seed: whose thresholds, when the report has several seeds (matched by ``seed<k>`` in the seed names,
            else taken as a position).
        allow_test: accept thresholds the evaluation chose on test (refused by default).

    Raises:
        ThresholdError: the file cannot be read as a report, thresholds chosen on test, an unknown seed.
    """
    source = str(report) if not isinstance(report, Mapping) else "the report"
    data = _read_report(report) if not isinstance(report, Mapping) else report
    tasks, seeds = data.get("tasks"), data.get("seeds") or []
    if not isinstance(tasks, Mapping) or not tasks:
        raise ThresholdError(
            f"{source} is not an evaluation report with tasks (report.json of hierclf evaluate)"
        )
    chosen_on = str(data.get("threshold_source", "validation"))
    if chosen_on != "validation" and not allow_test:
        raise ThresholdError(
            f"{source}: its thresholds were chosen on {chosen_on}, not validation; a decision rule tuned on "
            "the data it is judged on is optimistic (evaluate with a validation split)"
        )
    k = _seed_index([str(s) for s in seeds] or ["seed0"], seed, source)
    target = float(data.get("protocol", {}).get("target_sensitivity", math.nan) or math.nan)
    out = {}
    for name, task in tasks.items():
        per_seed = (task.get("thresholds") or {}).get("per_seed") or []
        if k >= len(per_seed) or per_seed[k] is None:
            raise ThresholdError(f"{source}: task {name!r} has no threshold for seed {k}")
        out[str(name)] = TaskThreshold(
            str(name), tuple(task["positive"]), tuple(task["negative"]), float(per_seed[k]), target, chosen_on
        )
    return out


def _read_report(path: str | Path) -> Mapping[str, Any]:
    text = read_text_file(path, what="evaluation report")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ThresholdError(
            f"{path} is not a JSON evaluation report (line {exc.lineno}: {exc.msg})"
        ) from None
    if not isinstance(data, Mapping):
        raise ThresholdError(f"{path} is not a JSON evaluation report (expected an object at the top)")
    return data


def select_thresholds(
    thresholds: Mapping[str, TaskThreshold], tasks: Iterable[str] | None, source: str | Path
) -> list[TaskThreshold]:
    """The operating points of ``tasks`` (all, in stored order, when None); an unknown task name is an error
    with "did you mean"."""
    if tasks is None:
        return list(thresholds.values())
    chosen = []
    for name in tasks:
        if name not in thresholds:
            raise UnknownNameError("task", name, list(thresholds), f"in {source}")
        chosen.append(thresholds[name])
    return chosen
