"""Training logs people read while a run goes: ``history.jsonl`` after every epoch, TensorBoard scalars.

``history.jsonl`` holds one JSON line per finished epoch (the record of ``history.json``: losses, validation
metrics, learning rate, unfrozen blocks, seconds). It is rewritten whole and atomically after each epoch from
the run's selection state (which the checkpoint saved first), so it always matches the last checkpoint, a
resumed run continues it, and a reader never sees half a line.

With ``log: tensorboard`` the numeric fields of each record are written as TensorBoard scalars (tag = the
field name, step = the epoch) into ``<out_dir>/tensorboard`` (``tensorboard --logdir <out_dir>``); a resumed
run appends to the same folder.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hierclf.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["HISTORY_LINES", "TENSORBOARD_DIR", "EpochLogs"]

HISTORY_LINES = "history.jsonl"
TENSORBOARD_DIR = "tensorboard"


class EpochLogs:
    """The per-epoch logs of one run (rank 0 writes; other ranks hold an inactive instance).

    Args:
        out: the run folder.
        loggers: the config's ``log`` list (``["tensorboard"]`` or empty).
        active: whether this process writes (rank 0).
    """

    def __init__(self, out: Path, loggers: list[str], *, active: bool = True) -> None:
        self.out = Path(out)
        self.active = active
        self._writer: Any = None
        if active and "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.out / TENSORBOARD_DIR))

    def write(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``history.jsonl`` from every record so far; send the last record to TensorBoard."""
        if not self.active:
            return
        text = "".join(json.dumps(record, allow_nan=True) + "\n" for record in history)
        atomic_write_text(self.out / HISTORY_LINES, text)
        if self._writer is not None and history:
            record = history[-1]
            for key, value in record.items():
                if key != "epoch" and _is_number(value):
                    self._writer.add_scalar(key, float(value), global_step=int(record["epoch"]))
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
