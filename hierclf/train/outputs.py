"""What a run returns and writes at its end: :class:`FitResult`, the prediction files, ``history.json`` and
``DONE``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.io.atomic import atomic_write_text
from hierclf.train.checkpoint import BEST, CHECKPOINT, DONE, HISTORY, SelectionState, load
from hierclf.train.fingerprint import file_digests
from hierclf.train.reuse import output_names
from hierclf.train.run import TrainingRun
from hierclf.train.validation import file_probs, predict

logger = logging.getLogger(__name__)

__all__ = ["FitResult", "finish", "finished_result", "partial_result", "write_predictions_of_best"]


@dataclass
class FitResult:
    """What :func:`~hierclf.train.loop.fit` did and where its outputs are.

    Attributes:
        out_dir: the run folder.
        classes: the head's classes (its logits), pre-order. These are the prediction files' columns, except
            for a partition with residual classes, whose files are over ``head.cut`` (residuals folded in
            by ``LeafHead.cut_probs``, so every column is a tree node).
        epochs_run: epochs finished (fewer than ``config.epochs`` after early stopping).
        best_epoch: the epoch (1-based) whose weights made the predictions.
        best_metric: its value of ``metric``.
        metric: the model-selection metric (``config.early_stopping.metric``).
        history: one dict per epoch, as in ``history.json``.
        predictions: ``{"val": path, "test": path}``.
        checkpoint: path of ``checkpoint.pt``.
        resumed_from: epochs already done in a checkpoint this call continued from (0 for a fresh run).
        already_done: True when the run had finished before and nothing was trained.
        stopped_early: True when early stopping ended training.
        finished: False when ``stop_after_epochs`` ended this call before the last epoch (no predictions).
        schedules: the learning-rate schedules followed (one more each time the run was extended).
        preprocessing: the input side, mean and std every split was fed with, and where they came from.
    """

    out_dir: Path
    classes: tuple[str, ...]
    epochs_run: int
    best_epoch: int
    best_metric: float
    metric: str
    history: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, Path] = field(default_factory=dict)
    checkpoint: Path | None = None
    resumed_from: int = 0
    already_done: bool = False
    stopped_early: bool = False
    finished: bool = True
    schedules: list[dict[str, Any]] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The summary written to ``DONE`` (and printed by ``hierclf train --json``)."""
        return {
            "out_dir": str(self.out_dir),
            "classes": list(self.classes),
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "metric": self.metric,
            "predictions": {k: str(v) for k, v in self.predictions.items()},
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "stopped_early": self.stopped_early,
            "schedules": self.schedules,
            "preprocessing": self.preprocessing,
        }


def finished_result(out: Path, summary: dict[str, Any]) -> FitResult:
    """The result of a run that finished earlier, from its ``DONE`` summary (checked by
    :func:`hierclf.train.reuse.reusable_summary`) and ``history.json``."""
    history = json.loads((out / HISTORY).read_text(encoding="utf-8"))
    return FitResult(
        out_dir=out,
        classes=tuple(summary["classes"]),
        epochs_run=summary["epochs_run"],
        best_epoch=summary["best_epoch"],
        best_metric=summary["best_metric"],
        metric=summary["metric"],
        history=history,
        predictions={k: Path(v) for k, v in summary["predictions"].items()},
        checkpoint=out / CHECKPOINT,
        already_done=True,
        stopped_early=summary.get("stopped_early", False),
        schedules=summary.get("schedules", []),
        preprocessing=summary.get("preprocessing", {}),
    )


def partial_result(run: TrainingRun, state: SelectionState, resumed_from: int) -> FitResult:
    """The result of a call that ``stop_after_epochs`` ended before the last epoch (no predictions)."""
    return FitResult(
        out_dir=run.out,
        classes=run.classes,
        epochs_run=len(state.history),
        best_epoch=state.best_epoch,
        best_metric=state.best_metric,
        metric=run.metric,
        history=state.history,
        checkpoint=run.out / CHECKPOINT,
        resumed_from=resumed_from,
        finished=False,
    )


def write_predictions_of_best(run: TrainingRun, state: SelectionState) -> tuple[dict[str, Path], int]:
    """Load ``best.pt`` and write ``predictions/val.npz`` and ``predictions/test.npz`` (rank 0; every rank
    predicts its shard). Returns the paths and the epoch whose weights made them: the best epoch, or the
    last one when no epoch had a finite metric (then there is no ``best.pt``)."""
    from hierclf.evaluation.prediction_files import Predictions, write_predictions

    best_epoch = state.best_epoch
    if (run.out / BEST).is_file():
        run.model.load_state_dict(load(run.out / BEST)["model"])
    else:  # no finite metric in any epoch: keep the last weights
        logger.warning("no epoch had a finite %s; predictions come from the last epoch", run.metric)
        best_epoch = len(state.history)
    paths = {}
    for split in ("val", "test"):
        probs, columns = file_probs(run.head, predict(run, split))
        src = run.sources[split]
        path = run.out / "predictions" / f"{split}.npz"
        if run.group.main:
            sample_groups = None if src.groups is None else np.asarray(src.groups)
            write_predictions(
                path,
                Predictions(
                    probs,
                    columns,
                    ids=np.asarray(src.ids),
                    labels=np.asarray(src.labels),
                    groups=sample_groups,
                    info=prediction_file_info(run, split),
                ),
            )
        paths[split] = path
    return paths, best_epoch


def prediction_file_info(run: TrainingRun, split: str) -> dict[str, str]:
    """What a prediction file of training keeps about its data (``Predictions.info``): the split level and
    source (:func:`hierclf.data.datasets.prediction_info`), ``synthetic`` for generated data (every later
    evaluation banners its report), and ``training`` (the training images' ids, groups, labels; JSON) so
    that an evaluation checks train / validation / test overlap wherever the file goes."""
    from hierclf.data.datasets import prediction_info

    info = prediction_info(run.sources[split])
    if run.config.data.source == "synthetic":
        info["synthetic"] = "true"
    train = run.sources["train"]
    groups = None if train.groups is None else [str(g) for g in np.asarray(train.groups)]
    labels = [str(v) for v in np.asarray(train.labels)]
    info["training"] = json.dumps(
        {"ids": [str(i) for i in np.asarray(train.ids)], "groups": groups, "labels": labels}
    )
    info["split"] = split
    return info


def finish(result: FitResult, run: TrainingRun) -> None:
    """Write ``history.json`` and, last, ``DONE`` (rank 0); every rank waits for them.

    ``DONE`` records the settings, the data fingerprint, the model's tree fingerprint and classes, and the
    digest of every output, so that a later call reuses the run only when nothing changed
    (:mod:`hierclf.train.reuse`; the tree by :func:`hierclf.train.loop.fit`).
    """
    if run.group.main:
        atomic_write_text(run.out / HISTORY, json.dumps(result.history, indent=2) + "\n")
        summary = {
            **result.to_dict(),
            "settings": run.config.model_dump(mode="json"),
            "data": run.data_fingerprint,
            "model": {
                "fingerprint": run.identity.fingerprint,
                "classes": list(run.identity.classes),
                "nodes": list(run.identity.nodes),
                "parents": list(run.identity.parents),
                "version": run.identity.version,
            },
            "files": file_digests(run.out, output_names(result.predictions.values(), run.out)),
        }
        atomic_write_text(run.out / DONE, json.dumps(summary, indent=2) + "\n")
    run.group.barrier()
