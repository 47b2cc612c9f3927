"""Whether a finished run may be reused: same settings, same data, outputs whole.

A run folder with ``DONE`` is returned as it is by the next :func:`~hierclf.train.loop.fit` (a study rerun
reuses its finished seeds). That is right only when nothing changed, so ``DONE`` records what the run was:

* ``settings``: the resolved configuration; a setting that changes what is computed (everything but
  :data:`~hierclf.train.checkpoint.RESUME_FREE`: paths, device, workers) is compared, and a difference is
  refused with the settings named (``--no-resume`` or another folder starts over). The one exception is
  more ``epochs``: the finished run goes on from its checkpoint with the schedule recomputed (unless early
  stopping ended it);
* ``data``: a fingerprint of the data the run read (:func:`hierclf.train.fingerprint.data_fingerprint`);
  other data is refused;
* ``files``: the SHA-256 of every output the run wrote (prediction files, ``history.json``, ``best.pt``); a
  file that is missing or changed (a truncated prediction file) makes the run produce its outputs again from
  its checkpoint (or train again when that is gone too).

A ``DONE`` that cannot be read (or one written by an older hierclf, without these fields) is not trusted
either: the run continues as if it were absent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hierclf.train.checkpoint import BEST, CHECKPOINT, DONE, HISTORY, check_same_config
from hierclf.train.errors import CheckpointError
from hierclf.train.fingerprint import file_digests

logger = logging.getLogger(__name__)

__all__ = ["output_names", "reusable_summary"]


def output_names(predictions: Iterable[Path], out: Path) -> list[str]:
    """The outputs of a finished run whose digests ``DONE`` records."""
    names = [str(Path(p).resolve().relative_to(out.resolve())) for p in predictions]
    return [*names, HISTORY, BEST]


def _read_done(out: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((out / DONE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning(
            "%s cannot be read (%s); continuing the run as if it had not finished", out / DONE, exc
        )
        return None
    needed = ("settings", "data", "files", "classes", "predictions")
    if not isinstance(summary, dict) or any(k not in summary for k in needed):
        logger.warning(
            "%s does not say what the run was (an older hierclf wrote it); finishing it again", out / DONE
        )
        return None
    return summary


def _check_extensible(out: Path, summary: dict[str, Any], epochs: int) -> None:
    """A finished run can go on for more epochs, unless early stopping ended it (it would stop again)."""
    if summary.get("stopped_early"):
        raise CheckpointError(
            f"cannot extend {out} to {epochs} epochs: early stopping ended it after epoch "
            f"{summary['epochs_run']} (no improvement for early_stopping.patience epochs), so it would stop "
            "again at once; use --no-resume to train it again with the new epochs"
        )


def reusable_summary(out: Path, settings: dict[str, Any], data: str) -> dict[str, Any] | None:
    """The ``DONE`` summary of a finished run that may be reused as it is, or ``None`` when the run must
    produce its outputs again (its ``DONE`` is then removed).

    Raises:
        CheckpointError: the run was trained with other settings or on other data (named).
    """
    summary = _read_done(out)
    if summary is not None:
        check_same_config(
            summary["settings"], settings, out / DONE, verb="reuse", epochs_done=int(summary["epochs_run"])
        )
        if summary["settings"].get("epochs") != settings["epochs"]:
            _check_extensible(out, summary, int(settings["epochs"]))
            logger.info(
                "%s: the finished run goes on from %d to %d epochs (learning-rate schedule recomputed)",
                out,
                summary["epochs_run"],
                settings["epochs"],
            )
            (out / DONE).unlink(missing_ok=True)
            return None
        if summary["data"] != data:
            raise CheckpointError(
                f"cannot reuse {out}: it was trained on other data (data fingerprint {summary['data'][:12]} "
                f"there, {data[:12]} now); use --no-resume to start over, or another out_dir"
            )
        changed = [n for n, digest in summary["files"].items() if file_digests(out, [n]).get(n) != digest]
        if not changed:
            return summary
        logger.warning(
            "%s: %s missing or changed since the run finished; producing the outputs again",
            out,
            ", ".join(changed),
        )
    (out / DONE).unlink(missing_ok=True)
    if not (out / CHECKPOINT).is_file():
        logger.info("%s has no checkpoint: training again", out)
    return None
