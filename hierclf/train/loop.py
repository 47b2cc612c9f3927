"""A thin, resumable training loop in plain PyTorch: a backbone and a :class:`~hierclf.nn.head.LeafHead`.

``fit(config)`` trains and writes into ``config.out_dir``::

    config.resolved.yaml      every setting, defaults filled in, paths absolute
    checkpoint.pt             the state after the last finished epoch (model, optimiser, schedule, AMP scaler,
                              RNG states of every rank, early-stopping state, history); written each epoch
    best.pt                   model weights of the best epoch on the validation metric
    history.json              one record per epoch (losses, validation metrics, learning rate, time)
    predictions/val.npz       probabilities over the head's classes for validation and test, from the best
    predictions/test.npz      epoch, with true node ids, sample ids and groups
    (``hierclf.evaluation.prediction_files``)
    DONE                      written last; a finished run called again returns at once

What the loop does, in order: seeds everything (``hierclf.train.seeding``); loads the taxonomy and the data
(DermaMNIST through medmnist, a generated npz, or users' CSVs); builds the head's classes (leaves, Esteva's
partition or a given cut); builds backbone + head and the optimiser's parameter groups for the regime
(``linear_probe``, ``full``, ``gradual_unfreeze`` with per-block learning rates); then per epoch trains on
batches whose order is a pure function of ``(seed, epoch)`` (so a resumed run sees exactly the same data),
evaluates on validation, keeps the best weights and writes a checkpoint atomically.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) each process takes an equal slice of every global
batch (``batch_size`` is the global batch), gradients are averaged by DDP (gloo on CPU, NCCL on GPU),
validation and test predictions are gathered, and rank 0 alone writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hierclf.errors import HierclfError
from hierclf.evaluation import metrics
from hierclf.io.atomic import atomic_open, atomic_write_text
from hierclf.nn.backbones import Backbone, backbone_parameters_by_block, create_backbone
from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.config import TrainConfig, load_train_config
from hierclf.train.seeding import get_rng_state, seed_worker, set_determinism, set_rng_state

logger = logging.getLogger(__name__)

__all__ = ["EpochBatchSampler", "FitResult", "HierarchicalClassifier", "TrainConfig", "fit", "lr_factor"]

CHECKPOINT, BEST, HISTORY, DONE, RESOLVED = (
    "checkpoint.pt",
    "best.pt",
    "history.json",
    "DONE",
    "config.resolved.yaml",
)
#: settings that may change between a run and its resumption (they do not change what is computed)
_RESUME_FREE = {
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
}


# --------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit` did and where its outputs are.

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

    def to_dict(self) -> dict[str, Any]:
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
        }


class HierarchicalClassifier(nn.Module):
    """Backbone + head: ``forward(images (batch, C, H, W)) -> logits (batch, n_classes)``.

    ``head`` is a :class:`~hierclf.nn.head.LeafHead`; ``head.rollup(logits, nodes)`` turns the logits into
    node probabilities, ``head.classes`` names the logit columns.
    """

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


# --------------------------------------------------------------------------------------------------------
# Data order and schedule
# --------------------------------------------------------------------------------------------------------


class EpochBatchSampler:
    """Batches of indices whose order depends only on ``(seed, epoch)``; in DDP each rank takes a slice.

    Every rank draws the same global order for an epoch (a permutation for uniform sampling, or
    ``n`` draws with replacement from ``weights`` for class-balanced sampling), cuts it into global batches
    of ``batch_size`` and yields its own contiguous share of each batch (``batch_size / world_size``
    samples). A single process and ``N`` processes therefore see the same global batches, and a run resumed
    at epoch ``e`` sees the same batches as one that never stopped. This is the distributed form of
    ``hierclf.data.sampling.make_sampler`` (same weights, ``hierclf.data.sampling.sampler_weights``).

    Args:
        n: dataset size.
        batch_size: the global batch size (divisible by ``world_size``).
        weights: per-sample draw weights ``(n,)``, or None for a shuffled pass over all samples.
        seed: base seed.
        world_size, rank: the process group (1, 0 when not distributed).
        drop_last: drop the final incomplete global batch (default True when ``n >= batch_size``).
        max_steps: cap on batches per epoch.

    Example:
        >>> s = EpochBatchSampler(10, 4, seed=0)
        >>> len(s), sorted(i for b in s for i in b) == sorted(set(i for b in s for i in b))
        (2, True)
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        weights: torch.Tensor | None = None,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
        drop_last: bool | None = None,
        max_steps: int | None = None,
    ) -> None:
        if n <= 0:
            raise HierclfError("the training split is empty")
        if batch_size % world_size:
            raise HierclfError(
                f"batch_size {batch_size} (the global batch) must be divisible by the number "
                f"of processes ({world_size})"
            )
        self.n, self.batch_size, self.weights = n, batch_size, weights
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.drop_last = (n >= batch_size) if drop_last is None else drop_last
        self.max_steps = max_steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> torch.Tensor:
        """The indices of the epoch in order, identical on every rank: ``(n,)`` int64."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights.double(), self.n, replacement=True, generator=g)

    def __len__(self) -> int:
        steps = self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)
        return max(1, min(steps, self.max_steps)) if self.max_steps else max(1, steps)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.global_order()
        for step in range(len(self)):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield torch.tensor_split(batch, self.world_size)[self.rank].tolist()


def lr_factor(
    step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine", min_ratio: float = 0.0
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warmup from ``1/warmup_steps`` to 1 over the first ``warmup_steps`` steps, then cosine decay to
    ``min_ratio`` at ``total_steps`` (or constant 1).

    Example:
        >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def _init_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return _Dist(rank, world, local, False)
    if not dist.is_available():
        raise HierclfError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives (all_gather_object, barrier) use the current device
    if backend == "gloo" and not dist.is_gloo_available():
        raise HierclfError("distributed training on CPU needs the gloo backend, which this torch lacks")
    dist.init_process_group(backend=backend)
    logger.info("process group: %s, rank %d of %d", backend, rank, world)
    return _Dist(rank, world, local, True)


def _pick_device(spec: str) -> torch.device:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HierclfError(
                f"device {spec!r} requested but CUDA is not available (use device: cpu or auto)"
            )
        if spec == "cuda":
            return torch.device("cuda", local if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0)
    return torch.device(spec)


# --------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Split:
    source: Any  # an hierclf.data.datasets.ImageSource: labels, ids, groups, load_image
    name: str


def _load_sources(config: TrainConfig, taxonomy: Taxonomy, ddp: _Dist) -> dict[str, Any]:
    from hierclf.data import datasets as hdata

    d = config.data
    if d.source == "csv":
        assert d.csv is not None  # checked with the config
        c = d.csv
        return {
            split: hdata.CsvImageDataset(
                getattr(c, split),
                taxonomy,
                image_root=c.image_root,
                path_column=c.path_column,
                label_column=c.label_column,
                group_column=c.group_column,
                id_column=c.id_column,
            )
            for split in ("train", "val", "test")
        }
    npz = d.npz
    if d.source == "synthetic":
        s = d.synthetic
        npz = Path(d.root) / (
            f"synthetic_dermamnist_{d.size}px_{s.n_train}-{s.n_val}-{s.n_test}"
            f"_seed{s.seed}_noise{s.noise:g}.npz"
        )
        if ddp.main and not npz.is_file():
            hdata.make_synthetic_dermamnist(
                npz,
                size=d.size,
                n_train=s.n_train,
                n_val=s.n_val,
                n_test=s.n_test,
                seed=s.seed,
                noise=s.noise,
            )
            logger.info("generated synthetic DermaMNIST-layout data %s", npz)
        ddp.barrier()
    download = d.download and d.source == "dermamnist"
    if download and not ddp.main:
        ddp.barrier()  # rank 0 downloads first
    sources = {
        split: hdata.load_dermamnist(
            d.root, split, d.size, download=download and split == "train", taxonomy=taxonomy, npz=npz
        )
        for split in ("train", "val", "test")
    }
    if download and ddp.main:
        ddp.barrier()
    return sources


def _classes(
    config: TrainConfig, taxonomy: Taxonomy, train_labels: np.ndarray
) -> tuple[tuple[str, ...] | None, dict[str, str] | None]:
    """The head's classes (None = leaves) and, for a partition, its label map (node -> class)."""
    kind = config.classes.kind
    if kind == "leaves":
        return None, None
    if kind == "cut":
        nodes = [taxonomy.resolve(n) for n in config.classes.nodes or []]
        return tuple(taxonomy.cut(nodes)), None
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
    return tuple(part.classes), dict(part.label_map)


