"""Models ready to predict: :class:`TrainedModel` (one checkpoint) and :class:`ModelEnsemble` (several).

Both models map an image batch to probabilities over their **columns**, the columns of the prediction files
training writes (the head's classes, or ``head.cut`` with residual classes folded in), so that
``hierclf predict`` on the test images gives the numbers of ``predictions/test.npz``:

* input ``(batch, 3, size, size)`` RGB, either ``uint8`` in ``[0, 255]`` or floating in ``[0, 1]``, already
  resized to the model's side (``model.size``; :mod:`hierclf.inference.images` resizes as training did);
* inside: ``x / 255`` for uint8, ``(x - mean) / std`` with the checkpoint's statistics, the backbone, the
  head, the softmax (float32), the residual fold;
* output ``(batch, n_columns)`` float32, rows summing to 1.

:class:`hierclf.inference.scoring.ScoringGraph` adds the named nodes, task scores and decisions on top.

The seed ensemble's probabilities are the mean of its members' (each rolled up to the finest cut that all
members determine when their columns differ). Everything is a ``torch.nn.Module``: ``.to(device)``,
``torch.export`` and ONNX work on it (:mod:`hierclf.inference.export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from hierclf.errors import HierclfError
from hierclf.evaluation.ensembles import finest_common_cut
from hierclf.nn.rollup_modules import RollUp
from hierclf.taxonomy.tree import Taxonomy

if TYPE_CHECKING:
    from hierclf.inference.thresholds import TaskThreshold
    from hierclf.nn.backbones import Backbone
    from hierclf.nn.head import LeafHead
    from hierclf.train.identity import ModelIdentity

__all__ = ["ModelEnsemble", "TrainedModel"]


class _Normalise(nn.Module):
    """``(batch, 3, H, W)`` uint8 in [0, 255] or float in [0, 1] -> float32 ``(x - mean) / std``, the
    preprocessing of :func:`hierclf.data.transforms.preprocess`."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.mean) / self.std


class TrainedModel(nn.Module):
    """One trained model: preprocessing, backbone, :class:`~hierclf.nn.head.LeafHead` and roll-up.

    Build it with :func:`hierclf.inference.load_model`. ``forward(images)`` gives probabilities over
    :attr:`columns` (module docstring); :meth:`node_probabilities` any node at or above them.

    Attributes:
        identity: the checkpoint's :class:`~hierclf.train.identity.ModelIdentity`.
        taxonomy: the tree the model was trained on.
        columns: names of the output columns (tree nodes).
        size: the side of the input images.
        thresholds: the operating points stored with the checkpoint, by task (may be empty).
        source: the checkpoint file.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: LeafHead,
        identity: ModelIdentity,
        *,
        thresholds: dict[str, TaskThreshold] | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        self.normalise = _Normalise(identity.preprocessing["mean"], identity.preprocessing["std"])
        self.backbone = backbone
        self.head = head
        self.identity = identity
        self.taxonomy: Taxonomy = head.taxonomy
        self.columns: tuple[str, ...] = tuple(head.cut)
        self.size = identity.size
        self.thresholds = dict(thresholds or {})
        self.source = source
        self._folds = bool(head.residual)

    def logits(self, images: Tensor) -> Tensor:
        """``(batch, n_classes)`` logits over the head's classes."""
        return self.head(self.backbone(self.normalise(images)))

    def forward(self, images: Tensor) -> Tensor:
        """``(batch, n_columns)`` float32 probabilities over :attr:`columns`."""
        logits = self.logits(images)
        return self.head.cut_probs(logits) if self._folds else self.head.probs(logits)

    def node_probabilities(self, images: Tensor, nodes: Sequence[str]) -> Tensor:
        """``(batch, len(nodes))`` float32 ``P(node)`` for nodes at or above the columns."""
        return RollUp(self.taxonomy, list(nodes), columns=self.columns).to(images.device)(self(images))

    def extra_repr(self) -> str:
        return f"source={self.source!r}, columns={len(self.columns)}, size={self.size}"


class ModelEnsemble(nn.Module):
    """Several trained models over one tree as one model: the mean of their probabilities.

    Members whose columns differ are each rolled up to
    :func:`~hierclf.evaluation.ensembles.finest_common_cut` first (the mean of the
    roll-ups is the roll-up of the mean: probabilities add). All members must take images of one side.

    Raises:
        HierclfError: no members, members of other trees, or of other input sides.
    """

    def __init__(self, members: Sequence[TrainedModel]) -> None:
        super().__init__()
        if not members:
            raise HierclfError("an ensemble needs at least one model")
        first = members[0]
        for other in members[1:]:
            if other.identity.fingerprint != first.identity.fingerprint:
                from hierclf.train.identity import describe_tree_change

                raise HierclfError(
                    f"{other.source} was trained on another tree than {first.source} "
                    f"({describe_tree_change(first.identity, other.taxonomy)}); an ensemble needs one tree"
                )
        sizes = sorted({m.size for m in members})
        if len(sizes) > 1:
            raise HierclfError(f"the models take images of different sides ({sizes} px); resize them alike")
        self.members = nn.ModuleList(members)
        self.taxonomy = first.taxonomy
        self.columns = finest_common_cut(self.taxonomy, [m.columns for m in members])
        self.size = first.size
        self.identity = first.identity
        self.source = ", ".join(m.source for m in members)
        self.to_common = nn.ModuleList(
            [
                RollUp(self.taxonomy, list(self.columns), columns=m.columns)
                if m.columns != self.columns
                else nn.Identity()
                for m in members
            ]
        )

    def forward(self, images: Tensor) -> Tensor:
        """``(batch, n_columns)``: the members' mean probability over :attr:`columns`."""
        return torch.stack(self.member_probabilities(images)).mean(0)

    @property
    def models(self) -> list[TrainedModel]:
        """The members, typed."""
        return [cast(TrainedModel, m) for m in self.members]

    def member_probabilities(self, images: Tensor) -> list[Tensor]:
        """Each member's ``(batch, n_columns)`` probabilities over :attr:`columns` (for the OR rule)."""
        return [common(member(images)) for member, common in zip(self.members, self.to_common)]
