"""Feature extractors ("backbones"): hierclf's registry, any timm model, or your own factory.

:func:`create_backbone` returns a module mapping images ``(batch, in_channels, H, W)`` to features
``(batch, n_features)`` (no classifier) and the feature width, so that a :class:`~hierclf.nn.head.LeafHead`
never needs to know which network it sits on. A backbone is named in one of three ways:

* a **registered name** (:data:`BACKBONES`: ``small_cnn`` and six torchvision networks);
* ``timm/<model>[.<tag>]``: any model of timm's registry (``timm/vit_small_patch14_dinov2.lvd142m``,
  ``timm/resnetv2_50x1_bit.goog_in21k``, ``timm/convnext_tiny``), built by
  ``timm.create_model(..., num_classes=0)``; its feature width and block groups are read from the model
  (:mod:`hierclf.nn.timm_models`);
* a **factory** ``{"factory": "package.module:function", "kwargs": {...}}``: your function returns
  ``(module, n_features)`` (:mod:`hierclf.nn.backbone_factory` states and checks the contract).

Every backbone is a :class:`Backbone`: the network in ``.body`` plus ``.blocks``, its layers grouped from the
input (stem) to the output. Training uses the groups for gradual unfreezing with differential learning rates
(``hierclf.train.regimes``). ``.pretrained_input`` is the resolution and normalisation its pretrained weights
expect (:class:`PretrainedInput`), which training, evaluation and the probes follow unless told otherwise.

Pretrained weights come through the libraries' own caches (:mod:`hierclf.nn.weights_cache`): torchvision's
from the torch hub cache, timm's from the Hugging Face hub cache, downloaded when missing; offline
(``HIERCLF_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``, or no route) the error names the exact file and the folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hierclf.errors import HierclfError, UnknownNameError, did_you_mean
from hierclf.nn.backbone_base import Backbone, BackboneError, PretrainedInput
from hierclf.nn.weights_cache import fetch_url_file, read_weights
from hierclf.options import Registry, normalise_option

logger = logging.getLogger(__name__)

__all__ = [
    "Backbone",
    "BACKBONES",
    "BackboneBuilder",
    "BackboneError",
    "PretrainedInput",
    "TIMM_PREFIX",
    "backbone_description",
    "backbone_parameters_by_block",
    "backbone_recipe",
    "create_backbone",
    "list_backbones",
    "pretrained_input",
    "pretrained_weights_path",
    "rebuild_backbone",
    "register_backbone",
    "resolve_backbone_name",
]

#: prefix of timm model names (``timm/convnext_tiny``)
TIMM_PREFIX = "timm/"
#: a backbone as a config names it: a name, or ``{"factory": "package.module:function", "kwargs": {...}}``
BackboneSpec = Any


#: a backbone builder: ``build(pretrained, in_size, in_channels) -> Backbone``
BackboneBuilder = Callable[[bool, int, int], Backbone]

#: the backbones :func:`create_backbone` (and a training config's ``backbone``) accepts by name; timm models
#: (``timm/<model>``) and factories are accepted besides
BACKBONES: Registry[BackboneBuilder] = Registry("backbone")


def register_backbone(name: str, summary: str = "") -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator adding a builder ``fn(pretrained, in_size, in_channels) -> Backbone`` to the registry."""
    return BACKBONES.register(name, summary=summary)


def list_backbones() -> list[str]:
    """The registered backbone names, sorted (any ``timm/<model>`` is accepted besides).

    Example:
        >>> list_backbones()
        ['convnext_tiny', 'efficientnet_b0', 'resnet18', 'resnet50', 'small_cnn', 'vit_b_16']
    """
    return sorted(BACKBONES.names())


def _factory_of(spec: BackboneSpec) -> tuple[str, dict[str, Any]] | None:
    """``(target, kwargs)`` of a factory spec (a mapping or an object with ``factory``), else None."""
    if isinstance(spec, Mapping) and "factory" in spec:
        return str(spec["factory"]), dict(spec.get("kwargs") or {})
    if hasattr(spec, "factory"):
        return str(spec.factory), dict(getattr(spec, "kwargs", None) or {})
    return None


