"""Predictions over a split and the validation metrics that select the best epoch.

Validation and test logits are computed on a strided shard per process and gathered, so every process
holds the same numbers (and early stopping decides the same everywhere). The selection metrics are
``val_loss``, ``val_accuracy`` and ``val_balanced_accuracy`` over the head's classes (images without a class,
:data:`hierclf.train.inputs.UNSCORED`, left out), or the AUC of a node or a protocol task computed from
probabilities over tree nodes, as the evaluation computes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from hierclf.evaluation import metrics
from hierclf.taxonomy.tree import Taxonomy
from hierclf.train.config import TrainConfig
from hierclf.train.errors import TrainSettingError
from hierclf.train.inputs import UNSCORED
from hierclf.train.seeding import seed_worker

__all__ = ["auc_scorer", "better", "file_probs", "predict", "softmax", "validation_metrics"]

#: ``(probs over tree nodes (n, n_columns), labels (n,)) -> AUC``
Scorer = Callable[[np.ndarray, np.ndarray], float]


class PredictingRun(Protocol):
    """What :func:`predict` reads of a run (:class:`hierclf.train.run.TrainingRun` has it), named here so
    that validation need not import the run that uses it."""

    @property
    def config(self) -> TrainConfig: ...

    @property
    def datasets(self) -> Any: ...

    @property
    def group(self) -> Any: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def pipeline(self) -> Any: ...

    @property
    def precision(self) -> Any: ...


@torch.no_grad()
def predict(run: PredictingRun, split: str) -> np.ndarray:
    """Logits ``(n, n_classes)`` float32 of ``split`` (``val`` or ``test``) in its order, gathered from
    every rank; the model is left in eval mode."""
    from torch.utils.data import DataLoader, Subset

    dataset, config, group = run.datasets[split], run.config, run.group
    n = len(dataset)
    mine = np.arange(group.rank, n, group.world_size)
    loader = DataLoader(
        Subset(dataset, mine.tolist()),
        batch_size=config.eval_batch_size or config.batch_size,
        shuffle=False,
        num_workers=config.workers,
        worker_init_fn=seed_worker,
        pin_memory=run.device.type == "cuda",
    )
    run.model.eval()
    chunks = []
    for images, _ in loader:
        images = images.to(run.device, non_blocking=True)
        if run.pipeline.eval_batch is not None:  # batched pipeline: uint8 in, preprocessing on the device
            images = run.pipeline.eval_batch(images)
        with run.precision.autocast():
            logits = run.model(images)
        chunks.append(logits.float().cpu().numpy())
    logits_np = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    if not group.enabled:
        return logits_np
    parts = group.gather((mine, logits_np))
    out = np.zeros((n, max(p.shape[1] for _, p in parts)), np.float32)
    for idx, p in parts:
        if len(idx):
            out[idx] = p
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, C)`` float32, computed in float64 (rows sum to 1 within float32 rounding)."""
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).float().numpy()


