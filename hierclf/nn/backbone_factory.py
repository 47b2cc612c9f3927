"""Your own backbone from a config: ``backbone: {factory: "package.module:function", kwargs: {...}}``.

The contract (checked when the backbone is built, each breach one line naming the factory):

* ``function(**kwargs)`` returns ``(module, n_features)``: an ``nn.Module`` and a positive ``int``;
* ``module(images (batch, C, H, W))`` returns features ``(batch, n_features)``, as timm's
  ``forward_features`` followed by pooling (no classifier: hierclf's head sits on top). hierclf checks it on a
  batch of two zero images of the configured size;
* block groups for gradual unfreezing: a :class:`~hierclf.nn.backbones.Backbone` keeps its own; a module
  with timm's ``group_matcher`` is grouped as timm groups it; any other module by its top-level children
  with parameters, in order (the first is the stem);
* weights are the factory's business (load them inside, from ``kwargs``): ``pretrained: true`` is refused.
  A module with a timm-style ``pretrained_cfg`` (``input_size``, ``mean``, ``std``) declares the input its
  weights expect, which the preprocessing then follows.

The target is imported with :mod:`importlib` (``package.module`` must be importable: installed, or on
``PYTHONPATH``); ``function`` may be a dotted attribute path (``Class.create``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hierclf.errors import did_you_mean
from hierclf.nn.backbone_base import Backbone, BackboneError, PretrainedInput

__all__ = ["build_from_factory", "import_factory"]

_FIELD = ("backbone", "factory")


def _fail(target: str, message: str) -> BackboneError:
    return BackboneError(f"backbone.factory {target!r}: {message}", field=_FIELD)


def import_factory(target: str) -> Callable[..., Any]:
    """The callable ``package.module:function`` names.

    Raises:
        BackboneError: not of that form, the module cannot be imported, or it lacks the function (with the
            closest names it has).

    Example:
        >>> import_factory("collections:OrderedDict").__name__
        'OrderedDict'
    """
    module_name, sep, attribute = str(target).partition(":")
    if not sep or not module_name or not attribute:
        raise _fail(target, "expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ModuleNotFoundError, or the module's own import failing
        raise _fail(target, f"cannot import module {module_name!r} ({type(exc).__name__}: {exc})") from None
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            known = [n for n in dir(value) if not n.startswith("_")]
            hint = did_you_mean(part, known)
            suffix = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
            raise _fail(target, f"module {module_name!r} has no attribute {attribute!r}{suffix}")
        value = getattr(value, part)
    if not callable(value):
        raise _fail(target, f"{attribute!r} is a {type(value).__name__}, not a function")
    return value


def _returned(target: str, result: Any) -> tuple[nn.Module, int]:
    """``(module, n_features)`` from what the factory returned, or the breach of the contract."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        got = f"a {type(result).__name__}" + (
            f" of {len(result)} items" if isinstance(result, (tuple, list)) else ""
        )
        raise _fail(target, f"returned {got}; expected (module, n_features)")
    module, width = result
    if not isinstance(module, nn.Module):
        raise _fail(target, f"returned a {type(module).__name__} as the module; expected a torch.nn.Module")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise _fail(target, f"returned n_features={width!r}; expected a positive int")
    return module, width


def _check_forward(target: str, module: nn.Module, width: int, in_size: int, in_channels: int) -> None:
    """Run the module on two zero images and check the feature shape ``(2, n_features)``."""
    was_training = module.training
    module.eval()
    shape = (2, in_channels, in_size, in_size)
    try:
        with torch.no_grad():
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            out = module(torch.zeros(shape, device=device))
    except Exception as exc:  # noqa: BLE001 - whatever the user's forward raises
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _fail(target, f"the module fails on a {shape} batch ({type(exc).__name__}: {first})") from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, width):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _fail(
            target, f"the module maps a {shape} batch to {got}; expected (2, {width}) = (batch, n_features)"
        )


def _block_paths(module: nn.Module) -> list[list[str]]:
    if hasattr(module, "group_matcher"):
        from hierclf.nn.timm_models import _groups

        return _groups(module)
    groups = [[n] for n, child in module.named_children() if any(True for _ in child.parameters())]
    return groups or [[""]]


def _declared_input(module: nn.Module) -> PretrainedInput | None:
    """A timm-style ``pretrained_cfg`` on the module: the input its weights expect."""
    cfg = getattr(module, "pretrained_cfg", None)
    if not isinstance(cfg, dict) or not cfg.get("mean") or not cfg.get("std"):
        return None
    size = cfg.get("input_size")
    return PretrainedInput(
        int(size[-1]) if size else None,
        tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        "the factory module's pretrained_cfg",
    )


def build_from_factory(
    target: str, kwargs: dict[str, Any], *, pretrained: bool, in_size: int, in_channels: int = 3
) -> Backbone:
    """Call the factory and check its contract (module docstring); returns a :class:`Backbone`.

    Raises:
        BackboneError: the import or the contract fails (one line naming the factory and the breach).
    """
    if pretrained:
        raise BackboneError(
            f"backbone.factory {target!r} loads its own weights: pass them through backbone.kwargs and set "
            "pretrained: false",
            field=("pretrained",),
        )
    function = import_factory(target)
    try:
        result = function(**kwargs)
    except TypeError as exc:
        raise _fail(target, f"cannot be called with kwargs {sorted(kwargs)} ({exc})") from None
    module, width = _returned(target, result)
    _check_forward(target, module, width, in_size, in_channels)
    if isinstance(module, Backbone):
        return module
    name = f"factory:{target}"
    return Backbone(name, module, width, _block_paths(module), pretrained_input=_declared_input(module))
