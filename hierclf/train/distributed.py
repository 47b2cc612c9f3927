"""The device and the process group of a training run (one process, or DDP under ``torchrun``).

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1``
:func:`init_process_group` joins the group (NCCL on GPUs, gloo on the CPU) and :class:`ProcessGroup` offers
the few collectives the loop needs. Without it every collective is a no-op, so the loop has one code path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hierclf.train.errors import DistributedError, TrainSettingError

logger = logging.getLogger(__name__)

__all__ = ["ProcessGroup", "init_process_group", "pick_device"]


@dataclass
class ProcessGroup:
    """This process's place in the run: ``rank`` of ``world_size`` (0 of 1 when not distributed).

    Attributes:
        rank: global rank (0 writes the files).
        world_size: number of processes.
        local_rank: rank on this machine (the GPU index under ``torchrun``).
        initialised_here: this process called ``init_process_group`` and destroys the group at the end.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        """True under DDP (more than one process)."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes files and reports."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op in a single process)."""
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum_loss(self, loss_sum: torch.Tensor, n_seen: int) -> tuple[torch.Tensor, int]:
        """The sum of the ranks' summed losses and sample counts (unchanged in a single process)."""
        if not self.enabled:
            return loss_sum, n_seen
        totals = torch.stack(
            [loss_sum, torch.tensor(float(n_seen), dtype=torch.float64, device=loss_sum.device)]
        )
        dist.all_reduce(totals)
        return totals[0], int(totals[1].item())

    def close(self) -> None:
        """Destroy the process group if this process created it."""
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def init_process_group(device: torch.device) -> ProcessGroup:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (NCCL on CUDA, gloo on the CPU).

    Raises:
        DistributedError: this torch build lacks ``torch.distributed`` or the gloo backend.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessGroup()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return ProcessGroup(rank, world, local, False)
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives (all_gather_object, barrier) use the current device
    if backend == "gloo" and not dist.is_gloo_available():
        raise DistributedError("distributed training on CPU needs the gloo backend, which this torch lacks")
    dist.init_process_group(backend=backend)
    logger.info("process group: %s, rank %d of %d", backend, rank, world)
    return ProcessGroup(rank, world, local, True)


def pick_device(spec: str) -> torch.device:
    """The device of the ``device`` setting: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:<i>``,
    ``mps``; under DDP ``cuda`` means ``cuda:LOCAL_RANK``.

    Raises:
        TrainSettingError: the device is not available on this machine.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainSettingError(
                f"device {spec!r} requested but CUDA is not available (use device: cpu or auto)"
            )
        if spec == "cuda":
            return torch.device("cuda", local if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0)
        index, count = int(spec.split(":", 1)[1]), torch.cuda.device_count()
        if index >= count:
            raise TrainSettingError(
                f"device {spec!r} requested but this machine has {count} CUDA device(s) (cuda:0 .. "
                f"cuda:{count - 1})"
            )
    if spec == "mps" and not torch.backends.mps.is_available():
        raise TrainSettingError("device 'mps' requested but MPS is not available (use device: cpu or auto)")
    return torch.device(spec)
