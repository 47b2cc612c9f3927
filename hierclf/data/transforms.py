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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from hierclf.errors import HierclfError

__all__ = [
    "AugmentParams",
    "BatchTransform",
    "IMAGENET_MEAN",
    "ToUint8",
    "IMAGENET_STD",
    "augmentation",
    "check_matching_preprocessing",
    "eval_transform",
    "preprocess",
    "preprocessing_of",
    "to_uint8",
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


def augmentation(
    size: int,
    scale: tuple[float, float] = (0.6, 1.0),
    rotation: float = 180.0,
    flips: bool = True,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    hue: float = 0.02,
) -> v2.Compose:
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
        raise HierclfError(
            "colour jitter above brightness/contrast/saturation 0.3 or hue 0.05 destroys the "
            "colour cues dermoscopy depends on (seed 001); keep it mild"
        )
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


def train_transform(
    size: int,
    augment: bool = True,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **augment_options: Any,
) -> v2.Compose:
    """Training pipeline: ``Compose([augmentation(size, ...), preprocess(mean, std)])``.

    With ``augment=False`` the random part is replaced by the deterministic resize of
    :func:`eval_transform`, so the two pipelines give identical tensors (useful for ablations).
    ``augment_options`` go to :func:`augmentation`.
    """
    front = augmentation(size, **augment_options) if augment else v2.Compose(_resize(size))
    return v2.Compose([front, preprocess(mean, std)])


def eval_transform(
    size: int | None = None, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """Evaluation pipeline: ``Compose([resize to size x size (if size), preprocess(mean, std)])``.

    Example:
        >>> tr, ev = train_transform(28), eval_transform(28)
        >>> preprocessing_of(tr) == preprocessing_of(ev)
        True
    """
    return v2.Compose([v2.Compose(_resize(size)), preprocess(mean, std)])


def preprocessing_of(transform: Callable[[Any], Any]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` of the last normalisation a pipeline applies, or None when it has none."""
    if isinstance(transform, BatchTransform):
        return transform.preprocessing
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

        raise HierclfError(
            f"training and evaluation preprocessing differ: training uses {show(a)}, "
            f"evaluation uses {show(b)}; build both from hierclf.data.transforms "
            "(train_transform / eval_transform with the same mean and std)"
        )


# --------------------------------------------------------------------------------------------------------
# Batched pipeline: the same policy and preprocessing applied to a whole batch on its device
# --------------------------------------------------------------------------------------------------------


class ToUint8:
    """Per-sample transform for the batched pipeline: resize (if ``size``) and return a ``(3, size, size)``
    uint8 tensor, nothing else; :class:`BatchTransform` does the rest on the batch's device.

    Resizing goes through PIL exactly as in :func:`eval_transform`. A ``(H, W, 3)`` uint8 array that needs no
    resizing is converted without PIL (``accepts_arrays``: :class:`hierclf.data.datasets.TaxonomyImageDataset`
    then hands it in-memory arrays directly), several times faster for small images.
    """

    accepts_arrays = True

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self._slow = v2.Compose([*_resize(size), v2.ToImage(), v2.ToPureTensor()])

    def __call__(self, image: Any) -> torch.Tensor:
        if (
            isinstance(image, np.ndarray)
            and image.ndim == 3
            and image.shape[-1] == 3
            and (self.size is None or image.shape[:2] == (self.size, self.size))
        ):
            return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return self._slow(image)

    def __repr__(self) -> str:
        return f"ToUint8(size={self.size})"


def to_uint8(size: int | None = None) -> ToUint8:
    """The per-sample transform of the batched pipeline (:class:`ToUint8`)."""
    return ToUint8(size)


@dataclass(frozen=True)
class AugmentParams:
    """Random draws of :class:`BatchTransform` for one batch, each ``(batch,)`` (``hflip``/``vflip`` bool).

    ``angle`` in degrees; ``crop_w``/``crop_h`` the crop's side as a fraction of the input's; ``centre_x``/
    ``centre_y`` the crop centre in ``[-1, 1]`` image coordinates; ``brightness``/``contrast``/``saturation``
    multiplicative factors; ``hue`` a shift in turns.
    """

    hflip: torch.Tensor
    vflip: torch.Tensor
    angle: torch.Tensor
    crop_w: torch.Tensor
    crop_h: torch.Tensor
    centre_x: torch.Tensor
    centre_y: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor


_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))


class BatchTransform(torch.nn.Module):
    """Dermoscopy augmentation and the shared preprocessing for a whole batch, on the batch's device.

    The per-sample torchvision pipeline (:func:`train_transform`) runs in DataLoader workers at a few hundred
    28 px images per second per CPU core; this module does the same work as a handful of tensor operations per
    batch (one ``affine_grid`` + ``grid_sample`` for flips, rotation and crop; per-image colour arithmetic),
    so augmentation never bounds a training step (``benchmarks/data_pipeline.py``). Feed it uint8 batches
    from :func:`to_uint8` datasets.

    The policy matches :func:`augmentation`: random horizontal / vertical flips, a rotation uniform in
    ``[-rotation, rotation]`` degrees with black corners, a random resized crop (area ``scale``, aspect
    ``ratio``, clipped to the image), brightness / contrast / saturation factors uniform in
    ``1 ± amplitude`` (torchvision's formulas), and a hue shift uniform in ``± hue`` turns applied as a
    rotation of the YIQ chroma plane (a close linear stand-in for torchvision's HSV hue shift at these small
    amplitudes). Normalisation is
    :func:`preprocess`'s: ``(x / 255 - mean) / std`` with the same constants, so
    ``BatchTransform(size, augment=False)`` equals :func:`eval_transform` image by image.

    Args:
        size: output side; with ``augment=False`` the input must already be ``size x size``.
        augment: apply the random augmentation (training) or only the preprocessing (evaluation).
        mean, std: normalisation statistics (as :func:`preprocess`).
        scale, ratio, rotation, flips, brightness, contrast, saturation, hue: as :func:`augmentation`.

    Shapes:
        input ``(batch, 3, H, W)`` uint8 (or float in [0, 1]); output ``(batch, 3, size, size)`` float32.

    Example:
        >>> t = BatchTransform(28, augment=False)
        >>> t(torch.zeros(2, 3, 28, 28, dtype=torch.uint8)).shape
        torch.Size([2, 3, 28, 28])
    """

    mean: torch.Tensor
    std: torch.Tensor
    grey: torch.Tensor
    rgb_to_yiq: torch.Tensor
    yiq_to_rgb: torch.Tensor

    def __init__(
        self,
        size: int,
        augment: bool = True,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: tuple[float, float] = (0.6, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        rotation: float = 180.0,
        flips: bool = True,
        brightness: float = 0.1,
        contrast: float = 0.1,
        saturation: float = 0.1,
        hue: float = 0.02,
    ) -> None:
        super().__init__()
        augmentation(
            size,
            scale=scale,
            rotation=rotation,
            flips=flips,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=hue,
        )  # same argument checks
        m, s = _check_stats(mean, std)
        self.size = int(size)
        self.augment = augment
        self._stats = (tuple(m), tuple(s))
        self.scale, self.ratio, self.rotation, self.flips = scale, ratio, float(rotation), flips
        self.amplitudes = (float(brightness), float(contrast), float(saturation), float(hue))
        self.register_buffer("mean", torch.tensor(m).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(s).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("grey", torch.tensor(_GREY).view(1, 3, 1, 1), persistent=False)
        yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
        self.register_buffer("rgb_to_yiq", yiq.float(), persistent=False)
        self.register_buffer("yiq_to_rgb", torch.linalg.inv(yiq).float(), persistent=False)

    @property
    def preprocessing(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)``, as :func:`preprocessing_of` reports for the torchvision pipelines."""
        return self._stats

    def sample(self, batch: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the random parameters for ``batch`` images (on the CPU, with ``generator``)."""

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)

        area = uniform(*self.scale)
        log_ratio = uniform(math.log(self.ratio[0]), math.log(self.ratio[1]))
        crop_w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
        crop_h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
        centre_x = (2 * torch.rand(batch, generator=generator, dtype=torch.float64) - 1) * (1 - crop_w)
        centre_y = (2 * torch.rand(batch, generator=generator, dtype=torch.float64) - 1) * (1 - crop_h)
        flip = torch.rand(batch, 2, generator=generator) < 0.5
        if not self.flips:
            flip[:] = False
        b, c, s, h = self.amplitudes
        return AugmentParams(
            hflip=flip[:, 0],
            vflip=flip[:, 1],
            angle=uniform(-self.rotation, self.rotation),
            crop_w=crop_w,
            crop_h=crop_h,
            centre_x=centre_x,
            centre_y=centre_y,
            brightness=uniform(1 - b, 1 + b),
            contrast=uniform(1 - c, 1 + c),
            saturation=uniform(1 - s, 1 + s),
            hue=uniform(-h, h),
        )

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        params: AugmentParams | None = None,
    ) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.ndim != 4 or x.shape[1] != 3:
            raise HierclfError(f"BatchTransform expects (batch, 3, H, W) images; got {tuple(images.shape)}")
        if self.augment:
            p = params if params is not None else self.sample(x.shape[0], generator)
            x = self.colour(self.geometry(x, p), p)
        elif x.shape[-2:] != (self.size, self.size):
            raise HierclfError(
                f"BatchTransform(augment=False) expects {self.size}x{self.size} images "
                f"(resize them in the dataset with to_uint8({self.size})); "
                f"got {tuple(x.shape[-2:])}"
            )
        return (x - self.mean) / self.std

    def geometry(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Flips, rotation and crop in one resampling: ``(batch, 3, H, W) -> (batch, 3, size, size)``."""
        dev = x.device
        angle = torch.deg2rad(p.angle).to(dev, torch.float32)
        sx = (p.crop_w * torch.where(p.hflip, -1.0, 1.0).double()).to(dev, torch.float32)
        sy = (p.crop_h * torch.where(p.vflip, -1.0, 1.0).double()).to(dev, torch.float32)
        cos, sin = torch.cos(angle), torch.sin(angle)
        cx, cy = p.centre_x.to(dev, torch.float32), p.centre_y.to(dev, torch.float32)
        theta = torch.stack(
            [torch.stack([cos * sx, -sin * sy, cx], dim=1), torch.stack([sin * sx, cos * sy, cy], dim=1)],
            dim=1,
        )  # (batch, 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], 3, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def colour(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Brightness, contrast, saturation, hue (in this order), clamped to [0, 1]."""

        def per_image(v: torch.Tensor) -> torch.Tensor:
            return v.to(x.device, torch.float32).view(-1, 1, 1, 1)

        x = (x * per_image(p.brightness)).clamp(0, 1)
        grey_mean = (x * self.grey).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        c = per_image(p.contrast)
        x = (c * x + (1 - c) * grey_mean).clamp(0, 1)
        grey = (x * self.grey).sum(dim=1, keepdim=True)
        s = per_image(p.saturation)
        x = (s * x + (1 - s) * grey).clamp(0, 1)
        if self.amplitudes[3] > 0:
            yiq = torch.einsum("ij,bjhw->bihw", self.rgb_to_yiq, x)
            turn = -2 * math.pi * p.hue.to(x.device, torch.float32)  # sign: as torchvision's HSV shift
            cos, sin = torch.cos(turn).view(-1, 1, 1), torch.sin(turn).view(-1, 1, 1)
            i, q = yiq[:, 1], yiq[:, 2]
            yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
            x = torch.einsum("ij,bjhw->bihw", self.yiq_to_rgb, yiq).clamp(0, 1)
        return x

    def extra_repr(self) -> str:
        mean, std = self.preprocessing
        return f"size={self.size}, augment={self.augment}, mean={mean}, std={std}"