def resolve_backbone_name(name: str) -> str:
    """The canonical spelling of a backbone name: a registered one, or ``timm/<model>`` known to timm.

    Raises:
        UnknownNameError: neither; the message suggests the closest registered names, and the ``timm/``
            names of timm models close to it.

    Example:
        >>> resolve_backbone_name("ResNet18")
        'resnet18'
    """
    text = str(name).strip()
    if text.lower().startswith(TIMM_PREFIX):
        from hierclf.nn.timm_models import resolve_timm_name

        return TIMM_PREFIX + resolve_timm_name(text[len(TIMM_PREFIX) :])
    try:
        return BACKBONES.resolve(text)
    except UnknownNameError as exc:
        if exc.suggestions:
            raise
        timm_names = _close_timm_names(text)
        if not timm_names:
            raise
        listed = f"(known backbones: {', '.join(list_backbones())}, or timm/<model>)"
        raise UnknownNameError("backbone", name, [*BACKBONES.names(), *timm_names], listed) from None


def _close_timm_names(text: str) -> list[str]:
    """``timm/`` names of timm models close to ``text`` (empty when timm is not installed)."""
    try:
        from hierclf.nn.timm_models import timm_names
    except ImportError:  # pragma: no cover - timm is a dependency
        return []
    try:
        names = timm_names()
    except ImportError:
        return []
    return [TIMM_PREFIX + n for n in did_you_mean(normalise_option(text), names)]


def backbone_description(spec: BackboneSpec) -> str:
    """One text naming a backbone spec (for logs, cache keys, messages).

    Example:
        >>> backbone_description({"factory": "mypkg.nets:build", "kwargs": {"width": 2}})
        'factory:mypkg.nets:build {"width": 2}'
    """
    factory = _factory_of(spec)
    if factory is None:
        return str(spec)
    target, kwargs = factory
    return f"factory:{target} {json.dumps(kwargs, sort_keys=True, default=str)}"


def create_backbone(
    name: BackboneSpec,
    pretrained: bool = False,
    in_size: int = 224,
    in_channels: int = 3,
    *,
    load_weights: bool = True,
) -> tuple[Backbone, int]:
    """Build a feature extractor by name, timm name or factory.

    Args:
        name: one of :func:`list_backbones` (case-insensitive), ``timm/<model>[.<tag>]``, or a factory
            ``{"factory": "package.module:function", "kwargs": {...}}``.
        pretrained: load the pretrained weights (torchvision's, or timm's default tag or the tag named),
            downloaded into the library's cache when missing; offline, a missing file raises
            :class:`~hierclf.nn.weights_cache.WeightsNotCachedError` naming the file and the folder.
            A factory loads its own weights (``pretrained`` must be False).
        in_size: input height = width. ResNets with ``in_size <= 64`` get a 3x3 stride-1 stem and no max-pool
            (as MedMNIST's ResNet-18 at 28x28), so a 28x28 image is not reduced to 1x1 before the last stage.
            timm models with a fixed input size (ViTs) are built for ``in_size``.
        in_channels: image channels (3 for dermoscopy; 1 for grey images). With pretrained weights and
            ``in_channels != 3`` the first convolution is re-initialised (timm adapts it).
        load_weights: with ``pretrained``, False builds the network exactly as the pretrained one is built
            (some architectures depend on it: torchvision's ViT keeps 224 px position embeddings) but reads
            no weights file: for a checkpoint's weights to be loaded into it (:func:`rebuild_backbone`).

    Returns:
        ``(module, n_features)``: ``module(images (batch, in_channels, in_size, in_size))`` gives
        ``(batch, n_features)``.

    Raises:
        UnknownNameError: an unknown name (the message lists the known names and the closest one).
        BackboneError: a factory that cannot be imported or breaks its contract, weights that do not fit.
        HierclfError: pretrained weights not available, or an impossible ``in_size``.

    Example:
        >>> net, n = create_backbone("small_cnn", in_size=28)
        >>> n, tuple(net(torch.zeros(2, 3, 28, 28)).shape)
        (128, (2, 128))
    """
    factory = _factory_of(name)
    key = backbone_description(name) if factory is not None else resolve_backbone_name(name)
    if in_size < 8:
        raise HierclfError(f"backbone {key!r}: in_size must be at least 8 pixels, got {in_size}")
    if in_channels < 1:
        raise HierclfError(f"backbone {key!r}: in_channels must be at least 1, got {in_channels}")
    with _weights_read(load_weights):
        module = _build(name, key, factory, bool(pretrained), int(in_size), int(in_channels))
    return module, module.n_features


