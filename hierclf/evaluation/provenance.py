"""Pre-registration a reader can verify: the SHA-256 of every input of a run, the code's version, and the
protocol's hash recorded when training started.

* :func:`run_record`: what ``report.md`` / ``report.json`` print under "Pre-registration and provenance":
  the SHA-256 of the protocol, the taxonomy, every prediction file and (when known) each checkpoint, the
  hierclf version, the git commit of the project when hierclf runs from a checkout (and whether it had
  uncommitted changes), the time (UTC) and the command line.
* :func:`write_preregistration`: ``hierclf study`` writes ``OUT/preregistration.json`` when training starts
  (the protocol's and the taxonomy's hashes, the time, the version, the command); a resumed study keeps the
  first record.
* :func:`check_preregistration`: ``evaluate`` looks for that record next to the prediction files (their
  folder or the one above, where a study puts it) and says whether the protocol changed after training
  started: a loud ``PROTOCOL CHANGED`` warning (an error under ``--strict``), or a note that it did not.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hierclf.evaluation.notices import Findings
from hierclf.io.atomic import atomic_write_text

__all__ = [
    "PREREGISTRATION_FILE",
    "check_preregistration",
    "code_version",
    "run_record",
    "sha256_file",
    "write_preregistration",
]

#: The record ``hierclf study`` writes into its folder when training starts.
PREREGISTRATION_FILE = "preregistration.json"
#: The alert a changed protocol raises (the primary-metric line, the figures and the CLI summary carry it).
PROTOCOL_CHANGED = "PROTOCOL CHANGED"


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(args: list[str], where: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """hierclf's version, and the git commit of the checkout it runs from (``None`` when installed from a
    package) with ``git_dirty`` (uncommitted changes to tracked files)."""
    from importlib.metadata import PackageNotFoundError, version

    package = Path(__file__).resolve().parents[1]
    try:
        installed = version("hierclf")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, never installed
        installed = "unknown"
    root = _git(["rev-parse", "--show-toplevel"], package)
    commit = _git(["rev-parse", "HEAD"], package) if root else None
    dirty = None
    if commit is not None:
        status = _git(["status", "--porcelain", "--untracked-files=no"], package)
        dirty = bool(status) if status is not None else None
    return {
        "hierclf_version": installed,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _files(paths: Sequence[str | Path]) -> list[dict[str, str | None]]:
    """Each path with its SHA-256 (``None`` for a file that is not there: whoever reads it says so)."""
    return [{"path": str(p), "sha256": sha256_file(p) if Path(p).is_file() else None} for p in paths]


def run_record(
    *,
    protocol: str | Path | None,
    taxonomy: str | Path | None,
    val: Sequence[Any] = (),
    test: Sequence[Any] = (),
    checkpoints: Sequence[str | Path] = (),
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The provenance of one evaluation: each input file with its SHA-256 (predictions given as objects
    rather than files are listed as ``in memory``), the code's version, the time and the command line."""

    def hashed(items: Sequence[Any]) -> list[dict[str, str | None]]:
        return [_files([x])[0] if isinstance(x, (str, Path)) else {"path": "in memory"} for x in items]

    return {
        "protocol": _files([protocol])[0] if protocol is not None else None,
        "taxonomy": _files([taxonomy])[0] if taxonomy is not None else None,
        "predictions": {"val": hashed(val), "test": hashed(test)},
        "checkpoints": _files([c for c in checkpoints if Path(c).is_file()]),
        **code_version(),
        "time_utc": _now(),
        "command": list(sys.argv if argv is None else argv),
    }


def write_preregistration(
    out_dir: str | Path, *, protocol: str | Path, taxonomy: str | Path, argv: Sequence[str] | None = None
) -> Path:
    """``OUT/preregistration.json`` with the protocol's and the taxonomy's hashes at the start of training;
    an existing record is kept (a resumed study was pre-registered when it first started)."""
    path = Path(out_dir) / PREREGISTRATION_FILE
    if path.is_file():
        return path
    record = {
        "protocol": _files([protocol])[0],
        "taxonomy": _files([taxonomy])[0],
        **code_version(),
        "time_utc": _now(),
        "command": list(sys.argv if argv is None else argv),
        "written_by": "hierclf study, when training started",
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def _find_preregistration(files: Sequence[Any]) -> Path | None:
    for item in files:
        if isinstance(item, (str, Path)):
            folder = Path(item).resolve().parent
            for candidate in (folder / PREREGISTRATION_FILE, folder.parent / PREREGISTRATION_FILE):
                if candidate.is_file():
                    return candidate
    return None


def check_preregistration(record: dict[str, Any], found: Findings) -> dict[str, Any] | None:
    """Compare the protocol evaluated now with the one recorded when training started (a record next to
    the prediction files); warn loudly when it changed. Returns what was compared (``None`` without a
    record or without a protocol file)."""
    protocol = record.get("protocol")
    preds = record.get("predictions") or {}
    path = _find_preregistration([p["path"] for p in preds.get("test", []) if p.get("path") != "in memory"])
    if path is None or protocol is None:
        return None
    try:
        before = json.loads(path.read_text(encoding="utf-8"))["protocol"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        found.warn(
            f"{PROTOCOL_CHANGED}?: {path} cannot be read as a pre-registration record", alert=PROTOCOL_CHANGED
        )
        return {"record": str(path), "unchanged": None}
    unchanged = before == protocol["sha256"]
    if unchanged:
        found.note(
            f"the protocol is the one recorded when training started ({path}, sha256 {before[:12]}...)"
        )
    else:
        found.warn(
            f"{PROTOCOL_CHANGED}: {protocol['path']} (sha256 {protocol['sha256'][:12]}...) is not the "
            f"protocol recorded when training started ({path}: sha256 {before[:12]}...); the evaluation "
            "is not the pre-registered one",
            alert=PROTOCOL_CHANGED,
        )
    return {"record": str(path), "sha256_at_training_start": before, "unchanged": unchanged}
