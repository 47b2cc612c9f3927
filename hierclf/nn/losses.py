"""Imbalance-aware classification losses over training classes, and class weights.

Every loss here takes ``logits (batch, n_classes)`` of any float dtype and ``target (batch,)`` class indices
(long) and computes in float32, so float16 / bfloat16 logits from autocast are safe. Build one by name with
:func:`build_loss` (the name a config file carries) or use the classes directly:

- ``"ce"``: cross-entropy, optional label smoothing (identical to ``F.cross_entropy``).
- ``"weighted_ce"``: class-weighted cross-entropy with inverse-frequency or effective-number weights
  (Cui et al. 2019), optional label smoothing.
- ``"focal"``: focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017) on the softmax.
- ``"asymmetric"``: asymmetric loss (Ridnik et al. 2021) in its one-vs-rest sigmoid form.
- ``"marginal"``: partial labels at internal nodes, ``-log P(labelled node)`` through the roll-up
  (:class:`MarginalNodeLoss`): cross-entropy for images labelled at a class, the marginal likelihood of the
  node for images labelled above the classes ("melanocytic lesion, unspecified").

Seed 001's advice: pick one imbalance remedy (class-balanced sampling, weights, focal, asymmetric) and
ablate before stacking them. See ``docs/training-classes.md`` for the formulas and when to use each.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hierclf.classes.label_mapping import ClassMap
from hierclf.classes.weights import WEIGHT_SCHEMES, check_beta, class_weight_array
from hierclf.errors import HierclfError
from hierclf.functional import log_rollup
from hierclf.options import Registry, look_up_option
from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

Reduction = Literal["mean", "sum", "none"]
WeightScheme = Literal["inverse", "effective", "none"]

__all__ = [
    "AsymmetricLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LOSSES",
    "LossSpec",
    "MarginalNodeLoss",
    "build_loss",
    "class_weights",
]

_REDUCTIONS = ("mean", "sum", "none")


# --- class weights ---------------------------------------------------------------------------------------


def class_weights(
    counts: Sequence[float] | np.ndarray | Tensor, scheme: WeightScheme | str = "inverse", beta: float = 0.999
) -> Tensor:
    """Per-class loss weights from the number of training images per class.

    - ``"inverse"``: ``w_c ∝ 1 / n_c``.
    - ``"effective"``: ``w_c ∝ (1 - beta) / (1 - beta^n_c)``, the inverse effective number of samples
      (Cui et al. 2019); ``beta -> 0`` gives uniform weights, ``beta -> 1`` inverse frequency.
    - ``"none"``: ``w_c = 1``.

    The weights of the non-empty classes are normalised to sum to their number (so a balanced dataset
    gets all ones). An empty class (``n_c = 0``) gets weight 0 and is left out of the normalisation: it never
    occurs as a target, so its weight only matters for label smoothing, where 0 keeps smoothing mass off a
    class the data never shows. Empty classes are logged as a warning. No division by zero, never NaN.
    The numbers come from :func:`hierclf.classes.weights.class_weight_array`, which the samplers share.

    Args:
        counts: images per class, shape ``(n_classes,)``, non-negative.
        scheme: ``"inverse"``, ``"effective"`` or ``"none"``.
        beta: the effective-number hyper-parameter, in ``(0, 1)`` (Cui et al. use 0.9 ... 0.9999).

    Returns:
        float32 tensor of shape ``(n_classes,)`` on the CPU.

    Raises:
        HierclfError: negative or non-finite counts, every class empty, ``beta`` outside ``(0, 1)``.
        UnknownNameError: an unknown scheme.

    Example:
        >>> class_weights([10, 30, 0], "inverse")
        tensor([1.5000, 0.5000, 0.0000])
        >>> class_weights([10, 10], "effective", beta=0.99)
        tensor([1., 1.])
    """
    if isinstance(counts, Tensor):
        counts = counts.detach().cpu().numpy()
    return torch.as_tensor(class_weight_array(counts, scheme, beta), dtype=torch.float32)


def _check_reduction(reduction: str) -> str:
    return look_up_option(reduction, _REDUCTIONS, kind="reduction")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _optional_weight(weight: Sequence[float] | Tensor | None, what: str) -> Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=torch.float32).detach().clone()
    if w.ndim != 1 or w.numel() == 0 or not torch.isfinite(w).all() or (w < 0).any():
        raise HierclfError(
            f"{what} must be a 1-D sequence of finite non-negative numbers (one per class), got {weight!r}"
        )
    return w


def _check_target(logits: Tensor, target: Tensor, what: str) -> None:
    if logits.ndim != 2:
        raise HierclfError(f"{what}: logits must have shape (batch, n_classes), got {tuple(logits.shape)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise HierclfError(
            f"{what}: target must have shape (batch,) = ({logits.shape[0]},), got {tuple(target.shape)}"
        )


def _check_n_classes(weight: Tensor | None, logits: Tensor, what: str) -> None:
    if weight is not None and weight.numel() != logits.shape[1]:
        raise HierclfError(f"{what}: {weight.numel()} class weights for {logits.shape[1]} logits")


# --- loss modules ------------------------------------------------------------------------------------------


class CrossEntropyLoss(nn.Module):
    """Cross-entropy with optional class weights and label smoothing, computed in float32.

    Equals ``F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=label_smoothing)``,
    including PyTorch's conventions: with label smoothing ``eps`` the target distribution is
    ``(1 - eps) onehot + eps / C``; with weights, each class's term is scaled by its weight and the mean
    divides by ``sum_i w[target_i]``.

    Args:
        weight: per-class weights, shape ``(n_classes,)`` (see :func:`class_weights`), or None.
        label_smoothing: ``eps`` in ``[0, 1)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses, shape ``(batch,)``).

    Example:
        >>> loss = CrossEntropyLoss(label_smoothing=0.1)
        >>> round(float(loss(torch.zeros(2, 4), torch.tensor([0, 3]))), 6) == round(math.log(4), 6)
        True
    """

    weight: Tensor | None

    def __init__(
        self,
        weight: Sequence[float] | Tensor | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
            raise HierclfError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.register_buffer("weight", _optional_weight(weight, "class weights"))
        self.label_smoothing = float(label_smoothing)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits (batch, n_classes)`` against ``target (batch,)``; float32."""
        _check_target(logits, target, "cross-entropy")
        _check_n_classes(self.weight, logits, "cross-entropy")
        return F.cross_entropy(
            logits.float(),
            target,
            weight=self.weight,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def extra_repr(self) -> str:
        return f"weighted={self.weight is not None}, label_smoothing={self.label_smoothing}"


class FocalLoss(nn.Module):
    """Softmax focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017), computed in float32.

    ``p_t`` is the softmax probability of the true class. ``gamma = 0`` without ``alpha`` is exactly
    cross-entropy; larger ``gamma`` down-weights examples the model already gets right (seed 001: 1.5-2.5).
    ``alpha`` is an optional per-class weight (e.g. :func:`class_weights`) applied to each sample through its
    true class. ``"mean"`` is the plain mean over samples (Lin et al.; unlike weighted cross-entropy it does
    not divide by the sum of the weights).

    Args:
        gamma: focusing parameter, ``>= 0``.
        alpha: per-class weights, shape ``(n_classes,)``, or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    alpha: Tensor | None

    def __init__(
        self, gamma: float = 2.0, alpha: Sequence[float] | Tensor | None = None, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        if not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma < 0:
            raise HierclfError(f"focal loss gamma must be a finite number >= 0, got {gamma!r}")
        self.gamma = float(gamma)
        self.register_buffer("alpha", _optional_weight(alpha, "focal loss alpha"))
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits (batch, n_classes)`` against ``target (batch,)``; float32."""
        _check_target(logits, target, "focal loss")
        _check_n_classes(self.alpha, logits, "focal loss")
        log_pt = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)
        loss = -log_pt
        if self.gamma != 0.0:
            # 1 - p_t via expm1 (exact near p_t = 1); the clamp keeps the gradient finite when p_t == 1 and
            # gamma < 1, where d/dp (1 - p)^gamma is infinite.
            one_minus = (-torch.expm1(log_pt)).clamp(min=1e-12)
            loss = one_minus.pow(self.gamma) * loss
        if self.alpha is not None:
            loss = self.alpha[target] * loss
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={'per-class' if self.alpha is not None else None}"


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021) for single-label multi-class targets, computed in float32.

    The paper's one-vs-rest sigmoid form, with the true class as the one positive label of each sample:
    ``p_c = sigmoid(logit_c)``, ``y = onehot(target)``, ``p_m = max(p_c - clip, 0)`` (the probability shift
    that discards easy negatives), and per sample

        ``loss = -sum_c [ y_c (1 - p_c)^gamma_pos log(p_c) + (1 - y_c) p_m^gamma_neg log(1 - p_m) ]``.

    Each class's logit is trained as an independent sigmoid; the head still reads the logits through a
    softmax for roll-up, which ranks classes the same way but is not calibrated by this loss (compare
    calibration before choosing it). ``gamma_pos = gamma_neg = clip = 0`` is binary cross-entropy with
    logits summed over classes.

    Args:
        gamma_pos: focusing on the positive (true) class, ``>= 0`` (seed 001: 0-1).
        gamma_neg: focusing on negatives, ``>= 0`` (seed 001: 4).
        clip: probability margin for negatives, in ``[0, 1)`` (seed 001: 0.05).
        reduction: ``"mean"`` (over samples), ``"sum"`` or ``"none"`` (shape ``(batch,)``).
    """

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        for name, value in (("gamma_pos", gamma_pos), ("gamma_neg", gamma_neg)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise HierclfError(f"asymmetric loss {name} must be a finite number >= 0, got {value!r}")
        if not isinstance(clip, (int, float)) or not 0.0 <= clip < 1.0:
            raise HierclfError(f"asymmetric loss clip must be in [0, 1), got {clip!r}")
        self.gamma_pos = float(gamma_pos)
        self.gamma_neg = float(gamma_neg)
        self.clip = float(clip)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits (batch, n_classes)`` against ``target (batch,)``; float32."""
        _check_target(logits, target, "asymmetric loss")
        x = logits.float()
        y = F.one_hot(target, x.shape[1]).to(torch.bool)
        # positives: (1 - p)^gamma_pos log p, log p = logsigmoid(x), 1 - p = sigmoid(-x)
        pos = F.logsigmoid(x)
        if self.gamma_pos != 0.0:
            pos = torch.sigmoid(-x).clamp(min=1e-12).pow(self.gamma_pos) * pos
        # negatives: p_m^gamma_neg log(1 - p_m), p_m = max(p - clip, 0), 1 - p_m = min(1 - p + clip, 1)
        if self.clip > 0.0:
            p_m = (torch.sigmoid(x) - self.clip).clamp(min=0.0)
            log_not = torch.log((torch.sigmoid(-x) + self.clip).clamp(max=1.0))
        else:
            p_m = torch.sigmoid(x)
            log_not = F.logsigmoid(-x)
        neg = log_not if self.gamma_neg == 0.0 else p_m.clamp(min=1e-12).pow(self.gamma_neg) * log_not
        loss = -torch.where(y, pos, neg).sum(dim=1)
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}"


