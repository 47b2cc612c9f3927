"""Reading text files safely: regular files only, a size bound, UTF-8 with the line of a bad byte.

Every hierclf reader of a text file (taxonomies, protocols, configurations, CSV tables) starts here, so a
FIFO given by mistake is refused instead of hanging the reader, a huge file is refused before it is read, and
bytes that are not UTF-8 are reported with their line.
"""

from __future__ import annotations

import stat
from pathlib import Path

from hierclf.errors import FileFormatError, Problem

__all__ = ["MAX_TEXT_BYTES", "first_bad_utf8", "read_text_file"]

#: the largest text file hierclf reads whole (the shipped ISIC tree is 120 KB; a metadata CSV of a million
#: images about 100 MB)
MAX_TEXT_BYTES = 512 * 1024 * 1024


def _refuse(
    file: str, message: str, what: str, line: int | None = None, code: str = "file"
) -> FileFormatError:
    return FileFormatError([Problem(message, file, line, code=code)], what=what)


def read_text_file(
    path: str | Path, *, what: str, encoding: str = "utf-8-sig", max_bytes: int = MAX_TEXT_BYTES
) -> str:
    """The text of a regular file; :class:`FileFormatError` (one positioned problem) otherwise.

    Refuses what is not a regular file (a directory, a FIFO, a device: reading one would hang or never end)
    and files over ``max_bytes``.
    """
    file = str(path)
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise FileFormatError([Problem("file not found", file, code="file")], what=what) from None
    except ValueError:  # a NUL character: no operating system opens such a path
        raise _refuse(file.replace("\x00", "\\x00"), "the path contains a NUL character", what) from None
    except OSError as exc:
        raise FileFormatError(
            [Problem(f"cannot read file: {exc.strerror or exc}", file, code="file")], what=what
        ) from None
    if not stat.S_ISREG(mode):
        kind = "is a directory" if stat.S_ISDIR(mode) else "is not a regular file"
        raise _refuse(file, f"{kind}; expected a {what} file", what)
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise _refuse(file, f"{size:,} bytes is too large for a {what} file (at most {max_bytes:,})", what)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise FileFormatError(
            [Problem(f"cannot read file: {exc.strerror or exc}", file, code="file")], what=what
        ) from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"byte 0x{raw[exc.start]:02x} is not UTF-8 text (save the file as UTF-8)"
        raise FileFormatError([Problem(message, file, line, code="file")], what=what) from None


def first_bad_utf8(path: str | Path, *, chunk: int = 1 << 20) -> tuple[int, int]:
    """``(line, byte)`` of the first byte of ``path`` that is not UTF-8, read in chunks (for files streamed
    through a text reader, whose decoding error knows no file position); ``(0, 0)`` when there is none."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return line + block[: exc.start].count(b"\n"), block[exc.start]
            line += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # the file ends inside a multi-byte character
        return line, exc.object[exc.start] if exc.object else 0
    return 0, 0
