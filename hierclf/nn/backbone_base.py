"""What every backbone is: :class:`Backbone` (a feature extractor with its block groups), the input its
pretrained weights expect (:class:`PretrainedInput`) and :class:`BackboneError`.

Kept below the three ways of building one (:mod:`hierclf.nn.backbones`' registry,
:mod:`hierclf.nn.timm_models`, :mod:`hierclf.nn.backbone_factory`), so that each builds the same type without
importing the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hierclf.errors import HierclfError

__all__ = ["Backbone", "BackboneError", "PretrainedInput"]


class BackboneError(HierclfError, ValueError):
    """A backbone cannot be built as asked: a factory that cannot be imported or breaks its contract, or
    weights that do not fit the network. ``field`` names the config key it concerns (``backbone.factory``)."""

    def __init__(self, message: str, *, field: tuple[str, ...] = ("backbone",)) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PretrainedInput:
    """The input a backbone's pretrained weights expect: side in pixels, per-channel mean and std.

    Attributes:
        size: input height = width the weights were trained (or evaluated) at; None when any size is fine.
        mean, std: RGB normalisation statistics.
        source: where the values come from (for logs and ``preprocessing.json``).
    """

    size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str


class Backbone(nn.Module):
    """A feature extractor: ``forward(images (batch, C, H, W)) -> features (batch, n_features)``.

    Attributes:
        name: what it was built from (a registry name, ``timm/<model>``, or ``factory:<module:function>``).
        body: the wrapped network (torchvision's or timm's with its classifier removed, hierclf's own, or the
            module a factory returned).
        n_features: width of the feature vector.
        block_paths: groups of dotted sub-module paths into ``body``, ordered from the input (stem) to the
            output; ``blocks()`` resolves them. Used by gradual unfreezing.
        input_size: when set, inputs of another spatial size are resized (bilinear) to this size first
            (torchvision's ViT with pretrained position embeddings needs 224 x 224).
        pretrained_input: the resolution and normalisation of its pretrained weights (None without them).
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        n_features: int,
        block_paths: Sequence[Sequence[str]],
        input_size: int | None = None,
        pretrained_input: PretrainedInput | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.n_features = int(n_features)
        self.block_paths = tuple(tuple(group) for group in block_paths)
        self.input_size = input_size
        self.pretrained_input = pretrained_input

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, C, H, W)`` images to ``(batch, n_features)`` features."""
        if self.input_size is not None and tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            images = F.interpolate(
                images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return self.body(images)

    def blocks(self) -> list[list[nn.Module]]:
        """The block groups as modules, from the stem (first) to the block nearest the head (last)."""
        return [[self.body.get_submodule(p) for p in group] for group in self.block_paths]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, n_features={self.n_features}, blocks={len(self.block_paths)}"