def _param_groups(
    model: HierarchicalClassifier, config: TrainConfig
) -> tuple[list[dict[str, Any]], list[list[nn.Parameter]]]:
    """Optimiser groups (head first) and the backbone's block parameter groups (stem first)."""
    blocks = backbone_parameters_by_block(model.backbone)
    head = {"params": list(model.head.parameters()), "lr": config.lr, "name": "head"}
    if config.regime == "linear_probe":
        return [head], blocks
    if config.regime == "full":
        return [head, {"params": [p for b in blocks for p in b], "lr": config.lr, "name": "backbone"}], blocks
    groups = [head]
    for depth, params in enumerate(reversed(blocks), start=1):  # nearest the head first
        groups.append(
            {
                "params": params,
                "lr": config.lr * config.lr_decay**depth,
                "name": f"block{len(blocks) - depth}",
            }
        )
    return groups, blocks


def _unfrozen_blocks(config: TrainConfig, epoch: int, n_blocks: int) -> int:
    """How many backbone block groups (counted from the head) train in ``epoch`` (0-based)."""
    if config.regime == "linear_probe":
        return 0
    if config.regime == "full":
        return n_blocks
    return min(n_blocks, epoch // config.unfreeze_every)


def _set_trainable(model: HierarchicalClassifier, blocks: list[list[nn.Parameter]], n_unfrozen: int) -> None:
    frozen = len(blocks) - n_unfrozen
    for i, params in enumerate(blocks):
        for p in params:
            p.requires_grad_(i >= frozen)


def _set_modes(model: HierarchicalClassifier, config: TrainConfig, n_unfrozen: int) -> None:
    """Train mode, except frozen blocks and (with ``freeze_batchnorm``) BatchNorm layers stay in eval."""
    model.train()
    block_modules = model.backbone.blocks()
    frozen = len(block_modules) - n_unfrozen
    if n_unfrozen == 0:
        model.backbone.eval()
    else:
        for modules in block_modules[:frozen]:
            for m in modules:
                m.eval()
    if config.freeze_batchnorm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _make_optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    for g in groups:
        g["initial_lr"] = g["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


# --------------------------------------------------------------------------------------------------------
# Evaluation during training
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _predict(
    model: nn.Module,
    dataset: Any,
    config: TrainConfig,
    device: torch.device,
    ddp: _Dist,
    autocast: Any,
    batch_tf: nn.Module | None = None,
) -> np.ndarray:
    """Logits ``(n, n_classes)`` float32 over the whole dataset in its order, gathered from every rank."""
    from torch.utils.data import DataLoader, Subset

    n = len(dataset)
    mine = np.arange(ddp.rank, n, ddp.world_size)
    loader = DataLoader(
        Subset(dataset, mine.tolist()),
        batch_size=config.eval_batch_size or config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    chunks = []
    for images, _ in loader:
        images = images.to(device, non_blocking=True)
        if batch_tf is not None:  # batched pipeline: uint8 in, preprocessing on the device
            images = batch_tf(images)
        with autocast():
            logits = model(images)
        chunks.append(logits.float().cpu().numpy())
    logits_np = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    if not ddp.enabled:
        return logits_np
    parts = ddp.gather((mine, logits_np))
    out = np.zeros((n, max(p.shape[1] for _, p in parts)), np.float32)
    for idx, p in parts:
        if len(idx):
            out[idx] = p
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, C)`` float32, computed in float64 (rows sum to 1 within float32 rounding)."""
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).float().numpy()


def _file_probs(head: Any, logits: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Probabilities for prediction files and node metrics: over the head's classes, or, when the head has
    residual classes (a partition), over ``head.cut`` with each residual folded in (``LeafHead.cut_probs``),
    so that every column is a tree node."""
    if not getattr(head, "residual", ()):
        return _softmax(logits), tuple(head.classes)
    with torch.no_grad():
        probs = head.cut_probs(torch.from_numpy(logits)).cpu().numpy().astype(np.float32)
    return probs, tuple(head.cut)


def _metrics(
    logits: np.ndarray, targets: np.ndarray, labels: np.ndarray, metric: str, scorer: Any, head: Any
) -> dict[str, float]:
    probs = _softmax(logits)
    p_true = np.clip(probs[np.arange(len(targets)), targets].astype(np.float64), 1e-12, 1.0)
    pred = probs.argmax(axis=1)
    out = {
        "val_loss": float(-np.log(p_true).mean()),
        "val_accuracy": float((pred == targets).mean()),
        "val_balanced_accuracy": metrics.balanced_accuracy(targets, pred, probs.shape[1]),
    }
    if metric not in out:
        out[metric] = scorer(_file_probs(head, logits)[0], labels)
    return out


def _auc_scorer(metric: str, config: TrainConfig, taxonomy: Taxonomy, classes: tuple[str, ...]) -> Any:
    """For ``val_auc:<node>`` and ``task_auc:<task>``: a function ``(probs, labels) -> AUC``, with ``probs``
    over ``classes`` (tree nodes). Node and task scores come from the roll-up engine, AUC from
    :mod:`hierclf.evaluation.metrics`, so model selection measures what the evaluation reports."""
    if ":" not in metric:
        return None
    from hierclf.functional import conditional, rollup

    def check_above(nodes: list[str], what: str) -> None:
        for node in nodes:
            above = taxonomy.cut_node_above(node, classes)
            if above is not None:
                raise HierclfError(
                    f"{what}: node {node!r} lies below the head's classes (under {above!r}); "
                    "its probability is not defined"
                )

    def under(labels: np.ndarray, nodes: list[str]) -> np.ndarray:
        members = set().union(*({n, *taxonomy.descendants(n)} for n in nodes))
        return np.isin(labels, sorted(members))

    kind, name = metric.split(":", 1)
    if kind == "val_auc":
        node = taxonomy.resolve(name)
        check_above([node], f"early_stopping.metric {metric!r}")

        def node_auc(probs: np.ndarray, labels: np.ndarray) -> float:
            y = under(labels, [node])
            if y.all() or not y.any():
                return float("nan")
            return metrics.roc_auc(y, rollup(probs, taxonomy, [node], columns=classes)[:, 0])

        return node_auc
    from hierclf.evaluation.protocol_format import load_protocol

    if config.protocol is None:
        raise HierclfError(f"early_stopping.metric {metric!r} names a protocol task but no protocol is set")
    task = load_protocol(config.protocol, taxonomy).task(name)
    check_above([*task.positive, *task.negative], f"task {name!r}")

    def task_auc(probs: np.ndarray, labels: np.ndarray) -> float:
        pos, neg = under(labels, list(task.positive)), under(labels, list(task.negative))
        keep = pos | neg
        if pos.sum() == 0 or neg.sum() == 0:
            return float("nan")
        score = conditional(probs[keep], taxonomy, list(task.positive), list(task.negative), columns=classes)
        return metrics.roc_auc(pos[keep], score)

    return task_auc


def _better(value: float, best: float | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


# --------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------


def _save(obj: dict[str, Any], path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HierclfError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc} (delete it or run with --no-resume)"
        ) from exc


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _check_same_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    a, b = _flat(saved), _flat(current)
    diff = [k for k in sorted(set(a) | set(b)) if k not in _RESUME_FREE and a.get(k) != b.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:6])
        raise HierclfError(
            f"cannot resume from {path}: it was trained with other settings ({shown}); "
            "use --no-resume to start over, or another out_dir"
        )


def _finished_result(out: Path) -> FitResult:
    summary = json.loads((out / DONE).read_text(encoding="utf-8"))
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
    )


