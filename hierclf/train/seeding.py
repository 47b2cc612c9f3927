"""One call seeding every random number generator a training run touches (as MONAI's ``set_determinism``).

``set_determinism(seed)`` seeds Python's ``random``, NumPy's global generator, torch on the CPU and every CUDA
device, and returns a ``torch.Generator`` for DataLoaders; pass :func:`seed_worker` as ``worker_init_fn`` so
that each DataLoader worker derives its ``random`` and NumPy seeds from the seed torch gives it.

Bitwise reproducibility on a GPU also needs ``deterministic_algorithms=True`` (slower kernels; some
operations then raise) and the environment variable ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which this function
sets when it is not set yet.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["get_rng_state", "seed_worker", "set_determinism", "set_rng_state"]


def set_determinism(seed: int, deterministic_algorithms: bool = False) -> torch.Generator:
    """Seed ``random``, NumPy, torch (CPU and all CUDA devices); optionally force deterministic kernels.

    Args:
        seed: any integer >= 0.
        deterministic_algorithms: also call ``torch.use_deterministic_algorithms(True)`` and turn off cuDNN
            benchmarking (needed for bitwise-repeatable GPU runs; costs speed).

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for ``DataLoader(generator=...)``.

    Example:
        >>> g = set_determinism(7)
        >>> a = torch.rand(2); _ = set_determinism(7); b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
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


def _to_plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value