class MarginalNodeLoss(nn.Module):
    """Partial labels at internal nodes: ``-log P(node)``, the marginal likelihood of the labelled node.

    The head stays over the leaves (or a cut): ``P(node)`` is the sum of the softmax over the classes under
    it, so ``-log P(node) = -logsumexp(logits of the classes under node) + logsumexp(all logits)``, computed
    through :func:`hierclf.functional.log_rollup` (each node shifted by its own maximum: exact for any
    logits). An image labelled at a class (or below one) gets plain cross-entropy; an image labelled at an
    internal node above the classes pushes probability into that subtree and lets the model share it among
    the node's children as its current beliefs say (the E-step of EM, in one gradient).

    Targets are indices into :attr:`target_nodes`: the classes (the head's column order), then the internal
    nodes above them in pre-order; :meth:`target_index` maps labels to them.

    Args:
        taxonomy: the tree.
        classes: the head's classes, a cut of the tree in column order; None for the leaves.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> tax = Taxonomy.from_yaml("taxonomy/dermamnist.yaml")
        >>> loss = MarginalNodeLoss(tax)
        >>> targets = torch.from_numpy(loss.target_index(["melanoma", "benign"]))
        >>> logits = torch.zeros(2, 7)
        >>> [round(float(v), 4) for v in MarginalNodeLoss(tax, reduction="none")(logits, targets)]
        [1.9459, 0.5596]
    """

    def __init__(
        self, taxonomy: Taxonomy, classes: Sequence[str] | None = None, *, reduction: Reduction = "mean"
    ):
        super().__init__()
        self.taxonomy = taxonomy
        given = taxonomy.leaves if classes is None else tuple(taxonomy.resolve(c) for c in classes)
        self.classes: tuple[str, ...] = given
        self._class_map = ClassMap.of(taxonomy, given)  # refuses what is not a cut
        above = self._class_map.class_of_row < 0
        self.internal: tuple[str, ...] = tuple(n for n, up in zip(taxonomy.nodes, above.tolist()) if up)
        self.target_nodes: tuple[str, ...] = self.classes + self.internal
        self._internal_code = np.full(len(taxonomy.nodes), -1, dtype=np.int64)
        self._internal_code[np.flatnonzero(above)] = len(given) + np.arange(int(above.sum()))
        self.reduction = _check_reduction(reduction)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def target_index(self, labels: Sequence[str] | np.ndarray) -> np.ndarray:
        """Target codes ``(n,)`` int64 of true labels (ids, aliases, display names): the class column of a
        label at or below a class, ``n_classes + k`` for the ``k``-th internal node above the classes."""
        arr = np.asarray(labels if isinstance(labels, np.ndarray) else list(labels), dtype=object).astype(str)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        codes = self._class_map.class_index(arr, above="ignore")
        if (codes >= 0).all():
            return codes
        distinct, inverse = np.unique(arr, return_inverse=True)
        rows = self.taxonomy.index.rows(self.taxonomy.resolve(d) for d in distinct.tolist())
        return np.where(codes >= 0, codes, self._internal_code[rows][inverse.reshape(-1)])

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits (batch, n_classes)`` against ``target (batch,)`` codes of :attr:`target_nodes`;
        float32 (float64 for float64 logits)."""
        _check_target(logits, target, "marginal loss")
        if logits.shape[1] != self.n_classes:
            raise HierclfError(f"marginal loss: {logits.shape[1]} logits for {self.n_classes} classes")
        x = logits if logits.dtype == torch.float64 else logits.float()
        log_probs = F.log_softmax(x, dim=-1)
        if self.internal:
            nodes = log_rollup(log_probs, self.taxonomy, list(self.internal), columns=list(self.classes))
            log_probs = torch.cat([log_probs, nodes], dim=1)
        loss = -log_probs.gather(1, target[:, None]).squeeze(1)
        return _reduce(loss, self.reduction)

    def extra_repr(self) -> str:
        return f"classes={self.n_classes}, internal_nodes={len(self.internal)}"


# --- registry ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: the options :func:`build_loss` accepts for it and how it is built.

    ``build(class_counts, options)`` gets the options given (``None`` values removed) and the validated
    ``reduction`` and ``beta`` among them; a loss that ``needs_tree`` also gets ``taxonomy`` and
    ``classes`` (the head's classes) there.
    """

    params: tuple[str, ...]
    build: Callable[[Any, dict[str, Any]], nn.Module]
    needs_tree: bool = False


