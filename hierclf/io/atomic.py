"""Safe file output: write to a temporary file beside the target, then rename it over the target.

A crash, a kill or a full disk never leaves a half-written report, prediction file or taxonomy behind, and
what the target points at is respected:

* a **symbolic link** is written through: its target is replaced, the link stays a link;
* a **character device or FIFO** (``/dev/null``, ``/dev/stdout``, a named pipe) is streamed to directly:
  it cannot be replaced, and renaming a file over it would destroy it;
* an existing file keeps its **permission bits**; a new file gets the usual ``0o666 & ~umask``
  (a temporary file alone would be ``0o600``);
* an output that **is one of the inputs** (the same file, also through a link) is refused before anything
  is written: :class:`OutputIsInputError`;
* a directory, a block device or a socket is refused: :class:`OutputPathError`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from hierclf.errors import HierclfError

__all__ = [
    "OutputIsInputError",
    "OutputPathError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output",
]


class OutputPathError(HierclfError, ValueError):
    """An output path that cannot be written (a directory, a block device, a socket)."""


class OutputIsInputError(OutputPathError):
    """An output path that is one of the inputs: writing it would destroy what is being read."""


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path: str | Path, inputs: Iterable[str | Path] = ()) -> tuple[Path, bool]:
    """``(file to write, stream)``: the file that writing ``path`` changes (a link's target) and whether it is
    a device or FIFO to stream to, after refusing what must not be written.

    Raises:
        OutputIsInputError: ``path`` is (or links to) one of ``inputs``.
        OutputPathError: ``path`` is a directory, a block device or a socket.
    """
    given = Path(path)
    try:
        mode = os.stat(given).st_mode  # follows links, /dev/stdout's magic link included
    except FileNotFoundError:
        mode = None
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return given, True
    for source in inputs:
        if mode is not None and Path(source).exists() and _same_file(given, Path(source)):
            raise OutputIsInputError(f"{path}: the output is also an input ({source}); write to another file")
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputPathError(f"{path}: is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputPathError(f"{path}: not a regular file, character device or FIFO; cannot write it")
    return (given.resolve() if given.is_symlink() else given), False


@contextlib.contextmanager
def atomic_open(
    path: str | Path,
    mode: str = "w",
    encoding: str | None = "utf-8",
    newline: str | None = None,
    *,
    inputs: Iterable[str | Path] = (),
) -> Iterator[IO]:
    """Open ``path`` for writing so that it changes only once everything is written (see the module).

    Args:
        path: the output file.
        mode: ``"w"`` or ``"wb"``.
        encoding, newline: as for :func:`open` (text mode).
        inputs: files the caller reads; an output that is one of them is refused before anything is written.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    target, stream_to = check_output(path, inputs)
    binary = "b" in mode
    enc, nl = (None, None) if binary else (encoding, newline)
    if stream_to:
        with open(target, mode, encoding=enc, newline=nl) as stream:  # a device or pipe: write straight to it
            yield stream
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    keep = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=enc, newline=nl) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, keep)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(
    path: str | Path, text: str, encoding: str = "utf-8", *, inputs: Iterable[str | Path] = ()
) -> None:
    """Write ``text`` to ``path`` safely (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding=encoding, inputs=inputs) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes, *, inputs: Iterable[str | Path] = ()) -> None:
    """Write ``data`` to ``path`` safely (see :func:`atomic_open`)."""
    with atomic_open(path, "wb", inputs=inputs) as handle:
        handle.write(data)
