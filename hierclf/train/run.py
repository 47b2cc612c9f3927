"""A training run's objects, built once from the config: :class:`TrainingRun` and :func:`build_run`.

The build order is part of the result: the global generators are seeded, the data are loaded, the
generators are seeded again and the model is built (so its initial weights depend on the seed alone), then
come the preprocessing, the datasets, the loss, the optimiser with its parameter groups, the sampler, the
schedule and the AMP scaler. Nothing here draws random numbers after the model is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hierclf.nn.backbones import BackboneError, backbone_recipe, create_backbone
from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.batches import EpochBatchSampler
from hierclf.train.config import ConfigError, TrainConfig
from hierclf.train.distributed import ProcessGroup
from hierclf.train.fingerprint import data_fingerprint
from hierclf.train.identity import ModelIdentity
from hierclf.train.inputs import (
    HeadClasses,
    Pipeline,
    build_datasets,
    class_index_of,
    head_classes,
    load_sources,
    make_pipeline,
)
from hierclf.train.model import HierarchicalClassifier
from hierclf.train.optim import Precision, make_optimizer, make_scheduler
from hierclf.train.preprocessing import InputSettings, input_size_of, resolve_preprocessing
from hierclf.train.regimes import param_groups
from hierclf.train.seeding import SeedStreams, set_determinism
from hierclf.train.validation import Scorer, auc_scorer

logger = logging.getLogger(__name__)

__all__ = ["TrainingRun", "build_run"]


@dataclass
class TrainingRun:
    """Everything one training run works with; each object has one owner (this run) and is built once.

    Attributes:
        config: the resolved configuration.
        out: the run folder.
        device: where the model trains.
        group: this process's place in the process group.
        seeds: every generator seed of the run (:class:`~hierclf.train.seeding.SeedStreams`).
        taxonomy: the tree.
        sources: ``{"train", "val", "test"}`` image sources (``ids``, ``labels``, ``groups``, images).
        datasets: ``TaxonomyImageDataset`` per split (training may leave images out, see
            :mod:`hierclf.train.inputs`).
        classes: the head's classes (its logits), pre-order.
        model: backbone + head (not wrapped in DDP; :class:`~hierclf.train.epoch.EpochStep` wraps it).
        blocks: the backbone's block parameter groups, stem first (for unfreezing).
        pipeline: where preprocessing and augmentation run.
        criterion: the training loss.
        optimizer, scheduler, scaler: the optimiser (one group per regime's parameter group), its per-step
            learning-rate schedule and the AMP gradient scaler.
        precision: autocast settings.
        sampler: the training batches of each epoch.
        metric: the selection metric; ``scorer`` computes it when it is an AUC (else None).
        data_fingerprint: what the run reads (:func:`hierclf.train.reuse.data_fingerprint`), kept in the
            checkpoint and ``DONE`` so that a resumed or reused run is known to have read the same data.
        preprocessing: the input side, mean and std every split is fed with (written to ``DONE``).
        identity: what the model is (tree, classes, backbone, preprocessing, version), saved in every
            checkpoint so that it can be used alone and never against another tree
            (:mod:`hierclf.train.identity`).
    """

    config: TrainConfig
    out: Path
    device: torch.device
    group: ProcessGroup
    seeds: SeedStreams
    taxonomy: Taxonomy
    sources: dict[str, Any]
    datasets: dict[str, Any]
    classes: tuple[str, ...]
    model: HierarchicalClassifier
    blocks: list[list[nn.Parameter]]
    pipeline: Pipeline
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    precision: Precision
    sampler: EpochBatchSampler
    metric: str
    scorer: Scorer | None
    data_fingerprint: str
    preprocessing: InputSettings
    identity: ModelIdentity

    @property
    def head(self) -> Any:
        """The model's ``LeafHead``."""
        return self.model.head


def build_run(config: TrainConfig, out: Path, device: torch.device, group: ProcessGroup) -> TrainingRun:
    """Build every object of the run, in the order that fixes its random draws (module docstring)."""
    seeds = SeedStreams(config.seed, group.rank)
    set_determinism(seeds.model_init, config.deterministic)
    taxonomy = Taxonomy.from_yaml(config.taxonomy)
    config.check_against(taxonomy)
    sources = load_sources(config, taxonomy, group)
    data = data_fingerprint(sources)
    chosen = head_classes(config, taxonomy, np.asarray(sources["train"].labels))
    model = _build_model(config, taxonomy, chosen, seeds)
    head: Any = model.head
    classes = tuple(head.classes)
    preprocessing = resolve_preprocessing(config, model.backbone.pretrained_input)
    logger.info(
        "inputs: %d px (%s), mean %s std %s (%s)",
        preprocessing.size,
        preprocessing.size_from,
        list(preprocessing.mean),
        list(preprocessing.std),
        preprocessing.stats_from,
    )
    pipeline = make_pipeline(config, device, preprocessing)
    datasets = build_datasets(
        sources,
        class_index_of(head, chosen.label_map),
        pipeline,
        leave_out_unmapped=chosen.leave_out_unmapped,
    )
    train_targets = datasets["train"].targets.numpy()
    counts = np.bincount(train_targets, minlength=len(classes))
    logger.info(
        "classes (%d): %s; training images per class: %s", len(classes), ", ".join(classes), counts.tolist()
    )
    metric = config.early_stopping.metric
    scorer = auc_scorer(metric, config, taxonomy, tuple(getattr(head, "cut", classes)))
    criterion = _build_loss(config, counts).to(device)
    model, blocks, optimizer = _place_and_optimise(model, config, device, group)
    sampler = _build_sampler(config, train_targets, len(classes), group)
    precision = Precision.of(config, device)
    return TrainingRun(
        config=config,
        out=out,
        device=device,
        group=group,
        seeds=seeds,
        taxonomy=taxonomy,
        sources=sources,
        datasets=datasets,
        classes=classes,
        model=model,
        blocks=blocks,
        pipeline=pipeline,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, len(sampler), config),
        scaler=precision.scaler(),
        precision=precision,
        sampler=sampler,
        metric=metric,
        scorer=scorer,
        data_fingerprint=data,
        preprocessing=preprocessing,
        identity=_identity(config, taxonomy, head, preprocessing),
    )