#: the losses :func:`build_loss` (and a training config's ``loss.name``) accepts, with their options
LOSSES: Registry[LossSpec] = Registry("loss")


def _weights_from(spec: Any, class_counts: Any, beta: float, loss: str, param: str) -> Tensor | None:
    """A weight spec (None, a scheme name, or explicit per-class numbers) -> a tensor."""
    if spec is None:
        return None
    if isinstance(spec, str):
        scheme = look_up_option(
            spec, WEIGHT_SCHEMES, kind="class weight scheme", context=f"for {loss} {param}"
        )
        if class_counts is None:
            raise HierclfError(f"loss {loss!r} with {param}={spec!r} needs class_counts (images per class)")
        return class_weights(class_counts, scheme, beta)
    if isinstance(spec, (int, float)):
        raise HierclfError(
            f"{loss} {param} must be per-class (a sequence with one weight per class) or a "
            f"scheme name ({', '.join(WEIGHT_SCHEMES)}), got the single number {spec!r}"
        )
    w = _optional_weight(spec, f"{loss} {param}")
    if class_counts is not None and w is not None and w.numel() != len(class_counts):
        raise HierclfError(
            f"{loss} {param} has {w.numel()} entries but there are {len(class_counts)} classes"
        )
    return w


def _build_ce(class_counts: Any, given: dict[str, Any]) -> nn.Module:
    return CrossEntropyLoss(label_smoothing=given.get("label_smoothing", 0.0), reduction=given["reduction"])


