"""The preprocessing of a run, resolved once from the config and the backbone, shared by every consumer.

Training, validation, the test predictions and the frozen-feature probes (:mod:`hierclf.probe`) all resize
to one side and normalise with one mean and std (seed 003's worst run normalised training inputs only):

* ``data.input_size``: a number, or ``auto`` (None): the resolution of the pretrained weights
  (:func:`hierclf.nn.backbones.pretrained_input`: torchvision's evaluation crop, timm's ``input_size``) when
  ``pretrained: true``, otherwise ``data.size`` (the images' own side, as before).
* ``data.mean`` / ``data.std``: three numbers, or ``auto``: the statistics the backbone declares (its
  pretrained weights', or a factory module's ``pretrained_cfg``), otherwise ImageNet's.

Images are resized whole (no centre crop, unlike ImageNet evaluation: the border of a lesion is diagnostic
and dermoscopic images are centred on it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hierclf.nn.backbones import PretrainedInput, pretrained_input

__all__ = ["InputSettings", "input_size_of", "resolve_preprocessing"]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class InputSettings:
    """What the model is fed: ``size x size`` images normalised with ``mean`` and ``std``.

    ``size_from`` and ``stats_from`` say where the values came from (the config, the weights, a default).
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size_from: str
    stats_from: str

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def input_size_of(config: Any) -> tuple[int, str]:
    """The side the model sees and where it comes from (needed before the backbone is built)."""
    data = config.data
    if data.input_size is not None:
        return int(data.input_size), "data.input_size"
    weights = pretrained_input(config.backbone, bool(config.pretrained))
    if weights is not None and weights.size is not None:
        return int(weights.size), weights.source
    return int(data.size), "data.size"


def resolve_preprocessing(config: Any, declared: PretrainedInput | None = None) -> InputSettings:
    """The run's :class:`InputSettings`; ``declared`` is the built backbone's ``pretrained_input``."""
    size, size_from = input_size_of(config)
    data = config.data
    if data.mean is not None or data.std is not None:
        mean = tuple(data.mean) if data.mean is not None else IMAGENET[0]
        std = tuple(data.std) if data.std is not None else IMAGENET[1]
        return InputSettings(size, mean, std, size_from, "data.mean / data.std")
    if declared is not None:
        return InputSettings(size, declared.mean, declared.std, size_from, declared.source)
    return InputSettings(size, IMAGENET[0], IMAGENET[1], size_from, "ImageNet statistics (default)")