def _build(
    name: BackboneSpec,
    key: str,
    factory: tuple[str, dict[str, Any]] | None,
    pretrained: bool,
    in_size: int,
    in_channels: int,
) -> Backbone:
    """The backbone of a checked spec: a factory's, timm's or a registered builder's."""
    if factory is not None:
        from hierclf.nn.backbone_factory import build_from_factory

        return build_from_factory(
            factory[0], factory[1], pretrained=pretrained, in_size=in_size, in_channels=in_channels
        )
    if key.startswith(TIMM_PREFIX):
        from hierclf.nn.timm_models import build_timm_backbone, timm_pretrained_input

        timm_name = key[len(TIMM_PREFIX) :]
        if pretrained and not _WEIGHTS_READ.get():  # timm's architecture does not depend on its weights
            module = build_timm_backbone(timm_name, False, in_size, in_channels)
            module.pretrained_input = timm_pretrained_input(timm_name)
            return module
        return build_timm_backbone(timm_name, pretrained, in_size, in_channels)
    return BACKBONES.get(key)(pretrained, in_size, in_channels)


#: whether builders read pretrained weights files (False inside :func:`rebuild_backbone`)
_WEIGHTS_READ: contextvars.ContextVar[bool] = contextvars.ContextVar("hierclf_weights_read", default=True)


@contextlib.contextmanager
def _weights_read(value: bool) -> Any:
    token = _WEIGHTS_READ.set(bool(value))
    try:
        yield
    finally:
        _WEIGHTS_READ.reset(token)


def backbone_recipe(
    name: BackboneSpec, *, pretrained: bool, in_size: int, in_channels: int = 3
) -> dict[str, Any]:
    """What a checkpoint records to rebuild a backbone by itself: the spec in canonical form (a registered
    name, ``timm/<model>[.<tag>]``, or ``{"factory": ..., "kwargs": ...}``), whether it was built as the
    pretrained network (the architecture may depend on it), and its input side and channels.

    The weights themselves are the checkpoint's; :func:`rebuild_backbone` builds the network from the recipe
    without reading a pretrained file, ready for ``load_state_dict``. A factory must still be importable
    where the checkpoint is loaded.

    Example:
        >>> backbone_recipe("ResNet18", pretrained=True, in_size=224)
        {'spec': 'resnet18', 'pretrained': True, 'in_size': 224, 'in_channels': 3}
    """
    factory = _factory_of(name)
    spec: Any = (
        {"factory": factory[0], "kwargs": factory[1]} if factory is not None else resolve_backbone_name(name)
    )
    return {
        "spec": spec,
        "pretrained": bool(pretrained),
        "in_size": int(in_size),
        "in_channels": int(in_channels),
    }


def rebuild_backbone(recipe: Mapping[str, Any]) -> Backbone:
    """The network a :func:`backbone_recipe` describes, with freshly initialised weights (no file is read).

    Raises:
        UnknownNameError, BackboneError, HierclfError: as :func:`create_backbone` (a backbone this
            installation does not know, a factory that cannot be imported).
    """
    module, _ = create_backbone(
        recipe["spec"],
        pretrained=bool(recipe.get("pretrained", False)),
        in_size=int(recipe["in_size"]),
        in_channels=int(recipe.get("in_channels", 3)),
        load_weights=False,
    )
    return module


def pretrained_input(name: BackboneSpec, pretrained: bool) -> PretrainedInput | None:
    """The input a backbone's pretrained weights expect, read from its configuration without building it.

    torchvision: the weights' own evaluation transform (crop size, mean, std); timm: the model's pretrained
    config (``input_size``, ``mean``, ``std``). None without pretrained weights, for ``small_cnn`` and for
    factories (whose module may declare it after it is built: ``Backbone.pretrained_input``).

    Example:
        >>> pretrained_input("resnet18", True).size, pretrained_input("resnet18", False)
        (224, None)
    """
    if not pretrained or _factory_of(name) is not None:
        return None
    key = resolve_backbone_name(name)
    if key.startswith(TIMM_PREFIX):
        from hierclf.nn.timm_models import timm_pretrained_input

        return timm_pretrained_input(key[len(TIMM_PREFIX) :])
    enum = _TORCHVISION_WEIGHTS.get(key)
    return None if enum is None else _torchvision_input(key, enum)


# --- pretrained weights through the torch hub cache ------------------------------------------------------

