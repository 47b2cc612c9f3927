"""The errors a training run raises on bad settings, data, checkpoints or process groups.

All are :class:`~hierclf.errors.HierclfError` subclasses, so ``hierclf train`` prints them as one line and
exits with status 1; a bad argument or setting also subclasses ``ValueError``. Configuration files are
checked earlier, with positions, by :class:`hierclf.train.config.ConfigError`.
"""

from __future__ import annotations

from hierclf.errors import HierclfError

__all__ = ["CheckpointError", "DistributedError", "TrainSettingError", "TrainingDataError", "TrainingError"]


class TrainingError(HierclfError):
    """Base class of the errors of a training run."""


class TrainSettingError(TrainingError, ValueError):
    """A setting or argument that cannot work: a negative seed, a batch that does not split over the
    processes, a missing device, a selection metric on a node the head cannot score."""


class TrainingDataError(TrainingError, ValueError):
    """The data does not fit the run, e.g. an empty training split."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be read, or was written by a run with other settings."""


class DistributedError(TrainingError):
    """The process group for distributed training cannot be set up."""