def _build_weighted_ce(class_counts: Any, given: dict[str, Any]) -> nn.Module:
    weight = _weights_from(
        given.get("weights", "inverse"), class_counts, given["beta"], "weighted_ce", "weights"
    )
    return CrossEntropyLoss(
        weight, label_smoothing=given.get("label_smoothing", 0.0), reduction=given["reduction"]
    )


def _build_focal(class_counts: Any, given: dict[str, Any]) -> nn.Module:
    alpha = _weights_from(given.get("alpha"), class_counts, given["beta"], "focal", "alpha")
    return FocalLoss(gamma=given.get("gamma", 2.0), alpha=alpha, reduction=given["reduction"])


def _build_asymmetric(class_counts: Any, given: dict[str, Any]) -> nn.Module:
    return AsymmetricLoss(
        gamma_pos=given.get("gamma_pos", 0.0),
        gamma_neg=given.get("gamma_neg", 4.0),
        clip=given.get("clip", 0.05),
        reduction=given["reduction"],
    )


LOSSES.add("ce", LossSpec(("label_smoothing", "reduction"), _build_ce), summary="cross-entropy")
LOSSES.add(
    "weighted_ce",
    LossSpec(("weights", "beta", "label_smoothing", "reduction"), _build_weighted_ce),
    summary="class-weighted cross-entropy (inverse frequency or effective number)",
)
LOSSES.add(
    "focal",
    LossSpec(("gamma", "alpha", "beta", "reduction"), _build_focal),
    summary="focal loss (Lin et al. 2017)",
)
LOSSES.add(
    "asymmetric",
    LossSpec(("gamma_pos", "gamma_neg", "clip", "reduction"), _build_asymmetric),
    summary="asymmetric loss (Ridnik et al. 2021)",
)