def _identity(
    config: TrainConfig, taxonomy: Taxonomy, head: Any, preprocessing: InputSettings
) -> ModelIdentity:
    """The model's record for its checkpoints: tree, classes, backbone recipe, preprocessing."""
    recipe = backbone_recipe(
        config.model_dump(mode="json")["backbone"],
        pretrained=bool(config.pretrained),
        in_size=input_size_of(config)[0],
    )
    return ModelIdentity.of(taxonomy, head, backbone=recipe, preprocessing=preprocessing.to_dict())


def _build_model(
    config: TrainConfig, taxonomy: Taxonomy, chosen: HeadClasses, seeds: SeedStreams
) -> HierarchicalClassifier:
    """Backbone + ``LeafHead`` over the chosen classes, initialised from the seed alone."""
    from hierclf.nn.head import LeafHead

    set_determinism(seeds.model_init, config.deterministic)  # the initial weights depend on the seed only
    try:
        backbone, n_features = create_backbone(
            config.backbone, pretrained=config.pretrained, in_size=input_size_of(config)[0]
        )
    except BackboneError as exc:  # a factory's contract: positioned in the config file it came from
        doc = config._source
        if doc is None:
            raise
        raise ConfigError([doc.problem(exc.field, str(exc), code="config")]) from None
    head = LeafHead(n_features, taxonomy, chosen.classes)
    return HierarchicalClassifier(backbone, head)


def _build_loss(config: TrainConfig, class_counts: np.ndarray) -> nn.Module:
    """``hierclf.nn.losses.build_loss`` with the config's options and the training split's class counts;
    ``loss: marginal`` (partial labels at internal nodes) also gets the tree and the head's classes."""
    from hierclf.nn.losses import build_loss

    loss_params = config.loss.params()
    if config.label_smoothing:
        loss_params["label_smoothing"] = config.label_smoothing
    _warn_stacked_remedies(config)
    if config.loss.name == "marginal":
        taxonomy, classes = _marginal_head(config)
        return build_loss(
            "marginal", class_counts=class_counts, taxonomy=taxonomy, classes=classes, **loss_params
        )
    return build_loss(config.loss.name, class_counts=class_counts, **loss_params)


def _marginal_head(config: TrainConfig) -> tuple[Taxonomy, tuple[str, ...] | None]:
    """The tree and the head's classes of ``loss: marginal``: the leaves or a cut (with Esteva's partition,
    images labelled at split nodes get residual classes or are dropped instead: docs/training-classes.md)."""
    from hierclf.train.errors import TrainSettingError

    kind = config.classes.kind
    if kind == "partition":
        raise TrainSettingError(
            "loss 'marginal' trains a head over the leaves or a cut (classes.kind: leaves or cut); a "
            "partition handles images labelled at split nodes with classes.internal_labels: residual or drop"
        )
    taxonomy = Taxonomy.from_yaml(config.taxonomy)
    classes = None if kind == "leaves" else taxonomy.cut(config.classes.nodes or [])
    return taxonomy, classes


def _warn_stacked_remedies(config: TrainConfig) -> None:
    """Class-balanced sampling and a class-weighted or focal loss both counter imbalance; stacked, rare
    classes are weighted twice. Seed 001 advises one remedy unless an ablation shows the pair helps."""
    weighted = config.loss.name == "weighted_ce" and config.loss.weights not in ("none",)
    focal = config.loss.name == "focal"
    if config.sampler != "uniform" and (weighted or focal):
        logger.warning(
            "sampler %r and loss %r both counter class imbalance; stacked, rare classes count twice "
            "(docs/training-classes.md: choose one, or keep both only after an ablation)",
            config.sampler,
            config.loss.name,
        )


def _place_and_optimise(
    model: HierarchicalClassifier, config: TrainConfig, device: torch.device, group: ProcessGroup
) -> tuple[HierarchicalClassifier, list[list[nn.Parameter]], torch.optim.Optimizer]:
    """The model on its device (with SyncBatchNorm under DDP on GPUs), its block groups and the optimiser."""
    model.to(device)
    if group.enabled and device.type == "cuda" and config.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    groups, blocks = param_groups(model, config)
    return model, blocks, make_optimizer(groups, config)


def _build_sampler(
    config: TrainConfig, train_targets: np.ndarray, n_classes: int, group: ProcessGroup
) -> EpochBatchSampler:
    """The epoch batches: a shuffled pass (``uniform``) or weighted draws of the config's sampler."""
    from hierclf.data.sampling import sampler_weights

    weights = (
        None
        if config.sampler == "uniform"
        else sampler_weights(train_targets, config.sampler, beta=config.sampler_beta, n_classes=n_classes)
    )
    return EpochBatchSampler(
        len(train_targets),
        config.batch_size,
        weights,
        seed=config.seed,
        world_size=group.world_size,
        rank=group.rank,
        max_steps=config.max_steps_per_epoch,
    )
