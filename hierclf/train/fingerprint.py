"""Fingerprints of what a run read and wrote: the data (:func:`data_fingerprint`) and output files
(:func:`file_digests`), recorded in checkpoints and ``DONE`` (:mod:`hierclf.train.reuse`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["data_fingerprint", "file_digests"]

_CHUNK = 1 << 20


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(out: Path, names: Iterable[str]) -> dict[str, str]:
    """SHA-256 of the files ``names`` (paths relative to ``out``) that exist."""
    return {name: _digest_file(out / name) for name in names if (out / name).is_file()}


def _update_strings(h: Any, values: Any) -> None:
    if values is None:
        h.update(b"\x00none")
        return
    for value in np.asarray(values).astype(str).tolist():  # ids, labels, groups: one pass each
        h.update(value.encode("utf-8") + b"\x1f")


def _update_images(h: Any, source: Any) -> None:
    images = getattr(source, "images", None)
    if images is not None:  # arrays in memory (DermaMNIST, generated data): their bytes
        h.update(np.ascontiguousarray(images).data)
        return
    for path in getattr(source, "paths", ()):  # image files: name, size and modification time of each
        st = Path(path).stat()
        h.update(f"{path}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1e".encode())


def data_fingerprint(sources: Mapping[str, Any]) -> str:
    """SHA-256 over every split's sample ids, labels, groups and images (the pixels of in-memory arrays;
    the size and modification time of image files, whose contents are not read)."""
    h = hashlib.sha256()
    for split in sorted(sources):
        source = sources[split]
        h.update(f"split {split} {len(source)}\x1e".encode())
        for name in ("ids", "labels", "groups"):
            _update_strings(h, getattr(source, name, None))
        _update_images(h, source)
    return h.hexdigest()
