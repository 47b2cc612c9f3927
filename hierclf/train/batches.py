"""The training batches of an epoch: a pure function of ``(seed, epoch)``, sharded over the processes."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from hierclf.train.errors import TrainingDataError, TrainSettingError
from hierclf.train.seeding import SeedStreams

__all__ = ["EpochBatchSampler"]


class EpochBatchSampler:
    """Batches of indices whose order depends only on ``(seed, epoch)``; in DDP each rank takes a slice.

    Every rank draws the same global order for an epoch (a permutation for uniform sampling, or
    ``n`` draws with replacement from ``weights`` for class-balanced sampling), cuts it into global batches
    of ``batch_size`` and yields its own contiguous share of each batch (``batch_size / world_size``
    samples). A single process and ``N`` processes therefore see the same global batches, and a run resumed
    at epoch ``e`` sees the same batches as one that never stopped. This is the distributed form of
    ``hierclf.data.sampling.make_sampler`` (same weights, ``hierclf.data.sampling.sampler_weights``). The
    order's generator is :meth:`hierclf.train.seeding.SeedStreams.data_order`.

    Args:
        n: dataset size.
        batch_size: the global batch size (divisible by ``world_size``).
        weights: per-sample draw weights ``(n,)``, or None for a shuffled pass over all samples.
        seed: base seed.
        world_size, rank: the process group (1, 0 when not distributed).
        drop_last: drop the final incomplete global batch (default True when ``n >= batch_size``).
        max_steps: cap on batches per epoch.

    Raises:
        TrainingDataError: ``n`` is 0 (an empty training split).
        TrainSettingError: ``batch_size`` is not divisible by ``world_size``.

    Example:
        >>> s = EpochBatchSampler(10, 4, seed=0)
        >>> len(s), sorted(i for b in s for i in b) == sorted(set(i for b in s for i in b))
        (2, True)
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        weights: torch.Tensor | None = None,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
        drop_last: bool | None = None,
        max_steps: int | None = None,
    ) -> None:
        if n <= 0:
            raise TrainingDataError("the training split is empty")
        if batch_size % world_size:
            raise TrainSettingError(
                f"batch_size {batch_size} (the global batch) must be divisible by the number "
                f"of processes ({world_size})"
            )
        self.n, self.batch_size, self.weights = n, batch_size, weights
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.drop_last = (n >= batch_size) if drop_last is None else drop_last
        self.max_steps = max_steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (0-based) whose batches the next iteration yields."""
        self.epoch = epoch

    def global_order(self) -> torch.Tensor:
        """The indices of the epoch in order, identical on every rank: ``(n,)`` int64."""
        g = SeedStreams(self.seed).data_order(self.epoch)
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights.double(), self.n, replacement=True, generator=g)

    def __len__(self) -> int:
        """Batches per epoch (at least 1, at most ``max_steps``)."""
        steps = self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)
        return max(1, min(steps, self.max_steps)) if self.max_steps else max(1, steps)

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's share of each global batch of the epoch, as lists of dataset indices."""
        order = self.global_order()
        for step in range(len(self)):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield torch.tensor_split(batch, self.world_size)[self.rank].tolist()
