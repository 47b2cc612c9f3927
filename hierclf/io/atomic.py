"""Safe file output: write to a temporary file beside the target, then rename it over the target.

A crash, a kill or a full disk never leaves a half-written report, prediction file or taxonomy behind, and
what the target points at is respected:

* a **symbolic link** is written through: its target is replaced, the link stays a link;
* a **character device or FIFO** (``/dev/null``, ``/dev/stdout``, a named pipe) is streamed to directly:
  it cannot be replaced, and renaming a file over it would destroy it;
* an existing file keeps its **permission bits**; a new file gets the usual ``0o666 & ~umask``
  (a temporary file alone would be ``0o600``);
* an output that **is one of the inputs** (the same file, also through a link) is refused before anything
  is written: :class:`OutputIsInputError`. The inputs are those a write names and, inside
  :func:`protected_inputs`, every file the running command reads (the CLI protects each command's input
  files, so no report, figure or table it writes can replace one of them);
* a directory, a block device or a socket is refused: :class:`OutputPathError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
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
    "output_folder",
    "protected_inputs",
]


class OutputPathError(HierclfError, ValueError):
    """An output path that cannot be written (a directory, a block device, a socket)."""


class OutputIsInputError(OutputPathError):
    """An output path that is one of the inputs: writing it would destroy what is being read."""


_UMASK_LOCK = threading.Lock()
#: the files the running command reads (see :func:`protected_inputs`)
_PROTECTED: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("hierclf_inputs", default=())


@contextlib.contextmanager
def protected_inputs(paths: Iterable[str | Path]) -> Iterator[None]:
    """While inside, no write through this module may replace one of ``paths`` (also through a link).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "report.json").write_text("{}")
        2
        >>> with protected_inputs([folder / "report.json"]):
        ...     atomic_write_text(folder / "report.json", "[]")
        Traceback (most recent call last):
        ...
        hierclf.io.atomic.OutputIsInputError: ...: the output is also an input (...); write to another file
    """
    token = _PROTECTED.set(_PROTECTED.get() + tuple(Path(p) for p in paths))
    try:
        yield
    finally:
        _PROTECTED.reset(token)


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
    except (FileNotFoundError, NotADirectoryError):  # a new file (output_folder judges its folder)
        mode = None
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return given, True
    for source in (*inputs, *_PROTECTED.get()):
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
    output_folder(target.parent)
    keep = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:  # a read-only folder or file system, no permission
        raise OutputPathError(f"{path}: cannot write here ({exc.strerror})") from None
    try:
        with os.fdopen(fd, mode, encoding=enc, newline=nl) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, keep)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.errno in _DISK_ERRORS:  # the disk, not hierclf: one line, and the old file is intact
            raise OutputPathError(
                f"{path}: cannot write it ({exc.strerror}); the file is unchanged"
            ) from None
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: write errors that come from the disk or its owner, never from hierclf
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO, errno.EACCES})


def output_folder(path: str | Path) -> Path:
    """Create the folder ``path`` (and its parents) for outputs, or say in one line why it cannot be one.

    Raises:
        OutputPathError: ``path`` (or a folder above it) is a file, or cannot be created.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputPathError(f"{path}: is a file, not a folder; give a folder for the outputs") from None
    except NotADirectoryError:
        raise OutputPathError(f"{path}: a folder above it is a file; give a folder for the outputs") from None
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot create the folder ({exc.strerror})") from None
    return folder


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
