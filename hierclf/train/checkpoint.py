"""The files of a run folder, the selection state, and the checkpoints that make resuming exact.

``checkpoint.pt`` (after every epoch) holds everything the next epoch depends on: model, optimiser, LR
schedule and AMP scaler states, the :class:`SelectionState` (epochs done, best value and epoch, epochs
without improvement, history), every rank's RNG states and the config. ``best.pt`` holds the weights of the
best epoch. Both are written atomically (temporary file + rename), so a killed run never leaves half a file.

Both also carry the model's record (``"identity"``, :class:`~hierclf.train.identity.ModelIdentity`: the tree
and its fingerprint, the head's classes, the backbone recipe, the preprocessing, the hierclf version), so that
either file is a model by itself (:func:`hierclf.inference.load_model`), and optionally ``"thresholds"``: the
operating points a study or evaluation chose on validation (:func:`record_thresholds`). Resuming refuses a
checkpoint whose tree, classes, backbone or preprocessing differ from the run's, saying what changed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hierclf.io.atomic import atomic_open
from hierclf.nn.serialization import TensorFileError, load_tensor_file
from hierclf.train.errors import CheckpointError
from hierclf.train.identity import ModelIdentity, check_same_model
from hierclf.train.seeding import get_rng_state, set_rng_state
from hierclf.train.validation import better

if TYPE_CHECKING:
    from hierclf.train.run import TrainingRun

logger = logging.getLogger(__name__)

__all__ = [
    "BEST",
    "CHECKPOINT",
    "DONE",
    "HISTORY",
    "RESOLVED",
    "SelectionState",
    "load",
    "record_thresholds",
    "restore",
    "save",
    "save_best",
    "save_checkpoint",
]

CHECKPOINT, BEST, HISTORY, DONE, RESOLVED = (
    "checkpoint.pt",
    "best.pt",
    "history.json",
    "DONE",
    "config.resolved.yaml",
)
#: settings that may change between a run and its resumption (they do not change what is computed)
RESUME_FREE = {
    "out_dir",
    "device",
    "workers",
    "eval_batch_size",
    "data.root",
    "data.npz",
    "data.download",
    "data.csv.train",
    "data.csv.val",
    "data.csv.test",
    "data.csv.image_root",
    "log",
}
#: what a ``checkpoint.pt`` must hold to be resumed from
_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best", "best_epoch", "stale")


@dataclass
class SelectionState:
    """Model selection and early stopping, epoch by epoch (one per run, saved in every checkpoint).

    Attributes:
        epoch: epochs finished.
        best: the best value of the selection metric so far (None before the first finite one).
        best_epoch: the epoch (1-based) that reached ``best`` (0 before).
        stale: epochs since the last improvement.
        history: one record per finished epoch, as in ``history.json``.
        schedules: the learning-rate schedules the run followed, one per planned number of epochs: the first
            from epoch 0, another each time a resumed run was given another ``epochs`` (the schedule is then
            recomputed for the new total; :func:`hierclf.train.loop.start`).
    """

    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)

    def record(self, record: dict[str, Any], value: float, mode: str) -> bool:
        """Add a finished epoch's record and its metric ``value``; True when it is the best so far."""
        self.history.append(record)
        self.epoch = record["epoch"]
        if better(value, self.best, mode):
            self.best, self.best_epoch, self.stale = value, self.epoch, 0
            return True
        self.stale += 1
        return False

    def patience_exhausted(self, patience: int | None) -> bool:
        """True when ``patience`` epochs passed without improvement (never without patience)."""
        return self.best is not None and bool(patience) and self.stale >= (patience or 0)

    @property
    def best_metric(self) -> float:
        """``best`` as a float (NaN when no epoch had a finite value)."""
        return float(self.best) if self.best is not None else float("nan")


