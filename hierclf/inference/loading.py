"""From a checkpoint on disk to a model ready to predict: :func:`load_model`, :func:`load_models`.

A checkpoint (``best.pt`` or ``checkpoint.pt`` of ``hierclf train``) carries its model's record
(:class:`~hierclf.train.identity.ModelIdentity`): the tree, the head's classes, the backbone recipe and the
preprocessing. :func:`load_model` rebuilds the model from it alone (no taxonomy file, no config, no
pretrained weights file: the weights are the checkpoint's), loads the weights and puts it on a device in
eval mode. Given a taxonomy, it refuses one that differs from the checkpoint's, saying what changed.

A path may name a checkpoint file, a run folder (its ``best.pt``, else its ``checkpoint.pt``), or a study
folder (``seeds/seed_*/``: every seed, as an ensemble, :func:`load_models`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hierclf.errors import HierclfError
from hierclf.inference.models import ModelEnsemble, TrainedModel
from hierclf.inference.thresholds import TaskThreshold
from hierclf.nn.serialization import TensorFileError, load_tensor_file
from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.identity import ModelIdentity, check_tree

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointFileError",
    "checkpoint_files",
    "load_model",
    "load_models",
    "read_checkpoint",
    "resolve_device",
]

#: file names of a run folder's checkpoints, in order of preference
_RUN_FILES = ("best.pt", "checkpoint.pt")


class CheckpointFileError(HierclfError, ValueError):
    """A path that is not a usable hierclf checkpoint: missing, not a PyTorch file, or one without a model
    record."""


def checkpoint_files(path: str | Path) -> list[Path]:
    """The checkpoints ``path`` names: the file itself; a run folder's ``best.pt`` (else ``checkpoint.pt``);
    or every seed of a study folder (``seeds/seed_<k>/``, in seed order).

    Raises:
        CheckpointFileError: nothing there, or a folder without checkpoints.
    """
    given = Path(path)
    if given.is_dir():
        own = next((given / n for n in _RUN_FILES if (given / n).is_file()), None)
        if own is not None:
            return [own]
        seeds = sorted(
            (p for p in (given / "seeds").glob("seed_*") if p.is_dir()),
            key=lambda p: (len(p.name), p.name),
        )
        found = [
            f for f in (next((s / n for n in _RUN_FILES if (s / n).is_file()), None) for s in seeds) if f
        ]
        if found:
            return found
        raise CheckpointFileError(
            f"{given} is a folder without checkpoints (expected best.pt or checkpoint.pt, or a study's "
            "seeds/seed_<k>/ folders)"
        )
    if not given.exists():
        raise CheckpointFileError(f"checkpoint {given} not found")
    return [given]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (``weights_only``, on the CPU), checked to be a hierclf model checkpoint.

    Raises:
        CheckpointFileError: unreadable, not a PyTorch file of tensors, or not a hierclf checkpoint (no
            weights, or no model record: written by a hierclf before 0.1 recorded the tree).
    """
    try:
        data = load_tensor_file(path, what="checkpoint")
    except TensorFileError as exc:
        raise CheckpointFileError(str(exc)) from None
    if not isinstance(data, dict) or "model" not in data:
        keys = ", ".join(sorted(map(str, data))[:5]) if isinstance(data, dict) else type(data).__name__
        raise CheckpointFileError(
            f"{path} is not a hierclf checkpoint (it holds {keys}; expected the best.pt or checkpoint.pt "
            "that hierclf train writes)"
        )
    if "identity" not in data:
        raise CheckpointFileError(
            f"{path} does not record the model's tree, classes and preprocessing (written by an older "
            "hierclf); resume the run with this hierclf to rewrite it, or train again"
        )
    return data


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else the CPU; otherwise the device named (checked)."""
    from hierclf.train.distributed import pick_device

    if isinstance(device, torch.device):
        return device
    return pick_device("auto" if device is None else str(device))


def _build(identity: ModelIdentity, taxonomy: Taxonomy, path: Path) -> TrainedModel:
    from hierclf.nn.backbones import rebuild_backbone
    from hierclf.nn.head import LeafHead

    backbone = rebuild_backbone(identity.backbone)
    classes = None if identity.leaf_head else list(identity.classes)
    head = LeafHead(identity.in_features, taxonomy, classes)
    if tuple(head.classes) != identity.classes:  # the record contradicts itself: never load it
        raise CheckpointFileError(f"{path}: its classes do not rebuild in its own tree; the file is damaged")
    return TrainedModel(backbone, head, identity, source=str(path))


def load_model(
    path: str | Path,
    *,
    taxonomy: Taxonomy | str | Path | None = None,
    device: str | torch.device | None = "cpu",
) -> TrainedModel:
    """A trained model, rebuilt from its checkpoint alone, weights loaded, in eval mode on ``device``.

    Args:
        path: ``best.pt`` / ``checkpoint.pt``, or a run folder (its ``best.pt``).
        taxonomy: the tree you mean to use it with (a :class:`Taxonomy` or a file); refused when it is not
            the one the model was trained on. None: the checkpoint's own tree.
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"``, or ``"auto"`` / None.

    Returns:
        A :class:`~hierclf.inference.models.TrainedModel`: ``model(images)`` gives probabilities over
        ``model.columns``; ``model.thresholds`` holds the operating points stored with it.

    Raises:
        CheckpointFileError: a missing or foreign file, a study folder (use :func:`load_models`).
        TreeMismatchError: ``taxonomy`` differs from the checkpoint's tree (what changed, by name).

    Example:
        >>> model = load_model(run_dir / "best.pt")  # doctest: +SKIP
        >>> model(images).shape  # (batch, len(model.columns))  # doctest: +SKIP
    """
    files = checkpoint_files(path)
    if len(files) > 1:
        raise CheckpointFileError(f"{path} holds {len(files)} models (a study's seeds); use load_models")
    file = files[0]
    data = read_checkpoint(file)
    identity = ModelIdentity.from_dict(data["identity"], file)
    tree = identity.taxonomy()
    if taxonomy is not None:
        given = taxonomy if isinstance(taxonomy, Taxonomy) else Taxonomy.from_yaml(taxonomy)
        check_tree(identity, given, file)
    model = _build(identity, tree, file)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "RuntimeError"
        raise CheckpointFileError(f"{file}: its weights do not fit the model it records ({first})") from None
    model.thresholds = {
        str(k): TaskThreshold.from_dict(k, v) for k, v in (data.get("thresholds") or {}).items()
    }
    return model.to(resolve_device(device)).eval()


def load_models(
    paths: str | Path | Sequence[str | Path],
    *,
    taxonomy: Taxonomy | str | Path | None = None,
    device: str | torch.device | None = "cpu",
) -> TrainedModel | ModelEnsemble:
    """One model, or the ensemble of several: every checkpoint ``paths`` name (files, run folders, study
    folders), each loaded by :func:`load_model`.

    Raises:
        As :func:`load_model`; HierclfError for members of different trees or input sides.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = [f for p in items for f in checkpoint_files(p)]
    models = [load_model(f, taxonomy=taxonomy, device=device) for f in files]
    if len(models) == 1:
        return models[0]
    return ModelEnsemble(models).eval()
