"""A thin, resumable training loop in plain PyTorch: a backbone and a :class:`~hierclf.nn.head.LeafHead`.

``fit(config)`` trains and writes into ``config.out_dir``::

    config.resolved.yaml      every setting, defaults filled in, paths absolute
    checkpoint.pt             the state after the last finished epoch (model, optimiser, schedule, AMP scaler,
                              RNG states of every rank, early-stopping state, history); written each epoch
    best.pt                   model weights of the best epoch on the validation metric
    history.jsonl             one JSON line per finished epoch, rewritten after every epoch
    history.json              one record per epoch (losses, validation metrics, learning rate, time)
    tensorboard/              TensorBoard scalars of every epoch (``log: tensorboard``)
    predictions/val.npz       probabilities over the head's classes for validation and test, from the best
    predictions/test.npz      epoch, with true node ids, sample ids and groups
    (``hierclf.evaluation.prediction_files``)
    DONE                      written last; a finished run called again returns at once

``fit`` is a sequence of named steps (the package docstring, :mod:`hierclf.train`, says which module does
what): prepare the folder, build the run (:func:`hierclf.train.run.build_run`), resume or start
(:func:`start`), then per epoch train (:class:`hierclf.train.epoch.EpochStep`), validate
(:func:`validate`) and select / checkpoint (:func:`select_and_checkpoint`), and at the end write the
predictions of the best epoch and ``DONE``.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) each process takes an equal slice of every global
batch (``batch_size`` is the global batch), gradients are averaged by DDP (gloo on CPU, NCCL on GPU),
validation and test predictions are gathered, and rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierclf.io.atomic import atomic_write_text, output_folder
from hierclf.train.batches import EpochBatchSampler
from hierclf.train.checkpoint import (
    BEST,
    CHECKPOINT,
    DONE,
    RESOLVED,
    SelectionState,
    restore,
    save_best,
    save_checkpoint,
)
from hierclf.train.config import TrainConfig, load_train_config
from hierclf.train.distributed import ProcessGroup, init_process_group, pick_device
from hierclf.train.epoch import EpochOutcome, EpochStep
from hierclf.train.identity import check_same_model
from hierclf.train.model import HierarchicalClassifier
from hierclf.train.optim import lr_factor
from hierclf.train.outputs import (
    FitResult,
    finish,
    finished_result,
    partial_result,
    write_predictions_of_best,
)
from hierclf.train.reuse import reusable_summary
from hierclf.train.run import TrainingRun, build_run
from hierclf.train.run_logs import EpochLogs
from hierclf.train.validation import predict, validation_metrics

logger = logging.getLogger(__name__)

__all__ = ["EpochBatchSampler", "FitResult", "HierarchicalClassifier", "TrainConfig", "fit", "lr_factor"]

#: ``on_epoch`` callback: receives each finished epoch's record
EpochCallback = Callable[[dict[str, Any]], None]


def fit(
    config: TrainConfig | str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train backbone + LeafHead as ``config`` says and write the run's outputs into ``config.out_dir``.

    Args:
        config: a :class:`TrainConfig`, or the path of its YAML file. Relative paths in a ``TrainConfig``
            object are taken from the current directory.
        resume: continue from ``out_dir/checkpoint.pt`` when present (exactly: same data order, RNG and
            optimiser state), and return at once when ``out_dir/DONE`` exists. ``False`` starts over.
        progress: show a tqdm progress bar (only on a terminal, only on rank 0).
        stop_after_epochs: train at most this many epochs in this call, then return without predictions
            or ``DONE`` (``FitResult.finished`` is False); a later call resumes. For time-boxed jobs.
        on_epoch: called on rank 0 with each finished epoch's record (as in ``history.json``), e.g. to
            drive one progress display over several runs (``hierclf study``).

    Returns:
        A :class:`FitResult`.

    Raises:
        HierclfError: bad settings or data (one clear line each), or a checkpoint from other settings
            (:mod:`hierclf.train.errors`, :class:`hierclf.train.config.ConfigError`).
    """
    config = config.resolved(Path.cwd()) if isinstance(config, TrainConfig) else load_train_config(config)
    out = Path(config.out_dir)
    device = pick_device(config.device)
    group = init_process_group(device)
    try:
        if not resume:
            _prepare_out_dir(config, out, group, resume=resume)
        run = build_run(config, out, device, group)
        if resume and (out / DONE).exists():
            summary = reusable_summary(out, config.model_dump(mode="json"), run.data_fingerprint)
            if summary is not None:
                _check_same_tree(summary, run)
                logger.info("%s is finished with these settings and data; nothing to train", out)
                return finished_result(out, summary)
        if resume:
            _prepare_out_dir(config, out, group, resume=resume)
        return _fit(
            run, resume=resume, progress=progress, stop_after_epochs=stop_after_epochs, on_epoch=on_epoch
        )
    finally:
        group.close()


