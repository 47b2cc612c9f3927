"""timm as a backbone source: any model of timm's registry by name, ``timm/<model>[.<tag>]``.

``timm.create_model(name, num_classes=0)`` gives a feature extractor (timm's contract: ``forward`` returns
the pooled pre-logits features); everything hierclf needs is read from the model, never from a table:

* the feature width: ``model.head_hidden_size`` (the width ``forward`` returns; ``num_features`` in models
  without a pre-logits layer);
* the block groups for gradual unfreezing: timm's own coarse grouping (``model.group_matcher(coarse=True)``,
  the groups timm's layer-wise learning-rate decay uses: stem, stages or transformer blocks, in order), or
  the top-level children when a model has none;
* the input its weights expect: the pretrained config's ``input_size``, ``mean`` and ``std``.

Models with a fixed input size (ViTs: position embeddings for one grid) are built for the input size asked
for; pretrained position embeddings are resampled to it by timm's checkpoint filter.

Pretrained weights come from the Hugging Face hub cache (``hf_hub_id`` of the pretrained config; the
``.safetensors`` file first) or, for the few models without a hub copy, the torch hub cache
(:mod:`hierclf.nn.weights_cache`), and are handed to timm's own loader, which adapts the classifier, the
input convolution and the position embeddings.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from torch import nn

from hierclf.errors import HierclfError, UnknownNameError
from hierclf.nn.backbone_base import Backbone, BackboneError, PretrainedInput
from hierclf.nn.weights_cache import fetch_hub_file, fetch_url_file, read_weights

logger = logging.getLogger(__name__)

__all__ = ["build_timm_backbone", "resolve_timm_name", "timm_names", "timm_pretrained_input"]

#: hub files of timm weights, in order of preference (timm's own order: safetensors first)
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@functools.lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every model name timm knows: architectures and ``architecture.tag`` names with weights."""
    import timm

    return tuple(sorted(set(timm.list_models()) | set(timm.list_pretrained())))


def resolve_timm_name(text: str) -> str:
    """The timm model name ``text`` means (lower case, tag checked), or :class:`UnknownNameError` (whose
    suggestions are ``timm/`` names, as a config writes them).

    Example:
        >>> resolve_timm_name("ResNet18.a1_in1k")
        'resnet18.a1_in1k'
    """
    import timm
    from timm.models import get_arch_pretrained_cfgs, split_model_name_tag

    name = text.strip().lower()
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise UnknownNameError(
            "backbone",
            f"timm/{text}",
            [f"timm/{n}" for n in timm_names()],
            f"(timm lists {len(timm.list_models())} models: timm.list_models())",
        )
    if tag:
        tags = sorted(split_model_name_tag(k)[1] for k in get_arch_pretrained_cfgs(arch))
        if tag not in tags:
            raise UnknownNameError(
                "timm pretrained tag", tag, tags, f"of {arch!r} (its tags: {', '.join(tags) or 'none'})"
            )
    return name


def _pretrained_cfg(name: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return {} if cfg is None else cfg.to_dict()


def timm_pretrained_input(name: str) -> PretrainedInput | None:
    """Resolution, mean and std of a timm model's pretrained config (None when it has none)."""
    cfg = _pretrained_cfg(name)
    if not cfg.get("input_size"):
        return None
    mean, std = cfg.get("mean") or (0.485, 0.456, 0.406), cfg.get("std") or (0.229, 0.224, 0.225)
    if len(mean) != 3 or len(std) != 3:  # grey-image models: hierclf normalises RGB
        return None
    tag = f"{cfg.get('architecture', name)}.{cfg.get('tag')}" if cfg.get("tag") else name
    return PretrainedInput(
        int(cfg["input_size"][-1]),
        tuple(float(v) for v in mean),  # type: ignore[arg-type]
        tuple(float(v) for v in std),  # type: ignore[arg-type]
        f"timm pretrained_cfg of {tag}",
    )


def _weights_file(name: str, cfg: dict[str, Any]) -> Path:
    """The pretrained file of a timm model, from the hub cache (or the torch hub cache for URL weights)."""
    what = repr(f"timm/{name}")
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        repo, _, revision = str(hub_id).partition("@")
        files = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HUB_FILES
        return fetch_hub_file(repo, files, revision=revision or None, what=what)
    if cfg.get("url"):
        return fetch_url_file(str(cfg["url"]), what=what)
    raise HierclfError(
        f"timm model {name!r} has no pretrained weights; name a tag that has some (timm.list_pretrained"
        f"('{name.split('.')[0]}*')) or use pretrained: false"
    )


def _groups(model: nn.Module) -> list[list[str]]:
    """Module paths of timm's coarse parameter groups, stem first; top-level children as a fallback."""
    try:
        from timm.models import group_modules

        grouped = group_modules(model, model.group_matcher(coarse=True))  # type: ignore[operator]
        groups = [list(grouped[k]) for k in sorted(grouped)]
        groups = [[p for p in g if p] for g in groups]
        groups = [g for g in groups if g]
        if len(groups) >= 2:
            return groups
    except (AttributeError, NotImplementedError, TypeError):  # a model without timm's group matcher
        pass
    return [[n] for n, child in model.named_children() if any(True for _ in child.parameters())]


def _check_fit(model: nn.Module, state: dict[str, Any], path: Path, name: str) -> None:
    """Refuse weights that share (almost) no tensor with the model: timm loads non-strictly once the
    classifier is dropped, so weights of another network would otherwise leave it at random."""
    own = model.state_dict()
    matching = sum(1 for k, v in own.items() if k in state and tuple(state[k].shape) == tuple(v.shape))
    if matching < 0.5 * len(own):
        raise BackboneError(
            f"pretrained weights {path} do not fit 'timm/{name}': {matching} of its {len(own)} tensors match "
            "the file by name and shape"
        )


def build_timm_backbone(name: str, pretrained: bool, in_size: int, in_channels: int) -> Backbone:
    """``timm.create_model(name, num_classes=0, in_chans=in_channels)`` as a :class:`Backbone`.

    Raises:
        WeightsNotCachedError: pretrained weights not cached and not downloadable.
        BackboneError: the weights do not fit the model.
    """
    import timm

    cfg = _pretrained_cfg(name)
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
    if cfg.get("fixed_input_size"):
        kwargs["img_size"] = in_size
    if not pretrained:
        model = timm.create_model(name, pretrained=False, **kwargs)
    else:
        path = _weights_file(name, cfg)
        state = read_weights(path)
        try:
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs
            )
        except RuntimeError as exc:  # shapes of another network
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "RuntimeError"
            raise BackboneError(f"pretrained weights {path} do not fit 'timm/{name}': {first}") from None
        cfg_of_model: Any = getattr(model, "pretrained_cfg", {})
        cfg_of_model.pop("state_dict", None)  # the weights are loaded: keep no second reference to them
        _check_fit(model, state, path, name)
        logger.info("loaded pretrained weights %s into timm/%s", path, name)
    width = int(getattr(model, "head_hidden_size", None) or getattr(model, "num_features"))  # noqa: B009
    spec = timm_pretrained_input(name) if pretrained else None
    return Backbone(f"timm/{name}", model, width, _groups(model), pretrained_input=spec)
