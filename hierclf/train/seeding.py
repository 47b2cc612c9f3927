"""Seeds of a training run: one call seeding the global generators, and the run's seed streams.

``set_determinism(seed)`` (as MONAI's) seeds Python's ``random``, NumPy's global generator, torch on the CPU
and every CUDA device, and returns a ``torch.Generator`` for DataLoaders; pass :func:`seed_worker` as
``worker_init_fn`` so that each DataLoader worker derives its ``random`` and NumPy seeds from the seed torch
gives it.

Bitwise reproducibility on a GPU also needs ``deterministic_algorithms=True`` (slower kernels; some
operations then raise) and the environment variable ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which this function
sets when it is not set yet.

:class:`SeedStreams` is the one place that says which seed every generator of a training run gets (model
initialisation, data order, DataLoader workers, augmentation); ``hierclf.train`` takes every seed from it.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hierclf.train.errors import TrainSettingError

logger = logging.getLogger(__name__)

__all__ = ["SeedStreams", "get_rng_state", "seed_worker", "set_determinism", "set_rng_state"]

#: multiplier that spreads epochs of different seeds apart: ``seed * _EPOCH_STRIDE + epoch`` never collides
#: for the epochs of one seed and rarely across seeds (a prime larger than any number of epochs)
_EPOCH_STRIDE = 1_000_003
#: multiplier that spreads the ranks of one epoch apart in the batched-augmentation stream (a prime)
_RANK_STRIDE_AUGMENT = 4099
#: offset between the ranks' seeds of the per-rank augmentation stream (a prime)
_RANK_STRIDE_GLOBAL = 7919


def set_determinism(seed: int, deterministic_algorithms: bool = False) -> torch.Generator:
    """Seed ``random``, NumPy, torch (CPU and all CUDA devices); optionally force deterministic kernels.

    Args:
        seed: any integer >= 0.
        deterministic_algorithms: also call ``torch.use_deterministic_algorithms(True)`` and turn off cuDNN
            benchmarking (needed for bitwise-repeatable GPU runs; costs speed).

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for ``DataLoader(generator=...)``.

    Raises:
        TrainSettingError: ``seed`` is negative.

    Example:
        >>> g = set_determinism(7)
        >>> a = torch.rand(2); _ = set_determinism(7); b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    if seed < 0:
        raise TrainSettingError(f"seed must be >= 0, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic_algorithms:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    logger.debug(
        "seeded random, numpy and torch with %d (deterministic algorithms: %s)",
        seed,
        deterministic_algorithms,
    )
    return generator


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random`` and NumPy in a worker from the seed torch gave it.

    torch seeds each worker with ``base_seed + worker_id`` (``base_seed`` drawn from the loader's generator);
    ``random`` and NumPy would otherwise start from the parent's state in every worker.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def get_rng_state() -> dict[str, Any]:
    """The states of ``random``, NumPy, torch CPU and CUDA generators, for checkpoints (picklable by
    ``torch.save`` and loadable with ``weights_only=True``: tensors, ints, strings and lists only)."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class SeedStreams:
    """Every generator seed of a training run, from the run's ``seed`` and the process's ``rank``.

    Each stream is separate so that one random choice never shifts another: drawing more augmentations
    (larger images, another policy) must not change the data order, and resuming at epoch ``e`` must
    reproduce epoch ``e``'s batches and augmentations without replaying epochs ``0 .. e-1``. Streams that
    depend on the epoch are therefore pure functions of ``(seed, epoch[, rank])``; the global generators
    (Python's ``random``, NumPy, torch), which per-sample transforms draw from, are instead saved in and
    restored from the checkpoint.

    The streams (the formulas are those of every earlier hierclf run, so old runs reproduce and resume):

    * :attr:`model_init`: the global generators are set to ``seed`` at the start of the run and again right
      before the model is built, so the initial weights depend on the seed only (not on what loading the
      data drew).
    * :meth:`data_order`: ``seed * 1_000_003 + epoch``, the epoch's permutation or weighted draws
      (``EpochBatchSampler``); identical on every rank, so the ranks split the same global batches.
    * :meth:`loader_workers`: the training DataLoader's generator, from which torch draws the base seed of
      its worker processes (each worker then seeds ``random`` and NumPy with :func:`seed_worker`). It has
      the data order's seed value, but it is another generator object: the DataLoader's one draw never
      moves the data order.
    * :meth:`batch_augmentation`: ``(seed * 1_000_003 + epoch) * 4099 + rank``, the generator of the
      batched pipeline's on-device augmentation (``BatchTransform``); per rank, because each rank augments
      its own share of the batch.
    * :attr:`rank_augmentation`: ``seed + 7919 * rank``, the global torch generator of a fresh distributed
      run after the model is built, so that each rank's per-sample augmentations differ (rank 0 gets
      ``seed``). Not applied on resume, where each rank's saved generator states are restored instead.

    Example:
        >>> s = SeedStreams(seed=3, rank=1)
        >>> s.model_init, s.data_order_seed(2), s.batch_augmentation_seed(2), s.rank_augmentation
        (3, 3000011, 12297045090, 7922)
    """

    seed: int
    rank: int = 0

    @property
    def model_init(self) -> int:
        """Seed of the global generators at the start of the run and before the model is built."""
        return self.seed

    def data_order_seed(self, epoch: int) -> int:
        """Seed of the data order of ``epoch`` (0-based), the same on every rank."""
        return self.seed * _EPOCH_STRIDE + epoch

    def data_order(self, epoch: int) -> torch.Generator:
        """A fresh CPU generator for the data order of ``epoch``."""
        return torch.Generator().manual_seed(self.data_order_seed(epoch))

    def loader_workers(self, epoch: int) -> torch.Generator:
        """A fresh CPU generator for the training DataLoader of ``epoch`` (its workers' base seed)."""
        return torch.Generator().manual_seed(self.data_order_seed(epoch))

    def batch_augmentation_seed(self, epoch: int) -> int:
        """Seed of the batched augmentation of ``epoch`` on this rank."""
        return self.data_order_seed(epoch) * _RANK_STRIDE_AUGMENT + self.rank

    def batch_augmentation(self, epoch: int) -> torch.Generator:
        """A fresh CPU generator for the batched augmentation of ``epoch`` on this rank."""
        return torch.Generator().manual_seed(self.batch_augmentation_seed(epoch))

    @property
    def rank_augmentation(self) -> int:
        """Seed of this rank's global torch generator in a fresh distributed run, after model building."""
        return self.seed + _RANK_STRIDE_GLOBAL * self.rank


def _to_plain(value: Any) -> Any:
    """Tuples (of Python's ``random`` state) as lists, which ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value