def _check_same_tree(summary: dict[str, Any], run: TrainingRun) -> None:
    """Refuse to reuse a finished run trained on another tree or other classes (the taxonomy file may have
    changed under the same path: the settings alone cannot tell)."""
    model = summary.get("model") or {}
    saved = dataclasses.replace(
        run.identity,
        fingerprint=str(model.get("fingerprint", run.identity.fingerprint)),
        classes=tuple(model.get("classes") or summary.get("classes") or run.identity.classes),
        nodes=tuple(model.get("nodes") or run.identity.nodes),
        parents=tuple(model.get("parents") or run.identity.parents),
    )
    check_same_model(saved, run.identity, run.out / DONE, verb="reuse")


def _fit(
    run: TrainingRun,
    *,
    resume: bool,
    progress: bool,
    stop_after_epochs: int | None,
    on_epoch: EpochCallback | None,
) -> FitResult:
    """Resume or start, train the epochs of this call, and finish with the best epoch's predictions."""
    state, resumed_from = start(run, resume=resume)
    show_progress = progress and run.group.main and sys.stderr.isatty()
    epochs = _epochs_of_this_call(run.config, state.epoch, stop_after_epochs)
    logs = EpochLogs(run.out, run.config.log, active=run.group.main)
    try:
        logs.write(state.history)
        stopped_early = train_epochs(
            run, state, epochs, show_progress=show_progress, on_epoch=on_epoch, logs=logs
        )
    finally:
        logs.close()
    if len(state.history) < run.config.epochs and not stopped_early:  # stop_after_epochs: a partial run
        return partial_result(run, state, resumed_from)
    paths, best_epoch = write_predictions_of_best(run, state)
    result = FitResult(
        out_dir=run.out,
        classes=run.classes,
        epochs_run=len(state.history),
        best_epoch=best_epoch,
        best_metric=state.best_metric,
        metric=run.metric,
        history=state.history,
        predictions=paths,
        checkpoint=run.out / CHECKPOINT,
        resumed_from=resumed_from,
        stopped_early=stopped_early,
        schedules=state.schedules,
        preprocessing=run.preprocessing.to_dict(),
    )
    finish(result, run)
    return result


def _prepare_out_dir(config: TrainConfig, out: Path, group: ProcessGroup, *, resume: bool) -> None:
    """Create the run folder and write ``config.resolved.yaml`` (rank 0); without ``resume``, remove the
    files of an earlier run that would otherwise be resumed or returned."""
    if group.main:
        output_folder(out)
        if not resume:
            for name in (DONE, CHECKPOINT, BEST):
                (out / name).unlink(missing_ok=True)
        atomic_write_text(
            out / RESOLVED, "# written by hierclf train: every setting of this run\n" + config.to_yaml()
        )
    group.barrier()


def start(run: TrainingRun, *, resume: bool) -> tuple[SelectionState, int]:
    """The selection state to continue from and the epochs already done.

    With ``resume`` and a ``checkpoint.pt``, everything is restored from it (``checkpoint.restore``).
    A fresh distributed run instead reseeds each rank's global torch generator
    (:attr:`~hierclf.train.seeding.SeedStreams.rank_augmentation`), so the ranks augment differently.

    The learning-rate schedule is the one of ``config.epochs``: a run resumed with another number of epochs
    (extended after it finished, or given fewer) goes on at the new schedule's value for its step, and the
    change is recorded in ``state.schedules`` (checkpoint, ``DONE``).
    """
    path = run.out / CHECKPOINT
    if resume and path.is_file():
        state = restore(run, path)
    else:
        if run.group.enabled:
            torch.manual_seed(run.seeds.rank_augmentation)  # different augmentations on each rank
        state = SelectionState()
    if not state.schedules or state.schedules[-1].get("epochs") != run.config.epochs:
        state.schedules.append(_recompute_schedule(run, state.epoch))
    return state, state.epoch