#: the torchvision weights enum of each registered torchvision backbone
_TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
    "convnext_tiny": "ConvNeXt_Tiny_Weights",
    "vit_b_16": "ViT_B_16_Weights",
}


def _torchvision_input(builder: str, enum: str) -> PretrainedInput:
    """The evaluation transform of torchvision's default weights: crop size, mean, std."""
    import torchvision

    weights = getattr(torchvision.models, enum).DEFAULT
    transform = weights.transforms()
    crop = transform.crop_size[0] if isinstance(transform.crop_size, (list, tuple)) else transform.crop_size
    mean, std = tuple(float(v) for v in transform.mean), tuple(float(v) for v in transform.std)
    return PretrainedInput(int(crop), mean, std, f"torchvision {weights}")  # type: ignore[arg-type]


def pretrained_weights_path(weights: Any) -> Path:
    """Where torchvision keeps a weights enum entry's file: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _load_pretrained(model: nn.Module, weights: Any, builder: str) -> None:
    """Load torchvision's weights from the torch hub cache, downloading them there first when missing
    (nothing inside :func:`rebuild_backbone`, which fills the network from a checkpoint)."""
    if not _WEIGHTS_READ.get():
        return
    path = fetch_url_file(weights.url, what=repr(builder))
    state = read_weights(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:  # weights of another network: say so in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"pretrained weights {path} do not fit {builder!r}: {first}") from None
    logger.info("loaded pretrained weights %s", path)


def _conv_like(
    conv: nn.Conv2d,
    in_channels: int,
    kernel_size: int | None = None,
    stride: int | None = None,
    padding: int | None = None,
) -> nn.Conv2d:
    """A fresh convolution like ``conv`` with another number of input channels, kernel or stride."""
    k = kernel_size if kernel_size is not None else conv.kernel_size
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        k,  # type: ignore[arg-type]
        stride=stride if stride is not None else conv.stride,  # type: ignore[arg-type]
        padding=padding if padding is not None else conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )


# --- hierclf's own small CNN -----------------------------------------------------------------------------


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


@register_backbone("small_cnn", "4 conv layers with BatchNorm (32-64-128-128 channels), global average pool")
def _small_cnn(pretrained: bool, in_size: int, in_channels: int) -> Backbone:
    """conv-BN-ReLU 32 (28x28) -> pool -> 64 (14x14) -> pool -> 128, 128 (7x7) -> global average pool.

    About 15 M multiply-adds per 28x28 image, 0.27 M parameters: quick on a CPU, a baseline at 28x28.
    """
    if pretrained:
        raise HierclfError("backbone 'small_cnn' has no pretrained weights; use pretrained: false")
    body = nn.Sequential()
    body.add_module("stage1", nn.Sequential(_conv_bn(in_channels, 32), nn.MaxPool2d(2)))
    body.add_module("stage2", nn.Sequential(_conv_bn(32, 64), nn.MaxPool2d(2)))
    body.add_module("stage3", nn.Sequential(_conv_bn(64, 128), _conv_bn(128, 128)))
    body.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return Backbone("small_cnn", body, 128, [["stage1"], ["stage2"], ["stage3"]])


# --- torchvision ---------------------------------------------------------------------------------------


def _resnet(builder: str, weights_enum: str, n_features: int) -> Callable[[bool, int, int], Backbone]:
    def build(pretrained: bool, in_size: int, in_channels: int) -> Backbone:
        import torchvision

        model = getattr(torchvision.models, builder)(weights=None)
        if pretrained:
            _load_pretrained(model, getattr(torchvision.models, weights_enum).DEFAULT, builder)
        if in_size <= 64:  # small images: 3x3 stride-1 stem, no max-pool (re-initialised)
            model.conv1 = _conv_like(model.conv1, in_channels, kernel_size=3, stride=1, padding=1)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = _conv_like(model.conv1, in_channels)
        model.fc = nn.Identity()
        return Backbone(
            builder,
            model,
            n_features,
            [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]],
            pretrained_input=_torchvision_input(builder, weights_enum) if pretrained else None,
        )

    build.__doc__ = f"torchvision {builder}"
    return build


register_backbone("resnet18", "torchvision ResNet-18 (512 features); 3x3 stem for in_size <= 64")(
    _resnet("resnet18", "ResNet18_Weights", 512)
)
register_backbone("resnet50", "torchvision ResNet-50 (2048 features); 3x3 stem for in_size <= 64")(
    _resnet("resnet50", "ResNet50_Weights", 2048)
)


@register_backbone("efficientnet_b0", "torchvision EfficientNet-B0 (1280 features)")
def _efficientnet_b0(pretrained: bool, in_size: int, in_channels: int) -> Backbone:
    import torchvision

    model = torchvision.models.efficientnet_b0(weights=None)
    if pretrained:
        _load_pretrained(model, torchvision.models.EfficientNet_B0_Weights.DEFAULT, "efficientnet_b0")
    if in_channels != 3:
        model.features[0][0] = _conv_like(model.features[0][0], in_channels)
    model.classifier = nn.Identity()  # avgpool + flatten stay: output (batch, 1280)
    groups = [
        ["features.0"],
        ["features.1", "features.2"],
        ["features.3", "features.4"],
        ["features.5", "features.6"],
        ["features.7", "features.8"],
    ]
    spec = _torchvision_input("efficientnet_b0", "EfficientNet_B0_Weights") if pretrained else None
    return Backbone("efficientnet_b0", model, 1280, groups, pretrained_input=spec)


@register_backbone("convnext_tiny", "torchvision ConvNeXt-T (768 features)")
def _convnext_tiny(pretrained: bool, in_size: int, in_channels: int) -> Backbone:
    import torchvision

    if in_size < 32:
        raise HierclfError(
            f"backbone 'convnext_tiny' downsamples 32x: in_size must be at least 32, got {in_size}"
        )
    model = torchvision.models.convnext_tiny(weights=None)
    if pretrained:
        _load_pretrained(model, torchvision.models.ConvNeXt_Tiny_Weights.DEFAULT, "convnext_tiny")
    if in_channels != 3:
        model.features[0][0] = _conv_like(model.features[0][0], in_channels)
    model.classifier[2] = nn.Identity()  # keep LayerNorm2d + Flatten: output (batch, 768)
    groups = [
        ["features.0"],
        ["features.1"],
        ["features.2", "features.3"],
        ["features.4", "features.5"],
        ["features.6", "features.7", "classifier"],
    ]
    spec = _torchvision_input("convnext_tiny", "ConvNeXt_Tiny_Weights") if pretrained else None
    return Backbone("convnext_tiny", model, 768, groups, pretrained_input=spec)


@register_backbone("vit_b_16", "torchvision ViT-B/16 (768 features); 16x16 patches")
def _vit_b_16(pretrained: bool, in_size: int, in_channels: int) -> Backbone:
    import torchvision

    # Pretrained position embeddings are for 224x224; without weights any multiple of 16 works. Other sizes
    # (e.g. DermaMNIST's 28) are resized to 224 inside the module.
    native = not pretrained and in_size % 16 == 0
    image_size = in_size if native else 224
    model = torchvision.models.vit_b_16(weights=None, image_size=image_size)
    if pretrained:
        _load_pretrained(model, torchvision.models.ViT_B_16_Weights.DEFAULT, "vit_b_16")
    if in_channels != 3:
        model.conv_proj = _conv_like(model.conv_proj, in_channels)
    model.heads = nn.Identity()  # the class token after the final LayerNorm: (batch, 768)
    layers = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    groups = [
        ["conv_proj", "encoder.dropout"],
        layers[0:3],
        layers[3:6],
        layers[6:9],
        [*layers[9:12], "encoder.ln"],
    ]
    spec = _torchvision_input("vit_b_16", "ViT_B_16_Weights") if pretrained else None
    backbone = Backbone(
        "vit_b_16", model, 768, groups, input_size=None if native else 224, pretrained_input=spec
    )
    if not native:
        logger.info("vit_b_16: inputs of %d px are resized to 224 px", in_size)
    return backbone


def backbone_parameters_by_block(backbone: Backbone) -> list[list[nn.Parameter]]:
    """Trainable parameters of each block group (stem first). Parameters outside every group (e.g. ViT's
    class token and position embedding) join the stem group, so each parameter belongs to exactly one group.
    """
    groups: list[list[nn.Parameter]] = []
    seen: set[int] = set()
    for modules in backbone.blocks():
        params = []
        for module in modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        groups.append(params)
    rest = [p for p in backbone.parameters() if id(p) not in seen]
    groups[0] = rest + groups[0]
    return groups
