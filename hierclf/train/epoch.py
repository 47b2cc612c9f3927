"""One training epoch: what trains (the regime), DDP wrapping, the batches, and the mean training loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hierclf.train.regimes import set_modes, set_trainable, unfrozen_blocks
from hierclf.train.run import TrainingRun
from hierclf.train.seeding import seed_worker

__all__ = ["EpochOutcome", "EpochStep"]


@dataclass(frozen=True)
class EpochOutcome:
    """What an epoch of training did: the mean training loss over every rank's samples, and how many
    backbone block groups trained."""

    train_loss: float
    unfrozen_blocks: int


class EpochStep:
    """One pass over the training batches of an epoch, as often as the run has epochs.

    It owns the DDP wrapper of the run's model: built before the first epoch under DDP, and built again
    when gradual unfreezing changes which parameters train (DDP registers the trainable parameters when
    it is built).

    Args:
        run: the run.
        show_progress: show a tqdm bar (rank 0 on a terminal only; the caller decides).
    """

    def __init__(self, run: TrainingRun, *, show_progress: bool) -> None:
        self.run = run
        self.show_progress = show_progress
        self._wrapped: nn.Module = run.model
        self._wrapped_for: int | None = None

    def __call__(self, epoch: int) -> EpochOutcome:
        """Train epoch ``epoch`` (0-based)."""
        run = self.run
        n_unfrozen = unfrozen_blocks(run.config, epoch, len(run.blocks))
        set_trainable(run.blocks, n_unfrozen)
        self._wrap(n_unfrozen)
        set_modes(run.model, run.config, n_unfrozen)
        run.sampler.set_epoch(epoch)
        loss_sum, n_seen = self._train_batches(epoch)
        loss_sum, n_seen = run.group.sum_loss(loss_sum, n_seen)
        return EpochOutcome(float(loss_sum.item()) / max(1, n_seen), n_unfrozen)

    def _wrap(self, n_unfrozen: int) -> None:
        """Under DDP, (re)wrap the model when the set of trainable parameters changed."""
        run = self.run
        if not run.group.enabled or self._wrapped_for == n_unfrozen:
            return
        from torch.nn.parallel import DistributedDataParallel

        self._wrapped = DistributedDataParallel(
            run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None
        )
        self._wrapped_for = n_unfrozen

    def _train_batches(self, epoch: int) -> tuple[torch.Tensor, int]:
        """Optimiser steps over this rank's share of the epoch's batches: (summed loss, samples seen)."""
        from torch.utils.data import DataLoader

        run = self.run
        loader = DataLoader(
            run.datasets["train"],
            batch_sampler=run.sampler,
            num_workers=run.config.workers,
            worker_init_fn=seed_worker,
            pin_memory=run.device.type == "cuda",
            generator=run.seeds.loader_workers(epoch),
        )
        augment_gen = run.seeds.batch_augmentation(
            epoch
        )  # exact on resume: a function of (seed, epoch, rank)
        loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
        n_seen = 0
        bar = _progress(loader, epoch, run.config.epochs, not self.show_progress)
        for images, targets in bar:
            loss, n = self._step(images, targets, augment_gen)
            loss_sum += loss.detach().double() * n
            n_seen += n
            if self.show_progress:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        return loss_sum, n_seen

    def _step(
        self, images: torch.Tensor, targets: torch.Tensor, augment_gen: torch.Generator
    ) -> tuple[Any, int]:
        """One optimiser step on a batch: (its mean loss, its size)."""
        run = self.run
        images = images.to(run.device, non_blocking=True)
        if run.pipeline.train_batch is not None:
            images = run.pipeline.train_batch(images, generator=augment_gen)
        targets = targets.to(run.device, non_blocking=True)
        with run.precision.autocast():
            logits = self._wrapped(images)
        loss = run.criterion(logits.float(), targets)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        return loss, len(targets)


def _progress(loader: Any, epoch: int, epochs: int, disable: bool) -> Any:
    """The loader, or a tqdm bar over it (``disable`` False)."""
    if disable:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