def _build_marginal(class_counts: Any, given: dict[str, Any]) -> nn.Module:
    return MarginalNodeLoss(given["taxonomy"], given.get("classes"), reduction=given["reduction"])


LOSSES.add(
    "marginal",
    LossSpec(("reduction",), _build_marginal, needs_tree=True),
    summary="partial labels at internal nodes: -log P(labelled node) over a head on the leaves",
)


def build_loss(
    name: str,
    class_counts: Sequence[float] | np.ndarray | Tensor | None = None,
    *,
    taxonomy: Taxonomy | None = None,
    classes: Sequence[str] | None = None,
    **params: Any,
) -> nn.Module:
    """A loss module by name, as a config file names it (the names and options of :data:`LOSSES`).

    Args:
        name: ``"ce"``, ``"weighted_ce"``, ``"focal"`` or ``"asymmetric"`` (case and ``-`` / ``_`` ignored).
        class_counts: training images per class, shape ``(n_classes,)``; needed for weight schemes.
        **params: the loss's options; ``None`` values mean "default". ``ce``: ``label_smoothing``.
            ``weighted_ce``: ``weights`` (``"inverse"`` (default), ``"effective"``, ``"none"`` or explicit
            per-class numbers), ``beta`` (0.999), ``label_smoothing``. ``focal``: ``gamma`` (2.0), ``alpha``
            (None, a scheme name or per-class numbers), ``beta``. ``asymmetric``: ``gamma_pos`` (0),
            ``gamma_neg`` (4), ``clip`` (0.05). All: ``reduction`` (``"mean"``).
        taxonomy, classes: the tree and the head's classes (None: the leaves), for ``"marginal"``.

    Returns:
        an ``nn.Module`` whose ``forward(logits (batch, C), target (batch,) long)`` returns the loss.

    Raises:
        UnknownNameError: unknown loss name or parameter (the message lists the known ones).
        HierclfError: invalid values (negative gamma, beta outside (0, 1), missing class counts, ...).

    Example:
        >>> build_loss("focal", gamma=2.0)
        FocalLoss(gamma=2.0, alpha=None)
        >>> build_loss("weighted_ce", class_counts=[100, 10], weights="inverse").weight
        tensor([0.1818, 1.8182])
    """
    key = LOSSES.resolve(name)
    spec = LOSSES.get(key)
    for p in params:
        look_up_option(p, spec.params, kind="parameter", context=f"for loss {key!r}")
    given = {k: v for k, v in params.items() if v is not None}
    given["reduction"] = given.get("reduction", "mean")
    given["beta"] = check_beta(given.get("beta", 0.999))
    if spec.needs_tree:
        if taxonomy is None:
            raise HierclfError(
                f"loss {key!r} needs the taxonomy (and the head's classes): build_loss(..., taxonomy=)"
            )
        given.update(taxonomy=taxonomy, classes=classes)
    return spec.build(class_counts, given)
