"""Reading files of tensors (checkpoints, pretrained weights) safely, with one clear line when it fails.

Only ``torch.load(..., weights_only=True)``: a file that needs code to load (a pickled object) is refused,
never run. What PyTorch says when a file cannot be read spans many lines (advice about ``weights_only``, the
unpickler's internals); hierclf says what the file is in one line, naming it.
"""

from __future__ import annotations

import pickle
import stat
import warnings
from pathlib import Path
from typing import Any

import torch

from hierclf.errors import HierclfError

__all__ = ["TensorFileError", "load_tensor_file"]


class TensorFileError(HierclfError, ValueError):
    """A file of tensors that cannot be read: missing, not a PyTorch file, truncated, or not weights only."""


def _why(exc: BaseException) -> str:
    text = str(exc)
    if "Unsupported global" in text:  # a pickled object: loading it would run its code
        return "it holds Python objects that need code to load, and hierclf loads weights only"
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        return "not a PyTorch file of tensors"
    if "central directory" in text or "zip archive" in text:
        return "truncated or not a PyTorch file (its zip archive is damaged)"
    return f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else 'unreadable'}"


def load_tensor_file(path: str | Path, *, what: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, failures as one :class:`TensorFileError`.

    Args:
        path: the file.
        what: what the file should be, for the message (``"checkpoint"``, ``"pretrained weights"``).
        hint: what the user can do, appended to the message (``"delete it or run with --no-resume"``).
    """
    file = Path(path)
    suffix = f"; {hint}" if hint else ""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise TensorFileError(f"{what} {file} not found{suffix}") from None
    if not stat.S_ISREG(mode):
        raise TensorFileError(f"{what} {file} is not a regular file{suffix}")
    try:
        with warnings.catch_warnings():  # the unpickler's protocol warning is noise next to our message
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the same user-facing problem
        raise TensorFileError(f"cannot read {what} {file}: {_why(exc)}{suffix}") from None