def _recompute_schedule(run: TrainingRun, from_epoch: int) -> dict[str, Any]:
    """The schedule of ``config.epochs`` from epoch ``from_epoch`` on: the optimiser's learning rates are
    set to its value at the scheduler's step (``LambdaLR`` keeps the step, the new run the new lambda)."""
    config, steps = run.config, len(run.sampler)
    total = steps * config.epochs
    warmup = min(total, round(config.warmup_epochs * steps))
    step = int(run.scheduler.last_epoch)
    factor = lr_factor(step, total, warmup, config.schedule, config.min_lr_ratio)
    if from_epoch > 0:
        for group in run.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        run.scheduler._last_lr = [g["lr"] for g in run.optimizer.param_groups]
        logger.info(
            "%s: %d epochs now (schedule recomputed: %d steps, warmup %d); step %d goes on at lr x %.4f",
            run.out,
            config.epochs,
            total,
            warmup,
            step,
            factor,
        )
    return {
        "from_epoch": from_epoch,
        "epochs": config.epochs,
        "schedule": config.schedule,
        "steps_per_epoch": steps,
        "total_steps": total,
        "warmup_steps": warmup,
        "lr_factor_at_start": factor,
    }


def _epochs_of_this_call(config: TrainConfig, done: int, stop_after_epochs: int | None) -> range:
    """The 0-based epochs this call may train: from ``done`` to the last, or ``stop_after_epochs`` of them."""
    last = config.epochs if stop_after_epochs is None else min(config.epochs, done + stop_after_epochs)
    return range(done, last)


def train_epochs(
    run: TrainingRun,
    state: SelectionState,
    epochs: range,
    *,
    show_progress: bool,
    on_epoch: EpochCallback | None = None,
    logs: EpochLogs | None = None,
) -> bool:
    """Train, validate and checkpoint each epoch of ``epochs`` until patience runs out (``logs`` written
    after each checkpoint); True when early stopping ended training (before the last epoch of the run)."""
    patience = run.config.early_stopping.patience
    train_one = EpochStep(run, show_progress=show_progress)
    for epoch in epochs:
        if state.patience_exhausted(patience):
            break
        started = time.perf_counter()
        outcome = train_one(epoch)
        record = validate(run, epoch, outcome, started)
        select_and_checkpoint(run, state, record)
        if logs is not None:
            logs.write(state.history)
        if on_epoch is not None and run.group.main:
            on_epoch(dict(record))
    return state.patience_exhausted(patience) and len(state.history) < run.config.epochs


def validate(run: TrainingRun, epoch: int, outcome: EpochOutcome, started: float) -> dict[str, Any]:
    """The epoch's record for ``history.json``: training loss, validation metrics, learning rate (head
    group), unfrozen block groups and seconds since ``started``."""
    logits = predict(run, "val")
    record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": outcome.train_loss}
    record.update(
        validation_metrics(
            logits,
            run.datasets["val"].targets.numpy(),
            np.asarray(run.sources["val"].labels),
            metric=run.metric,
            scorer=run.scorer,
            head=run.head,
        )
    )
    record.update(
        {
            "lr": run.optimizer.param_groups[0]["lr"],
            "unfrozen_blocks": outcome.unfrozen_blocks,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    return record


def select_and_checkpoint(run: TrainingRun, state: SelectionState, record: dict[str, Any]) -> None:
    """Record the epoch, keep its weights in ``best.pt`` when it is the best so far, write
    ``checkpoint.pt``, and log the epoch."""
    value = record[run.metric]
    if state.record(record, value, run.config.early_stopping.mode):
        save_best(run, state)
    save_checkpoint(run, state)
    logger.info(
        "epoch %d/%d: train loss %.4f, %s %.4f (best %s at epoch %d)",
        record["epoch"],
        run.config.epochs,
        record["train_loss"],
        run.metric,
        value,
        state.best,
        state.best_epoch,
    )
