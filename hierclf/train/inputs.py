"""The data of a training run: image sources, the head's classes, the preprocessing and the datasets.

Images labelled at a split internal node with ``classes.internal_labels: drop`` have no class: they are left
out of the training split (logged, with each node and its count); in the validation and test splits they
keep their rows (the prediction files are over tree nodes, and the evaluator handles labels above the
columns) with the class index :data:`UNSCORED`, which the validation metrics that need a class leave out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hierclf.data.sources import DERMAMNIST_SPLIT_NOTICE
from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.config import TrainConfig
from hierclf.train.distributed import ProcessGroup
from hierclf.train.errors import TrainingDataError, TrainSettingError
from hierclf.train.preprocessing import InputSettings, resolve_preprocessing

logger = logging.getLogger(__name__)

__all__ = [
    "DERMAMNIST_SPLIT_NOTICE",
    "UNSCORED",
    "HeadClasses",
    "Pipeline",
    "build_datasets",
    "class_index_of",
    "head_classes",
    "load_sources",
    "make_pipeline",
    "subsample_source",
]

SPLITS = ("train", "val", "test")
#: class index of a validation or test image whose label lies above the head's classes (no class to score)
UNSCORED = -1


# --------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------


def load_sources(config: TrainConfig, taxonomy: Taxonomy, group: ProcessGroup) -> dict[str, Any]:
    """The ``train``, ``val`` and ``test`` image sources (``hierclf.data.datasets.ImageSource``) of the
    config: a published layout split by patient or lesion (the split file written by rank 0, once, and
    read by every later run), users' CSVs, DermaMNIST through medmnist, or a generated npz (rank 0 writes
    it, once); with ``data.train_fraction < 1`` the training split keeps that fraction of each class, by
    groups (:mod:`hierclf.train.subsample`)."""
    from hierclf.data.sources import DATA_SOURCES

    if DATA_SOURCES.get(config.data.source) == "preset":
        sources = _preset_sources(config, taxonomy, group)
    elif config.data.source == "csv":
        sources = _csv_sources(config, taxonomy)
    else:
        if config.data.source == "dermamnist":
            logger.warning(DERMAMNIST_SPLIT_NOTICE)
        npz = _synthetic_npz(config, group) if config.data.source == "synthetic" else config.data.npz
        sources = _npz_sources(config, taxonomy, group, npz)
    if config.data.train_fraction < 1.0:
        sources["train"] = subsample_source(
            sources["train"], config.data.train_fraction, seed=config.data.subsample_seed
        )
    return sources


def subsample_source(source: Any, fraction: float, *, seed: int) -> Any:
    """The rows of ``source`` that :func:`hierclf.train.subsample.grouped_class_subsample` keeps (logged
    per class)."""
    from hierclf.train.subsample import grouped_class_subsample, subsample_counts

    labels = np.asarray(source.labels)
    rows = grouped_class_subsample(labels, source.groups, fraction, seed=seed)
    kept = subsample_counts(labels, rows)
    logger.info(
        "data.train_fraction %g (seed %d): %d of %d training images kept, by %s; per class: %s",
        fraction,
        seed,
        len(rows),
        len(labels),
        "groups" if source.groups is not None else "images (the data has no groups)",
        ", ".join(f"{k} {a}/{b}" for k, (a, b) in kept.items()),
    )
    return _source_rows(source, rows)


def _preset_sources(config: TrainConfig, taxonomy: Taxonomy, group: ProcessGroup) -> dict[str, Any]:
    """A published layout (``data.source: ham10000`` ...) split by hierclf; rank 0 makes and writes the split
    file when it is missing, every other rank reads it afterwards."""
    from hierclf.data.datasets import load_source_splits
    from hierclf.data.sources import source_spec

    d = config.data
    _warn_unknown_scopes(d.alias_scopes, taxonomy)
    spec = source_spec(
        d.source,
        root=d.root,
        table=d.labels,
        images=d.images,
        extra=d.metadata,
        columns=d.columns.overrides() if d.columns is not None else None,
        alias_scopes=d.alias_scopes,
    )
    split_file = d.split.file if d.split.file is not None else Path(config.out_dir) / "split.csv"
    options: dict[str, Any] = {
        "split_file": split_file,
        "val_fraction": d.split.val_fraction,
        "test_fraction": d.split.test_fraction,
        "seed": d.split.seed,
        "group_by": d.split.by,
    }
    sources: dict[str, Any] = {}
    if group.main:
        sources, _ = load_source_splits(spec, taxonomy, write=True, **options)
    group.barrier()
    if not group.main:
        sources, _ = load_source_splits(spec, taxonomy, write=False, **options)
    return sources


def _warn_unknown_scopes(scopes: list[str] | None, taxonomy: Taxonomy) -> None:
    """An alias scope the taxonomy does not define is likely a typo (its labels see the global names)."""
    from hierclf.errors import did_you_mean

    for scope in scopes or []:
        if scope not in taxonomy.source_scopes:
            hint = did_you_mean(scope, taxonomy.source_scopes)
            logger.warning(
                "data.alias_scopes: taxonomy %r has no source_aliases for %r%s (its scopes: %s)",
                taxonomy.name,
                scope,
                f"; did you mean {hint[0]!r}?" if hint else "",
                ", ".join(taxonomy.source_scopes) or "none",
            )


def _csv_sources(config: TrainConfig, taxonomy: Taxonomy) -> dict[str, Any]:
    """One :class:`~hierclf.data.datasets.CsvImageDataset` per split; with a group column, lists that share
    groups are refused (:class:`~hierclf.data.splits.LeakageError`; a leak inflates test metrics) unless
    ``data.allow_leakage``, which turns the refusal into a warning."""
    from hierclf.data.datasets import CsvImageDataset
    from hierclf.data.splits import LeakageError, check_no_leakage

    c = config.data.csv
    if c is None:  # TrainConfig.check_against says so with the file's position; fit checks it first
        raise TrainSettingError("data.source 'csv' needs data.csv with train, val and test CSV files")
    sources = {
        split: CsvImageDataset(
            getattr(c, split),
            taxonomy,
            image_root=c.image_root,
            path_column=c.path_column,
            label_column=c.label_column,
            group_column=c.group_column,
            id_column=c.id_column,
        )
        for split in SPLITS
    }
    if c.group_column is not None:
        groups = np.concatenate([np.asarray(sources[s].groups) for s in SPLITS])
        offsets = np.cumsum([0] + [len(sources[s]) for s in SPLITS])
        rows = {s: np.arange(offsets[k], offsets[k + 1]) for k, s in enumerate(SPLITS)}
        try:
            check_no_leakage(rows, groups, what=c.group_column)
        except LeakageError as exc:
            if not config.data.allow_leakage:
                raise LeakageError(
                    f"data.csv: {exc} Fix the lists, or train anyway with data.allow_leakage: true "
                    "(hierclf train --allow-leakage; every evaluation then says LEAKAGE)",
                    exc.leaks,
                ) from None
            logger.warning("data.csv: LEAKAGE (allowed by data.allow_leakage): %s", exc)
    return sources


def _synthetic_npz(config: TrainConfig, group: ProcessGroup) -> Path:
    """The generated npz of ``data.synthetic`` in ``data.root``, written by rank 0 when missing."""
    from hierclf.data.datasets import make_synthetic_dermamnist

    d, s = config.data, config.data.synthetic
    npz = Path(d.root) / (
        f"synthetic_dermamnist_{d.size}px_{s.n_train}-{s.n_val}-{s.n_test}_seed{s.seed}_noise{s.noise:g}.npz"
    )
    if group.main and not npz.is_file():
        make_synthetic_dermamnist(
            npz, size=d.size, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test, seed=s.seed, noise=s.noise
        )
        logger.info("generated synthetic DermaMNIST-layout data %s", npz)
    group.barrier()
    return npz


def _npz_sources(
    config: TrainConfig, taxonomy: Taxonomy, group: ProcessGroup, npz: Path | None
) -> dict[str, Any]:
    """DermaMNIST-layout splits; with ``data.download`` rank 0 downloads first while the others wait."""
    from hierclf.data.datasets import load_dermamnist

    d = config.data
    download = d.download and d.source == "dermamnist"
    if download and not group.main:
        group.barrier()  # rank 0 downloads first
    sources = {
        split: load_dermamnist(
            d.root, split, d.size, download=download and split == "train", taxonomy=taxonomy, npz=npz
        )
        for split in SPLITS
    }
    if download and group.main:
        group.barrier()
    return sources


# --------------------------------------------------------------------------------------------------------
# The head's classes
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadClasses:
    """The head's classes as the config chooses them (before the head exists).

    Attributes:
        classes: class names in pre-order, or None for the taxonomy's leaves.
        label_map: for a partition, every node at or below its cut -> its class; None otherwise.
        dropped: for a partition with ``internal_labels: drop``, split internal node -> training images
            labelled there (they have no class and are left out of training).
        leave_out_unmapped: labels the ``label_map`` lacks (above the head's classes) are left out of
            training and unscored in validation (``internal_labels: drop``) instead of refused.
    """

    classes: tuple[str, ...] | None
    label_map: dict[str, str] | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    leave_out_unmapped: bool = False


def head_classes(config: TrainConfig, taxonomy: Taxonomy, train_labels: np.ndarray) -> HeadClasses:
    """The classes of ``config.classes``: leaves, a cut, or Esteva's partition of the training counts."""
    kind = config.classes.kind
    if kind == "leaves":
        return HeadClasses(None)
    if kind == "cut":
        nodes = [taxonomy.resolve(n) for n in config.classes.nodes or []]
        cut = tuple(taxonomy.cut(nodes))
        if len(cut) < 2:
            raise TrainSettingError(
                f"classes.nodes {list(cut)} is a cut of one class: the head would learn nothing; name at "
                "least two nodes that cover every leaf"
            )
        return HeadClasses(cut)
    from hierclf.classes.esteva import partition

    uniq, counts = np.unique(train_labels, return_counts=True)
    part = partition(
        taxonomy,
        {str(u): int(c) for u, c in zip(uniq, counts)},
        max_class_size=config.classes.max_class_size,
        inclusive=config.classes.inclusive,
        internal_labels=config.classes.internal_labels,
    )
    logger.info(
        "partition (max_class_size %d): %d training classes", config.classes.max_class_size, len(part.classes)
    )
    if len(part.classes) < 2:
        raise TrainSettingError(
            f"the partition keeps {part.classes[0]!r} as the only training class: the training split has "
            f"{int(counts.sum())} images, fewer than classes.max_class_size "
            f"{config.classes.max_class_size}, so the whole tree is one class and the head would learn "
            "nothing; lower classes.max_class_size or train on the leaves (classes.kind: leaves)"
        )
    return HeadClasses(
        tuple(part.classes),
        dict(part.label_map),
        dict(part.dropped),
        leave_out_unmapped=config.classes.internal_labels == "drop",
    )


def class_index_of(head: Any, label_map: Mapping[str, str] | None) -> Any:
    """Label -> class index for the datasets: through the partition's ``label_map`` (a dict node -> index)
    or, for leaves and cuts, the head's own ``class_index`` (a callable that refuses labels above the cut)."""
    if label_map is not None:
        position = {c: i for i, c in enumerate(head.classes)}
        return {node: position[cls] for node, cls in label_map.items()}
    return head.class_index


# --------------------------------------------------------------------------------------------------------
# Preprocessing and datasets
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """Where preprocessing and augmentation run.

    ``per_sample``: torchvision transforms per image in the DataLoader (``train_item``, ``eval_item``);
    ``batched``: the datasets yield uint8 tensors and ``train_batch`` / ``eval_batch``
    (``hierclf.data.transforms.BatchTransform``, on the device) augment and normalise whole batches.
    """

    train_item: Any
    eval_item: Any
    train_batch: nn.Module | None = None
    eval_batch: nn.Module | None = None


def make_pipeline(
    config: TrainConfig, device: torch.device, settings: InputSettings | None = None
) -> Pipeline:
    """The pipeline of ``data.pipeline`` (``auto``: batched on CUDA, per-sample on the CPU), resizing to and
    normalising with ``settings`` (default: :func:`hierclf.train.preprocessing.resolve_preprocessing`)."""
    from hierclf.data.transforms import BatchTransform, eval_transform, to_uint8, train_transform

    settings = settings or resolve_preprocessing(config)
    size, mean, std = settings.size, settings.mean, settings.std
    pipeline = config.data.pipeline
    if pipeline == "auto":
        pipeline = "batched" if device.type == "cuda" else "per_sample"
    if pipeline == "batched":  # datasets give uint8 tensors; augmentation + preprocessing run on the device
        return Pipeline(
            to_uint8(size),
            to_uint8(size),
            BatchTransform(size, augment=config.data.augment, mean=mean, std=std).to(device),
            BatchTransform(size, augment=False, mean=mean, std=std).to(device),
        )
    evaluation = eval_transform(size, mean=mean, std=std)
    train_item = train_transform(size, mean=mean, std=std) if config.data.augment else evaluation
    return Pipeline(train_item, evaluation)


def build_datasets(
    sources: dict[str, Any], class_index: Any, pipeline: Pipeline, *, leave_out_unmapped: bool = False
) -> dict[str, Any]:
    """``TaxonomyImageDataset`` per split: training with the training transform, the others with the
    evaluation one.

    With ``leave_out_unmapped`` (a partition with ``internal_labels: drop``; ``class_index`` is then a dict)
    training images whose label has no class are left out, and validation and test images with such a
    label get the class index :data:`UNSCORED`.
    """
    from hierclf.data.datasets import TaxonomyImageDataset

    train, eval_index = sources["train"], class_index
    if leave_out_unmapped:
        train = _leave_out_unmapped(train, class_index)
        eval_index = _with_unscored(class_index)
        for split in ("val", "test"):
            _log_unscored(split, np.asarray(sources[split].labels), class_index)
    datasets = {"train": TaxonomyImageDataset(train, class_index, transform=pipeline.train_item)}
    for split in ("val", "test"):
        datasets[split] = TaxonomyImageDataset(sources[split], eval_index, transform=pipeline.eval_item)
    return datasets


def _counts_text(labels: np.ndarray) -> str:
    """``node (count), ...`` of the labels, largest count first."""
    nodes, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return ", ".join(f"{nodes[i]} ({counts[i]})" for i in order.tolist())


def _leave_out_unmapped(source: Any, class_index: Mapping[str, int]) -> Any:
    """The training source without the images whose label has no class (logged with each node's count).

    Raises:
        TrainingDataError: no training image is left.
    """
    labels = np.asarray(source.labels)
    keep = np.isin(labels, list(class_index))
    if keep.all():
        return source
    if not keep.any():
        raise TrainingDataError(
            f"classes.internal_labels 'drop' leaves no training image: every one is labelled at a split "
            f"internal node ({_counts_text(labels)})"
        )
    logger.info(
        "classes.internal_labels 'drop': %d of %d training images are left out, labelled at split internal "
        "nodes: %s",
        int((~keep).sum()),
        len(labels),
        _counts_text(labels[~keep]),
    )
    return _source_rows(source, np.flatnonzero(keep))


def _with_unscored(class_index: Mapping[str, int]) -> Callable[[list[str]], np.ndarray]:
    """A ``class_index`` callable giving :data:`UNSCORED` to labels the mapping lacks."""

    def index(names: list[str]) -> np.ndarray:
        """Class index of each distinct label (called once per split, not per sample)."""
        return np.array([class_index.get(n, UNSCORED) for n in names], dtype=np.int64)

    return index


def _log_unscored(split: str, labels: np.ndarray, class_index: Mapping[str, int]) -> None:
    """Say how many ``split`` images have a label above the head's classes, and at which nodes."""
    unscored = ~np.isin(labels, list(class_index))
    if not unscored.any():
        return
    left_out = (
        " but are left out of val_loss, val_accuracy and val_balanced_accuracy" if split == "val" else ""
    )
    logger.info(
        "%s: %d image(s) labelled above the head's classes (%s) stay in predictions/%s.npz%s",
        split,
        int(unscored.sum()),
        _counts_text(labels[unscored]),
        split,
        left_out,
    )


class _SourceRows:
    """Some rows of an image source, in their order: its labels, ids, groups and images."""

    def __init__(self, source: Any, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows
        self.labels = np.asarray(source.labels)[rows]
        self.ids = np.asarray(source.ids)[rows]
        self.groups = None if source.groups is None else np.asarray(source.groups)[rows]

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.rows)

    def load_image(self, index: int) -> Any:
        """The PIL image of row ``index``."""
        return self.source.load_image(int(self.rows[index]))


class _ArraySourceRows(_SourceRows):
    """Rows of a source that also gives uint8 arrays (the batched pipeline skips PIL for those)."""

    def load_array(self, index: int) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 array of row ``index``."""
        return self.source.load_array(int(self.rows[index]))


def _source_rows(source: Any, rows: np.ndarray) -> _SourceRows:
    """The ``rows`` of ``source``, keeping its ``load_array`` when it has one."""
    return (_ArraySourceRows if hasattr(source, "load_array") else _SourceRows)(source, rows)