def save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` into ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def load(path: Path) -> dict[str, Any]:
    """A checkpoint's contents (tensors on the CPU, ``weights_only``).

    Raises:
        CheckpointError: the file cannot be read.
    """
    try:
        return load_tensor_file(path, what="checkpoint", hint="delete it or run with --no-resume")
    except TensorFileError as exc:
        raise CheckpointError(str(exc)) from None


def save_best(run: TrainingRun, state: SelectionState) -> None:
    """Write the model's weights to ``best.pt`` (rank 0)."""
    if not run.group.main:
        return
    save(
        {
            "model": run.model.state_dict(),
            "epoch": state.best_epoch,
            "metric": run.metric,
            "value": state.best,
            "classes": list(run.classes),
            "identity": run.identity.to_dict(),
        },
        run.out / BEST,
    )


def save_checkpoint(run: TrainingRun, state: SelectionState) -> None:
    """Write ``checkpoint.pt`` after an epoch (rank 0), with every rank's RNG states; all ranks take part
    (the states are gathered) and wait until the file is written."""
    rng = run.group.gather(get_rng_state())
    if run.group.main:
        save(
            {
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict(),
                "epoch": state.epoch,
                "best": state.best,
                "best_epoch": state.best_epoch,
                "stale": state.stale,
                "history": state.history,
                "schedules": state.schedules,
                "rng": rng,
                "config": run.config.model_dump(mode="json"),
                "classes": list(run.classes),
                "data": run.data_fingerprint,
                "identity": run.identity.to_dict(),
            },
            run.out / CHECKPOINT,
        )
    run.group.barrier()


def restore(run: TrainingRun, path: Path) -> SelectionState:
    """Load ``checkpoint.pt`` into the run (model, optimiser, schedule, scaler, this rank's RNG states).

    A checkpoint of as many ranks as now restores each rank's own states; otherwise every rank takes
    rank 0's.

    Raises:
        CheckpointError: the file cannot be read, is not a training checkpoint, or was written with other
            settings.
    """
    ckpt = load(path)
    missing = [k for k in (*_CHECKPOINT_KEYS, "config", "rng", "history") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint (it lacks {', '.join(missing)}); delete it or run with "
            "--no-resume"
        )
    check_same_config(
        ckpt["config"], run.config.model_dump(mode="json"), path, epochs_done=int(ckpt["epoch"])
    )
    _check_model(ckpt, run, path)
    if ckpt.get("data", run.data_fingerprint) != run.data_fingerprint:
        raise CheckpointError(
            f"cannot resume from {path}: it was trained on other data (data fingerprint "
            f"{str(ckpt['data'])[:12]} there, {run.data_fingerprint[:12]} now); use --no-resume to start over"
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    states = ckpt["rng"]
    set_rng_state(states[run.group.rank] if len(states) == run.group.world_size else states[0])
    logger.info("resuming %s after epoch %d", run.out, ckpt["epoch"])
    return SelectionState(
        ckpt["epoch"],
        ckpt["best"],
        ckpt["best_epoch"],
        ckpt["stale"],
        list(ckpt["history"]),
        list(ckpt.get("schedules") or [{"from_epoch": 0, "epochs": ckpt["config"].get("epochs")}]),
    )


def _check_model(ckpt: dict[str, Any], run: TrainingRun, path: Path) -> None:
    """Refuse a checkpoint of another model: tree, classes, backbone or preprocessing (what changed, by
    name). A checkpoint of an older hierclf, without a model record, is checked by its classes alone."""
    if "identity" in ckpt:
        check_same_model(
            ModelIdentity.from_dict(ckpt["identity"], path), run.identity, path, verb="resume from"
        )
        return
    saved = tuple(ckpt.get("classes") or run.classes)
    if saved != tuple(run.classes):
        saved_identity = dataclasses.replace(run.identity, classes=saved, fingerprint="")
        check_same_model(saved_identity, run.identity, path, verb="resume from")
    logger.warning("%s was written by an older hierclf without the model's tree; its classes match", path)


def record_thresholds(path: str | Path, thresholds: dict[str, Any]) -> None:
    """Store operating points in a checkpoint (``checkpoint.pt`` or ``best.pt``), atomically.

    Args:
        path: the checkpoint.
        thresholds: ``{task: {"positive": [...], "negative": [...], "threshold": t, ...}}`` or ``{task:
            TaskThreshold}`` (:func:`hierclf.inference.thresholds.thresholds_from_report` gives them);
            replaces any stored.

    Raises:
        CheckpointError: the file cannot be read or has no model record.
    """
    file = Path(path)
    ckpt = load(file)
    if "identity" not in ckpt:
        raise CheckpointError(f"{file} has no model record (not a hierclf checkpoint of this version)")
    ckpt["thresholds"] = {
        str(k): dict(v.to_dict() if hasattr(v, "to_dict") else v) for k, v in thresholds.items()
    }
    save(ckpt, file)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted keys (``data.root``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    """Every setting's default, flattened (settings added after a run was saved compare to these)."""
    from hierclf.train.config import TrainConfig

    return _flat(TrainConfig.model_validate({"taxonomy": "-"}).model_dump(mode="json"))


def check_same_config(
    saved: dict[str, Any],
    current: dict[str, Any],
    path: Path,
    *,
    verb: str = "resume from",
    epochs_done: int | None = None,
) -> None:
    """Refuse to resume (or reuse) when a setting that changes the computation differs (all but
    :data:`RESUME_FREE`).

    A setting the saved run does not have (added to hierclf since) counts as equal when it keeps its
    default. With ``epochs_done``, ``epochs`` may change to any number not below it (a run extended by more
    epochs, or one given fewer than planned, continues with its schedule recomputed).

    Raises:
        CheckpointError: naming up to six differing settings, old -> new; or epochs below ``epochs_done``.
    """
    a, b, defaults = _flat(saved), _flat(current), _defaults()
    diff = [
        k
        for k in sorted(set(a) | set(b))
        if k not in RESUME_FREE and a.get(k, defaults.get(k)) != b.get(k, defaults.get(k))
    ]
    if epochs_done is not None and "epochs" in diff:
        if int(b["epochs"]) < epochs_done:
            raise CheckpointError(
                f"cannot {verb} {path}: it has trained {epochs_done} epochs already, more than epochs "
                f"{b['epochs']}; give at least {epochs_done}, or use --no-resume to start over"
            )
        diff.remove("epochs")
    if diff:
        shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:6])
        raise CheckpointError(
            f"cannot {verb} {path}: it was trained with other settings ({shown}); "
            "use --no-resume to start over, or another out_dir"
        )