def file_probs(head: Any, logits: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Probabilities for prediction files and node metrics: over the head's classes, or, when the head has
    residual classes (a partition), over ``head.cut`` with each residual folded in (``LeafHead.cut_probs``),
    so that every column is a tree node."""
    if not getattr(head, "residual", ()):
        return softmax(logits), tuple(head.classes)
    with torch.no_grad():
        probs = head.cut_probs(torch.from_numpy(logits)).cpu().numpy().astype(np.float32)
    return probs, tuple(head.cut)


def validation_metrics(
    logits: np.ndarray,
    targets: np.ndarray,
    labels: np.ndarray,
    *,
    metric: str,
    scorer: Scorer | None,
    head: Any,
) -> dict[str, float]:
    """The class metrics of the validation logits ``(n, n_classes)``, and ``metric`` when it is an AUC.

    Args:
        logits: ``(n, n_classes)``.
        targets: ``(n,)`` class indices, :data:`~hierclf.train.inputs.UNSCORED` for images without a class
            (left out of the class metrics).
        labels: ``(n,)`` true node ids (every image counts for the AUC metrics).
        metric: the selection metric.
        scorer: :func:`auc_scorer`'s function for ``val_auc:`` and ``task_auc:`` metrics, else None.
        head: the ``LeafHead`` (for probabilities over tree nodes).
    """
    out = _class_metrics(softmax(logits), targets)
    if metric not in out:
        assert scorer is not None  # auc_scorer builds one for every metric that is not a class metric
        out[metric] = scorer(file_probs(head, logits)[0], labels)
    return out


def _class_metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Cross-entropy, accuracy and balanced accuracy over the images that have a class."""
    scored = targets != UNSCORED
    if not scored.all():
        probs, targets = probs[scored], targets[scored]
    if not len(targets):
        return {"val_loss": math.nan, "val_accuracy": math.nan, "val_balanced_accuracy": math.nan}
    p_true = np.clip(probs[np.arange(len(targets)), targets].astype(np.float64), 1e-12, 1.0)
    pred = probs.argmax(axis=1)
    return {
        "val_loss": float(-np.log(p_true).mean()),
        "val_accuracy": float((pred == targets).mean()),
        "val_balanced_accuracy": metrics.balanced_accuracy(targets, pred, probs.shape[1]),
    }


def auc_scorer(
    metric: str, config: TrainConfig, taxonomy: Taxonomy, classes: tuple[str, ...]
) -> Scorer | None:
    """For ``val_auc:<node>`` and ``task_auc:<task>``: a function ``(probs, labels) -> AUC``, with ``probs``
    over ``classes`` (tree nodes). Node and task scores come from the roll-up engine, AUC from
    :mod:`hierclf.evaluation.metrics`, so model selection measures what the evaluation reports.

    Raises:
        TrainSettingError: the metric's node (or a task's) lies below the head's classes, or a task metric
            has no protocol.
    """
    if ":" not in metric:
        return None
    from hierclf.functional import conditional, rollup

    def check_above(nodes: list[str], what: str) -> None:
        """Refuse nodes below the head's classes (their probability is not defined)."""
        for node in nodes:
            above = taxonomy.cut_node_above(node, classes)
            if above is not None:
                raise TrainSettingError(
                    f"{what}: node {node!r} lies below the head's classes (under {above!r}); "
                    "its probability is not defined"
                )

    idx = taxonomy.index

    def under(labels: np.ndarray, nodes: list[str]) -> np.ndarray:
        """``(n,)`` bool: the label is one of ``nodes`` or below one."""
        return idx.under_any(idx.rows_of(labels), idx.rows(nodes))

    kind, name = metric.split(":", 1)
    if kind == "val_auc":
        node = taxonomy.resolve(name)
        check_above([node], f"early_stopping.metric {metric!r}")

        def node_auc(probs: np.ndarray, labels: np.ndarray) -> float:
            """AUC of the node's rolled-up probability, label under the node against the rest; labels
            above the node (it may or may not hold them) are left out, as the evaluation leaves them out."""
            rows = idx.rows_of(labels)
            y = idx.is_under(rows, idx.position[node])
            keep = y | ~idx.is_under(idx.position[node], rows)
            y = y[keep]
            if y.all() or not y.any():
                return float("nan")
            return metrics.roc_auc(y, rollup(probs[keep], taxonomy, [node], columns=classes)[:, 0])

        return node_auc
    from hierclf.evaluation.protocol_format import load_protocol

    if config.protocol is None:
        raise TrainSettingError(
            f"early_stopping.metric {metric!r} names a protocol task but no protocol is set"
        )
    task = load_protocol(config.protocol, taxonomy).task(name)
    check_above([*task.positive, *task.negative], f"task {name!r}")

    def task_auc(probs: np.ndarray, labels: np.ndarray) -> float:
        """AUC of P(pos) / (P(pos) + P(neg)) on the images under either side."""
        pos, neg = under(labels, list(task.positive)), under(labels, list(task.negative))
        keep = pos | neg
        if pos.sum() == 0 or neg.sum() == 0:
            return float("nan")
        score = conditional(probs[keep], taxonomy, list(task.positive), list(task.negative), columns=classes)
        return metrics.roc_auc(pos[keep], score)

    return task_auc


def better(value: float, best: float | None, mode: str) -> bool:
    """True when ``value`` is finite and improves on ``best`` (None: nothing yet) in ``mode`` (min, max)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best
