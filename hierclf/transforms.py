"""Image transforms: the dermoscopy augmentation policy and ONE preprocessing definition shared by training
and evaluation.

Training and evaluation differ only in the random augmentation in front; both end in the same
:func:`preprocess` (uint8 RGB -> float32 ``(3, H, W)`` in [0, 1] -> per-channel normalisation). A pipeline
that normalised training inputs but not evaluation inputs (seed 003's worst run) cannot be built from these
functions, and :func:`check_matching_preprocessing` catches hand-built pairs that disagree.

Augmentation policy (seed 001, section 8): horizontal and vertical flips and rotations over the full circle
(lesions have no canonical orientation), random resized crop (field of view varies between dermatoscopes),
mild colour jitter (calibration differences); no blur (it erases the texture that drives diagnosis) and no
strong colour jitter (colour is diagnostic: melanoma is often multi-coloured).

Normalisation defaults to the ImageNet statistics, ``mean = (0.485, 0.456, 0.406)``,
``std = (0.229, 0.224, 0.225)``, which the torchvision pretrained backbones expect; pass ``mean``/``std`` to
use a dataset's own statistics, the same values for both pipelines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from hierclf.errors import HierclfError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "augmentation",
    "check_matching_preprocessing",
    "eval_transform",
    "preprocess",
    "preprocessing_of",
    "train_transform",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def preprocess(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """The preprocessing every pipeline ends with: to a float32 ``(3, H, W)`` tensor in [0, 1], then
    ``(x - mean) / std`` per channel.

    Accepts a PIL image, a ``(H, W, 3)`` uint8 numpy array or a ``(3, H, W)`` uint8 tensor.

    Example:
        >>> import numpy as np
        >>> x = preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(np.full((2, 2, 3), 255, np.uint8))
        >>> x.shape, x.dtype, float(x.max())
        (torch.Size([3, 2, 2]), torch.float32, 1.0)
    """
    mean, std = _check_stats(mean, std)
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)])


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    m, s = [float(v) for v in mean], [float(v) for v in std]
    if len(m) != 3 or len(s) != 3:
        raise HierclfError(f"mean and std need 3 values (R, G, B); got mean={m}, std={s}")
    if min(s) <= 0:
        raise HierclfError(f"std values must be positive; got {s}")
    return m, s


def augmentation(size: int, scale: tuple[float, float] = (0.6, 1.0), rotation: float = 180.0,
                 flips: bool = True, brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.1,
                 hue: float = 0.02) -> v2.Compose:
    """The random part of the training pipeline: image in (PIL, ``(H, W, 3)`` uint8 array or ``(3, H, W)``
    uint8 tensor), ``size x size`` PIL image out.

    Args:
        size: output side in pixels.
        scale: area range of :class:`~torchvision.transforms.v2.RandomResizedCrop`.
        rotation: maximal rotation in degrees (180 = the full circle); corners are filled with black.
        flips: random horizontal and vertical flips.
        brightness, contrast, saturation, hue: colour jitter amplitudes (mild by default; 0 disables).
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise HierclfError(f"scale must satisfy 0 < min <= max <= 1; got {scale}")
    if max(brightness, contrast, saturation) > 0.3 or hue > 0.05:
        raise HierclfError("colour jitter above brightness/contrast/saturation 0.3 or hue 0.05 destroys the "
                           "colour cues dermoscopy depends on (seed 001); keep it mild")
    # PIL images throughout: torchvision's tensor kernels for rotation and hue are 20-40x slower on small
    # images on the CPU (measured: 28 vs 1,244 rotations/s at 28x28), and the result is converted once by
    # preprocess()
    ops: list[Callable[[Any], Any]] = [v2.ToPILImage()]
    if flips:
        ops += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if rotation > 0:
        ops.append(v2.RandomRotation(degrees=rotation, interpolation=v2.InterpolationMode.BILINEAR))
    ops.append(v2.RandomResizedCrop(size, scale=scale, antialias=True))
    if max(brightness, contrast, saturation, hue) > 0:
        ops.append(v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue))
    return v2.Compose(ops)


def _resize(size: int | None) -> list[Callable[[Any], Any]]:
    return [v2.ToPILImage(), v2.Resize((size, size), antialias=True)] if size is not None else [v2.Identity()]


def train_transform(size: int, augment: bool = True, *, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, **augment_options: Any) -> v2.Compose:
    """Training pipeline: ``Compose([augmentation(size, ...), preprocess(mean, std)])``.

    With ``augment=False`` the random part is replaced by the deterministic resize of
    :func:`eval_transform`, so the two pipelines give identical tensors (useful for ablations).
    ``augment_options`` go to :func:`augmentation`.
    """
    front = augmentation(size, **augment_options) if augment else v2.Compose(_resize(size))
    return v2.Compose([front, preprocess(mean, std)])


def eval_transform(size: int | None = None, *, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """Evaluation pipeline: ``Compose([resize to size x size (if size), preprocess(mean, std)])``.

    Example:
        >>> tr, ev = train_transform(28), eval_transform(28)
        >>> preprocessing_of(tr) == preprocessing_of(ev)
        True
    """
    return v2.Compose([v2.Compose(_resize(size)), preprocess(mean, std)])


def preprocessing_of(transform: Callable[[Any], Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` of the last normalisation a pipeline applies, or None when it has none."""
    found = None
    for op in _flatten(transform):
        if isinstance(op, v2.Normalize):
            found = (tuple(float(v) for v in op.mean), tuple(float(v) for v in op.std))
    return found


def _flatten(transform: Any) -> list[Any]:
    inner = getattr(transform, "transforms", None)
    if inner is None:
        return [transform]
    return [op for t in inner for op in _flatten(t)]


def check_matching_preprocessing(train: Callable[[Any], Any], evaluation: Callable[[Any], Any]) -> None:
    """Raise :class:`~hierclf.errors.HierclfError` when two pipelines normalise differently (or only one
    normalises): the model would see one distribution in training and another at evaluation."""
    a, b = preprocessing_of(train), preprocessing_of(evaluation)
    if a != b:
        def show(p: Any) -> str:
            return "no normalisation" if p is None else f"mean={list(p[0])}, std={list(p[1])}"
        raise HierclfError(f"training and evaluation preprocessing differ: training uses {show(a)}, "
                           f"evaluation uses {show(b)}; build both from hierclf.transforms "
                           "(train_transform / eval_transform with the same mean and std)")
