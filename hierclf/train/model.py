"""The trained model: a backbone and a taxonomy head."""

from __future__ import annotations

import torch
from torch import nn

from hierclf.nn.backbones import Backbone

__all__ = ["HierarchicalClassifier"]


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
        """Logits ``(batch, n_classes)`` of images ``(batch, C, H, W)``."""
        return self.head(self.backbone(images))
