"""Class-aware sampling of training images: which sample each draw picks, and how likely each class is.

``uniform`` shuffles the training set; ``balanced`` draws every non-empty class equally often (inverse
frequency); ``effective`` weighs classes by their effective number of samples (Cui et al. 2019), between the
two. The class weights are :func:`hierclf.classes.weights.class_weight_array`, the same numbers the weighted
losses use. Seed 001: pick one imbalance remedy (sampling, weights, focal loss) and ablate before stacking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from hierclf.classes.weights import class_weight_array
from hierclf.errors import HierclfError
from hierclf.options import Registry

__all__ = ["SAMPLERS", "make_sampler", "sampler_weights"]

#: the samplers a training config's ``sampler`` names: sampler -> class-weight scheme (None: uniform)
SAMPLERS: Registry[str | None] = Registry("sampler")
SAMPLERS.add("uniform", None, summary="a shuffled pass over the training set")
SAMPLERS.add("balanced", "inverse", summary="every non-empty class drawn equally often")
SAMPLERS.add("effective", "effective", summary="classes weighted by their effective number (Cui et al. 2019)")


def sampler_weights(
    labels: Sequence[Any] | np.ndarray | torch.Tensor,
    scheme: str = "balanced",
    beta: float = 0.999,
    n_classes: int | None = None,
) -> torch.Tensor:
    """Per-sample weights ``(n,)`` float64 of a sampler: the class weight of each sample's class.

    ``balanced`` uses the ``inverse`` class weights (each non-empty class drawn with probability
    ``1 / n_nonempty_classes``); ``effective`` the effective-number weights of Cui et al. (class ``c`` drawn
    with probability proportional to ``n_c (1 - beta) / (1 - beta^n_c)``); ``uniform`` gives every sample
    weight 1. Empty classes get weight 0 and are never drawn (they have no samples). The class weights are
    rounded to float32 first, as the weighted losses hold them.
    """
    weight_scheme = SAMPLERS.get(scheme)
    codes, k = _label_codes(labels, n_classes)
    if weight_scheme is None:
        return torch.ones(codes.size, dtype=torch.float64)
    counts = np.bincount(codes, minlength=k)
    w = class_weight_array(counts, weight_scheme, beta).astype(np.float32).astype(np.float64)
    return torch.from_numpy(w[codes])


def _label_codes(
    labels: Sequence[Any] | np.ndarray | torch.Tensor, n_classes: int | None
) -> tuple[np.ndarray, int]:
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise HierclfError("cannot build a sampler over zero samples")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0:
            raise HierclfError(f"class indices must be >= 0; got {int(arr.min())}")
        k = int(arr.max()) + 1 if n_classes is None else int(n_classes)
        if arr.max() >= k:
            raise HierclfError(f"class index {int(arr.max())} out of range for n_classes={k}")
        return arr.astype(np.int64), k
    if n_classes is not None:
        raise HierclfError("n_classes applies to integer class indices; labels here are names")
    uniq, inv = np.unique(arr.astype(str), return_inverse=True)
    return inv.reshape(-1).astype(np.int64), int(uniq.size)


def make_sampler(
    labels: Sequence[Any] | np.ndarray | torch.Tensor,
    scheme: str = "uniform",
    beta: float = 0.999,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    n_classes: int | None = None,
) -> WeightedRandomSampler | None:
    """A class-aware sampler for a training ``DataLoader``, or None for ``"uniform"`` (plain shuffling).

    Args:
        labels: ``(n,)`` class indices (int) or class names of the training samples.
        scheme: ``"uniform"``, ``"balanced"`` (inverse frequency: every class equally likely per draw) or
            ``"effective"`` (effective-number weights, ``beta``; between uniform and balanced).
        beta: the effective-number ``beta`` in (0, 1).
        num_samples: draws per epoch; default ``n``.
        generator: torch generator for reproducible draws.
        n_classes: number of classes when ``labels`` are indices (classes without samples get weight 0).

    Returns:
        ``WeightedRandomSampler(weights, num_samples, replacement=True)`` or None.
    """
    weights = sampler_weights(labels, scheme, beta, n_classes)
    if scheme == "uniform":
        return None
    n = int(weights.shape[0]) if num_samples is None else int(num_samples)
    if n <= 0:
        raise HierclfError(f"num_samples must be positive; got {n}")
    return WeightedRandomSampler(
        weights,  # type: ignore[arg-type]
        num_samples=n,
        replacement=True,
        generator=generator,
    )
