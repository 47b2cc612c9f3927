"""The images ``hierclf predict`` scores: where they come from, their ids, and how they are decoded.

Three ways to name them (:func:`image_list`):

* **paths** on the command line: each image's id is the path as given;
* a **folder**: every image file under it (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``,
  ``.webp``, any case), recursively, in sorted order; ids are the paths relative to the folder (as
  :meth:`hierclf.data.datasets.CsvImageDataset.from_folder` names them);
* a **CSV** with a header: a ``path`` column (or ``image``, ``file``, ``filename``), and an optional ``id``
  column (otherwise the path is the id); relative paths are taken from the CSV's folder.

Decoding is training's: the file is opened with PIL, converted to RGB and resized whole to the model's side
(:class:`hierclf.data.transforms.ToUint8`, the resize of the evaluation pipeline), giving a
``(3, size, size)`` uint8 tensor. An image that cannot be read is not an exception in a worker: it comes
back as a :class:`BadImage` naming the path and the reason, and the predictor stops on it (or, with
``skip_bad``, leaves it out and reports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierclf.errors import FileFormatError, HierclfError, Problem
from hierclf.io.csv_files import read_csv_table

__all__ = [
    "IMAGE_SUFFIXES",
    "BadImage",
    "DecodedImages",
    "ImageList",
    "ImageListError",
    "decode",
    "image_list",
]

#: file suffixes a folder is searched for (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: names of the path column of a CSV image list, in order of preference (case-insensitive)
PATH_COLUMNS = ("path", "image", "file", "filename")


class ImageListError(HierclfError, ValueError):
    """The images to score cannot be listed: no images, a missing folder, a CSV without a path column."""


@dataclass(frozen=True)
class ImageList:
    """Images to score: ``ids[i]`` names ``paths[i]`` in the output.

    Attributes:
        ids: ``(n,)`` str, unique.
        paths: the image files.
        source: where the list came from, for messages.
    """

    ids: np.ndarray
    paths: tuple[Path, ...]
    source: str

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self, index: np.ndarray) -> ImageList:
        """The images at rows ``index``."""
        return ImageList(self.ids[index], tuple(self.paths[int(i)] for i in index), self.source)


def _unique(ids: np.ndarray, source: str) -> np.ndarray:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        twice = values[counts > 1][:3].tolist()
        raise ImageListError(
            f"{source}: image ids repeat ({', '.join(map(repr, twice))}); ids must be unique"
        )
    return ids


def _from_folder(folder: Path) -> ImageList:
    if not folder.is_dir():
        raise ImageListError(f"image folder {folder} not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    ids = np.asarray([p.relative_to(folder).as_posix() for p in files], dtype=str)
    return ImageList(ids, tuple(files), str(folder))


def _from_csv(csv_path: Path) -> ImageList:
    table = read_csv_table(csv_path, what="image list")
    col = table.find(*PATH_COLUMNS)
    if col is None:
        raise FileFormatError(
            [Problem(f"no path column (expected one of {', '.join(PATH_COLUMNS)})", str(csv_path), 1)],
            what="image list",
        )
    empty = table.empty_cells(table.header[col])
    if empty:
        raise FileFormatError(empty, what="image list")
    given = table.cells[:, col]
    base = csv_path.parent
    paths = tuple(p if p.is_absolute() else base / p for p in map(Path, given.tolist()))
    id_col = table.find("id", "image_id")
    ids = table.cells[:, id_col] if id_col is not None and id_col != col else given
    return ImageList(np.asarray(ids, dtype=str), paths, str(csv_path))


def image_list(
    images: Sequence[str | Path] = (), *, folder: str | Path | None = None, csv: str | Path | None = None
) -> ImageList:
    """The images to score, from exactly one of ``images``, ``folder`` and ``csv`` (module docstring).

    Raises:
        ImageListError: none or several of the three, no image found, repeated ids.
        FileFormatError: a CSV that cannot be read, without a path column, or with empty paths (positioned).
    """
    given = [bool(images), folder is not None, csv is not None]
    if sum(given) != 1:
        raise ImageListError("give images, a --folder or a --csv (exactly one of them)")
    if folder is not None:
        found = _from_folder(Path(folder))
    elif csv is not None:
        found = _from_csv(Path(csv))
    else:
        paths = tuple(Path(p) for p in images)
        found = ImageList(np.asarray([str(p) for p in images], dtype=str), paths, "the command line")
    if not len(found):
        raise ImageListError(f"{found.source}: no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    _unique(found.ids, found.source)
    return found


@dataclass(frozen=True)
class BadImage:
    """An image that could not be read: its row, path and why."""

    row: int
    path: str
    reason: str

    def message(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"


def failure_reason(exc: BaseException) -> str:
    """Why an image could not be read, in a few words (for the message that names its path)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not an image"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def decode(path: Path, to_tensor: Any) -> torch.Tensor:
    """One image file as the model's input: PIL, RGB, ``to_tensor`` (resize to uint8 ``(3, size, size)``).

    The whole file is decoded (``Image.load``), so a truncated file fails here, not later.
    """
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return to_tensor(image.convert("RGB"))


class DecodedImages(torch.utils.data.Dataset):
    """``dataset[i] -> (i, (3, size, size) uint8 tensor or None, reason or "")``: decoding that never
    raises for a bad file (the predictor decides what to do with it)."""

    def __init__(self, images: ImageList, size: int) -> None:
        from hierclf.data.transforms import to_uint8

        self.images = images
        self.to_tensor = to_uint8(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return index, decode(self.images.paths[index], self.to_tensor), ""
        except Exception as exc:  # noqa: BLE001 - any failure to read one file is reported with its path
            return index, None, failure_reason(exc)


def collate(
    items: list[tuple[int, torch.Tensor | None, str]],
) -> tuple[np.ndarray, torch.Tensor, list[tuple[int, str]]]:
    """A batch of :class:`DecodedImages` items: ``(rows of the good images, (n_good, 3, H, W) uint8, [(row,
    reason) of the bad ones])``."""
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, why) for i, x, why in items if x is None]
    rows = np.asarray([i for i, _ in good], dtype=np.int64)
    batch = torch.stack([x for _, x in good]) if good else torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    return rows, batch, bad
