"""Training regimes: which parameters train, at which learning rate, and in which mode, epoch by epoch.

``linear_probe`` trains the head only; ``full`` trains everything at ``lr``; ``gradual_unfreeze`` gives the
backbone block group *k* below the head ``lr * lr_decay**k`` and unfreezes one more group every
``unfreeze_every`` epochs, from the head downwards (docs/training.md, Regimes).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hierclf.nn.backbones import backbone_parameters_by_block
from hierclf.train.config import TrainConfig
from hierclf.train.model import HierarchicalClassifier

__all__ = ["param_groups", "set_modes", "set_trainable", "unfrozen_blocks"]


def param_groups(
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


def unfrozen_blocks(config: TrainConfig, epoch: int, n_blocks: int) -> int:
    """How many backbone block groups (counted from the head) train in ``epoch`` (0-based)."""
    if config.regime == "linear_probe":
        return 0
    if config.regime == "full":
        return n_blocks
    return min(n_blocks, epoch // config.unfreeze_every)


def set_trainable(blocks: list[list[nn.Parameter]], n_unfrozen: int) -> None:
    """Gradients for the ``n_unfrozen`` block groups nearest the head only."""
    frozen = len(blocks) - n_unfrozen
    for i, params in enumerate(blocks):
        for p in params:
            p.requires_grad_(i >= frozen)


def set_modes(model: HierarchicalClassifier, config: TrainConfig, n_unfrozen: int) -> None:
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
