"""The optimiser, its learning-rate schedule and mixed precision (AMP) of a training run."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from hierclf.train.config import TrainConfig

__all__ = ["Precision", "lr_factor", "make_optimizer", "make_scheduler"]


def lr_factor(
    step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine", min_ratio: float = 0.0
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Linear warmup from ``1/warmup_steps`` to 1 over the first ``warmup_steps`` steps, then cosine decay to
    ``min_ratio`` at ``total_steps`` (or constant 1).

    Example:
        >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (Nesterov when ``momentum > 0``) over the parameter groups, each with its own ``lr``.

    ``initial_lr`` is recorded in each group (what ``LambdaLR`` scales).
    """
    for g in groups:
        g["initial_lr"] = g["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per optimiser step: warmup over ``round(warmup_epochs * steps_per_epoch)`` steps, then the schedule
    (:func:`lr_factor`) to the last step of the last epoch."""
    total = steps_per_epoch * config.epochs
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, config.schedule, config.min_lr_ratio)
    )


@dataclass(frozen=True)
class Precision:
    """Mixed precision of the forward passes: float16 autocast with a ``GradScaler`` on CUDA, bfloat16
    autocast (no scaler) when ``amp: true`` on the CPU, plain float32 otherwise."""

    enabled: bool
    dtype: torch.dtype
    device_type: str

    @classmethod
    def of(cls, config: TrainConfig, device: torch.device) -> Precision:
        """The precision that ``config.amp`` asks for on ``device`` (``auto``: on for CUDA only)."""
        enabled = (device.type == "cuda") if config.amp == "auto" else bool(config.amp)
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        return cls(enabled, dtype, device.type)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for float16 only (bfloat16 needs none)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> AbstractContextManager[Any]:
        """The context for forward passes."""
        if self.enabled:
            return torch.autocast(self.device_type, dtype=self.dtype)
        return nullcontext()