# --------------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------------


def fit(
    config: TrainConfig | str | Path,
    resume: bool = True,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
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
        HierclfError: bad settings or data (one clear line each), or a checkpoint from other settings.
    """
    config = config.resolved(Path.cwd()) if isinstance(config, TrainConfig) else load_train_config(config)
    out = Path(config.out_dir)
    device = _pick_device(config.device)
    ddp = _init_distributed(device)
    try:
        return _fit(config, out, device, ddp, resume, progress, stop_after_epochs, on_epoch)
    finally:
        if ddp.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _fit(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    ddp: _Dist,
    resume: bool,
    progress: bool,
    stop_after_epochs: int | None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    from hierclf.data.datasets import TaxonomyImageDataset
    from hierclf.data.sampling import sampler_weights
    from hierclf.data.transforms import BatchTransform, eval_transform, to_uint8, train_transform
    from hierclf.evaluation.prediction_files import Predictions, write_predictions
    from hierclf.nn.head import LeafHead
    from hierclf.nn.losses import build_loss

    if resume and (out / DONE).is_file():
        logger.info("%s is finished (DONE exists); nothing to train", out)
        return _finished_result(out)
    if ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in (DONE, CHECKPOINT, BEST):
                (out / name).unlink(missing_ok=True)
        atomic_write_text(
            out / RESOLVED, "# written by hierclf train: every setting of this run\n" + config.to_yaml()
        )
    ddp.barrier()

    set_determinism(config.seed, config.deterministic)
    taxonomy = Taxonomy.from_yaml(config.taxonomy)
    config.check_against(taxonomy)
    sources = _load_sources(config, taxonomy, ddp)
    classes, label_map = _classes(config, taxonomy, np.asarray(sources["train"].labels))

    set_determinism(config.seed, config.deterministic)  # the model's initial weights depend on the seed only
    backbone, n_features = create_backbone(
        config.backbone, pretrained=config.pretrained, in_size=config.data.size
    )
    head = LeafHead(n_features, taxonomy, classes)
    classes = tuple(head.classes)
    model = HierarchicalClassifier(backbone, head)
    if label_map is not None:
        position = {c: i for i, c in enumerate(classes)}
        class_index: Any = {node: position[cls] for node, cls in label_map.items()}
    else:
        class_index = head.class_index
    size = config.data.size
    pipeline = config.data.pipeline
    if pipeline == "auto":
        pipeline = "batched" if device.type == "cuda" else "per_sample"
    train_batch_tf: nn.Module | None = None
    eval_batch_tf: nn.Module | None = None
    if pipeline == "batched":  # datasets give uint8 tensors; augmentation + preprocessing run on the device
        train_tf: Any = to_uint8(size)
        eval_tf: Any = to_uint8(size)
        train_batch_tf = BatchTransform(size, augment=config.data.augment).to(device)
        eval_batch_tf = BatchTransform(size, augment=False).to(device)
    else:
        train_tf = train_transform(size) if config.data.augment else eval_transform(size)
        eval_tf = eval_transform(size)
    datasets = {"train": TaxonomyImageDataset(sources["train"], class_index, transform=train_tf)}
    for split in ("val", "test"):
        datasets[split] = TaxonomyImageDataset(sources[split], class_index, transform=eval_tf)
    train_targets = datasets["train"].targets.numpy()
    counts = np.bincount(train_targets, minlength=len(classes))
    logger.info(
        "classes (%d): %s; training images per class: %s", len(classes), ", ".join(classes), counts.tolist()
    )

    metric = config.early_stopping.metric
    file_columns = tuple(getattr(head, "cut", classes))
    scorer = _auc_scorer(metric, config, taxonomy, file_columns)
    loss_params = config.loss.params()
    if config.label_smoothing:
        loss_params["label_smoothing"] = config.label_smoothing
    criterion = build_loss(config.loss.name, class_counts=counts, **loss_params).to(device)

    model.to(device)
    if ddp.enabled and device.type == "cuda" and config.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    groups, blocks = _param_groups(model, config)
    optimizer = _make_optimizer(groups, config)
    weights = (
        None
        if config.sampler == "uniform"
        else sampler_weights(train_targets, config.sampler, beta=config.sampler_beta, n_classes=len(classes))
    )
    sampler = EpochBatchSampler(
        len(datasets["train"]),
        config.batch_size,
        weights,
        seed=config.seed,
        world_size=ddp.world_size,
        rank=ddp.rank,
        max_steps=config.max_steps_per_epoch,
    )
    steps = len(sampler)
    total = steps * config.epochs
    warmup = min(total, round(config.warmup_epochs * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, config.schedule, config.min_lr_ratio)
    )
    use_amp = (device.type == "cuda") if config.amp == "auto" else bool(config.amp)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext()

    # -- resume ----------------------------------------------------------------------------------------
    start_epoch, best, best_epoch, stale, history = 0, None, 0, 0, []
    current = config.model_dump(mode="json")
    if resume and (out / CHECKPOINT).is_file():
        ckpt = _load(out / CHECKPOINT)
        _check_same_config(ckpt["config"], current, out / CHECKPOINT)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        states = ckpt["rng"]
        set_rng_state(states[ddp.rank] if len(states) == ddp.world_size else states[0])
        start_epoch, best, best_epoch = ckpt["epoch"], ckpt["best"], ckpt["best_epoch"]
        stale, history = ckpt["stale"], list(ckpt["history"])
        logger.info("resuming %s after epoch %d", out, start_epoch)
    elif ddp.enabled:
        torch.manual_seed(config.seed + 7919 * ddp.rank)  # different augmentations on each rank
    resumed_from = start_epoch

    # -- train -----------------------------------------------------------------------------------------
    from torch.utils.data import DataLoader

    tqdm_off = not progress or not ddp.main or not sys.stderr.isatty()
    val_targets = datasets["val"].targets.numpy()
    val_labels = np.asarray(sources["val"].labels)
    wrapped: nn.Module = model
    wrapped_for: int | None = None
    stopped_early = False
    n_blocks = len(blocks)
    last_epoch = (
        config.epochs if stop_after_epochs is None else min(config.epochs, start_epoch + stop_after_epochs)
    )
    for epoch in range(start_epoch, last_epoch):
        if best is not None and config.early_stopping.patience and stale >= config.early_stopping.patience:
            stopped_early = True
            break
        started = time.perf_counter()
        n_unfrozen = _unfrozen_blocks(config, epoch, n_blocks)
        _set_trainable(model, blocks, n_unfrozen)
        if ddp.enabled and wrapped_for != n_unfrozen:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
            wrapped_for = n_unfrozen
        _set_modes(model, config, n_unfrozen)
        sampler.set_epoch(epoch)
        loader = DataLoader(
            datasets["train"],
            batch_sampler=sampler,
            num_workers=config.workers,
            worker_init_fn=seed_worker,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch),
        )
        # batched augmentation draws from a generator seeded by (seed, epoch, rank): exact on resume
        augment_gen = torch.Generator().manual_seed((config.seed * 1_000_003 + epoch) * 4099 + ddp.rank)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_seen = 0
        bar = _progress(loader, epoch, config.epochs, tqdm_off)
        for images, targets in bar:
            images = images.to(device, non_blocking=True)
            if train_batch_tf is not None:
                images = train_batch_tf(images, generator=augment_gen)
            targets = targets.to(device, non_blocking=True)
            with autocast():
                logits = wrapped(images)
            loss = criterion(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach().double() * len(targets)
            n_seen += len(targets)
            if not tqdm_off:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        if ddp.enabled:
            totals = torch.stack([loss_sum, torch.tensor(float(n_seen), dtype=torch.float64, device=device)])
            dist.all_reduce(totals)
            loss_sum, n_seen = totals[0], int(totals[1].item())
        val_logits = _predict(model, datasets["val"], config, device, ddp, autocast, eval_batch_tf)
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(loss_sum.item()) / max(1, n_seen)}
        record.update(_metrics(val_logits, val_targets, val_labels, metric, scorer, head))
        record.update(
            {
                "lr": optimizer.param_groups[0]["lr"],
                "unfrozen_blocks": n_unfrozen,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        history.append(record)
        value = record[metric]
        if _better(value, best, config.early_stopping.mode):
            best, best_epoch, stale = value, epoch + 1, 0
            if ddp.main:
                _save(
                    {
                        "model": model.state_dict(),
                        "epoch": epoch + 1,
                        "metric": metric,
                        "value": value,
                        "classes": list(classes),
                    },
                    out / BEST,
                )
        else:
            stale += 1
        rng = ddp.gather(get_rng_state())
        if ddp.main:
            _save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "best": best,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "history": history,
                    "rng": rng,
                    "config": current,
                    "classes": list(classes),
                },
                out / CHECKPOINT,
            )
        ddp.barrier()
        logger.info(
            "epoch %d/%d: train loss %.4f, %s %.4f (best %s at epoch %d)",
            epoch + 1,
            config.epochs,
            record["train_loss"],
            metric,
            value,
            best,
            best_epoch,
        )
        if on_epoch is not None and ddp.main:
            on_epoch(dict(record))
    if (
        best is not None
        and config.early_stopping.patience
        and stale >= config.early_stopping.patience
        and len(history) < config.epochs
    ):
        stopped_early = True
    if len(history) < config.epochs and not stopped_early:  # stop_after_epochs: a partial run
        return FitResult(
            out_dir=out,
            classes=classes,
            epochs_run=len(history),
            best_epoch=best_epoch,
            best_metric=float(best) if best is not None else float("nan"),
            metric=metric,
            history=history,
            checkpoint=out / CHECKPOINT,
            resumed_from=resumed_from,
            finished=False,
        )

    # -- predictions from the best epoch ---------------------------------------------------------------
    if (out / BEST).is_file():
        model.load_state_dict(_load(out / BEST)["model"])
    else:  # no finite metric in any epoch: keep the last weights
        logger.warning("no epoch had a finite %s; predictions come from the last epoch", metric)
        best_epoch = len(history)
    paths = {}
    for split in ("val", "test"):
        probs, columns = _file_probs(
            head, _predict(model, datasets[split], config, device, ddp, autocast, eval_batch_tf)
        )
        src = sources[split]
        path = out / "predictions" / f"{split}.npz"
        if ddp.main:
            sample_groups = None if src.groups is None else np.asarray(src.groups)
            write_predictions(
                path,
                Predictions(
                    probs,
                    columns,
                    ids=np.asarray(src.ids),
                    labels=np.asarray(src.labels),
                    groups=sample_groups,
                ),
            )
        paths[split] = path
    result = FitResult(
        out_dir=out,
        classes=classes,
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_metric=float(best) if best is not None else float("nan"),
        metric=metric,
        history=history,
        predictions=paths,
        checkpoint=out / CHECKPOINT,
        resumed_from=resumed_from,
        stopped_early=stopped_early,
    )
    if ddp.main:
        atomic_write_text(out / HISTORY, json.dumps(history, indent=2) + "\n")
        atomic_write_text(out / DONE, json.dumps(result.to_dict(), indent=2) + "\n")
    ddp.barrier()
    return result


def _progress(loader: Any, epoch: int, epochs: int, disable: bool) -> Any:
    if disable:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
