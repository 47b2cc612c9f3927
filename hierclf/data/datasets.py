"""Datasets: DermaMNIST through ``medmnist``, a generated npz in DermaMNIST's layout, users' own CSV or
image-folder data, the published layouts (HAM10000, ISIC 2019, ISIC 2020, a generic image folder + CSV:
:func:`load_source_splits`), and the wrapper that turns any of them into ``(image_tensor, class_index)``
pairs.

Every image source here exposes the same small interface, which is all the training loop and the prediction
files need:

* ``labels``: ``(n,)`` str array of true node ids (resolved through the taxonomy, never raw codes);
* ``ids``: ``(n,)`` str array of unique sample ids;
* ``groups``: ``(n,)`` str array of patient / lesion ids, or ``None`` when the data carries none;
* ``load_image(i)``: the ``i``-th image as an RGB ``PIL.Image``.

Sources read from a published layout also carry ``metadata`` (standard name -> ``(n,)`` str: sex, age, site,
dx_type, ...), ``split_level`` (``patient``, ``lesion`` or ``image``) and ``source_name``, which training
writes into the prediction files.

:class:`TaxonomyImageDataset` wraps a source with a mapping from true node id to class index (a
:class:`~hierclf.nn.head.LeafHead`'s ``class_index`` or a dict) and a transform. Group-aware splits live in
:mod:`hierclf.data.splits` and are re-exported here; class-balanced samplers are :func:`make_sampler`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hierclf.data.sources import IMAGE_SPLIT_NOTICE, SourceSpec, SourceTable, read_source
from hierclf.data.split_files import SplitAssignment, split_of
from hierclf.data.splits import check_no_leakage, grouped_split, ham10000_split
from hierclf.errors import FileFormatError, HierclfError, Problem, UnknownNameError
from hierclf.io.atomic import atomic_open
from hierclf.io.csv_files import CsvTable, read_csv_table
from hierclf.taxonomy.tree import Taxonomy

logger = logging.getLogger(__name__)

__all__ = [
    "DERMAMNIST_COUNTS",
    "DERMAMNIST_SIZES",
    "ArrayImageDataset",
    "CsvImageDataset",
    "DermaMNISTData",
    "DermaMNISTSplit",
    "ImageSource",
    "SourceImages",
    "TaxonomyImageDataset",
    "check_no_leakage",
    "dermamnist_filename",
    "grouped_split",
    "ham10000_split",
    "load_dermamnist",
    "load_source_splits",
    "make_synthetic_dermamnist",
    "prediction_info",
]

SPLITS = ("train", "val", "test")
DERMAMNIST_SIZES = (28, 64, 128, 224)
#: Per-class image counts of the official DermaMNIST splits, in code order 0 akiec ... 6 vasc
#: (MedMNIST v2; ../shared/data/PROVENANCE.md). Totals 7,007 / 1,003 / 2,005.
DERMAMNIST_COUNTS: dict[str, tuple[int, ...]] = {
    "train": (228, 359, 769, 80, 779, 4693, 99),
    "val": (33, 52, 110, 12, 111, 671, 14),
    "test": (66, 103, 220, 23, 223, 1341, 29),
}
_N_CODES = 7
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageSource(Protocol):
    """What :class:`TaxonomyImageDataset` needs from a data source."""

    labels: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None

    def __len__(self) -> int: ...

    def load_image(self, index: int) -> Image.Image: ...


# --------------------------------------------------------------------------------------------------------
# Generic sources
# --------------------------------------------------------------------------------------------------------


def _str_array(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=str) if len(values) else np.zeros(0, dtype=str)


def _check_unique_ids(ids: np.ndarray, where: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    dup = uniq[counts > 1]
    if dup.size:
        shown = ", ".join(repr(str(d)) for d in dup[:5])
        more = f" and {dup.size - 5} more" if dup.size > 5 else ""
        raise HierclfError(f"{where}: sample ids must be unique; repeated: {shown}{more}")


class _SourceDataset(Dataset):
    """Shared behaviour of the sources: ``ds[i] -> (image, label node id)`` with the source's transform."""

    labels: np.ndarray
    ids: np.ndarray
    groups: np.ndarray | None
    transform: Callable[[Any], Any] | None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load_image(self, index: int) -> Image.Image:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, str]:
        image: Any = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, str(self.labels[index])

    def class_counts(self) -> dict[str, int]:
        """Images per true node id (what :func:`hierclf.classes.esteva` takes as ``counts``)."""
        uniq, counts = np.unique(self.labels, return_counts=True)
        return {str(u): int(c) for u, c in zip(uniq, counts)}


class ArrayImageDataset(_SourceDataset):
    """Images held in memory as one ``(n, height, width, 3)`` uint8 array.

    Args:
        images: ``(n, height, width, 3)`` uint8 (or ``(n, height, width)`` greyscale, converted to RGB).
        labels: ``(n,)`` true node ids.
        ids: ``(n,)`` unique sample ids; default ``"0"``, ``"1"``, ...
        groups: ``(n,)`` patient / lesion ids, or None.
        transform: applied to the PIL image in ``__getitem__``.

    Example:
        >>> ds = ArrayImageDataset(np.zeros((2, 4, 4, 3), np.uint8), ["melanoma", "nevus"])
        >>> len(ds), ds.load_image(1).size, ds[1][1]
        (2, (4, 4), 'nevus')
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[str] | np.ndarray,
        ids: Sequence[str] | np.ndarray | None = None,
        groups: Sequence[str] | np.ndarray | None = None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise HierclfError(
                f"images must be (n, height, width, 3) or (n, height, width); got {images.shape}"
            )
        n = images.shape[0]
        self.images = images
        self.labels = _str_array(labels)
        self.ids = _str_array(ids) if ids is not None else np.arange(n).astype(str)
        self.groups = _str_array(groups) if groups is not None else None
        for name, arr in (("labels", self.labels), ("ids", self.ids), ("groups", self.groups)):
            if arr is not None and arr.shape != (n,):
                raise HierclfError(f"{name} has shape {arr.shape}, expected ({n},) to match the images")
        _check_unique_ids(self.ids, "images")
        self.transform = transform

    def load_image(self, index: int) -> Image.Image:
        array = self.images[index]
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")

    def load_array(self, index: int) -> np.ndarray:
        """The ``index``-th image as an ``(H, W, 3)`` uint8 array (no PIL round trip)."""
        array = self.images[index]
        if array.ndim == 2 or array.shape[-1] == 1:
            return np.repeat(array.reshape(array.shape[0], array.shape[1], 1), 3, axis=-1)
        return array


class CsvImageDataset(_SourceDataset):
    """Users' own images listed in a CSV: one row per image with its path and label.

    Labels may be node ids, aliases or display names (resolved case-insensitively through
    :meth:`Taxonomy.resolve`); every unknown label is reported with its line number and suggestions, and
    every missing image file with its line, in one :class:`~hierclf.errors.FileFormatError`.

    Args:
        csv_path: the CSV file (header row required).
        taxonomy: the tree the labels belong to.
        image_root: folder that relative paths are taken from; default the CSV's folder.
        path_column, label_column: column names of the image path and the label.
        group_column: optional column of patient / lesion ids (for grouped splits and clustered CIs).
        id_column: optional column of unique sample ids; default the path as written in the CSV.
        transform: applied to the PIL image in ``__getitem__``.
        check_files: verify that every image file exists (one ``stat`` per row, at construction).
        path_suffix: appended to every path, for lists that name images by id (HAM10000's ``image_id``
            with ``path_suffix=".jpg"``).

    Example (HAM10000 images with their metadata, lesion-grouped)::

        ds = CsvImageDataset("HAM10000_metadata.csv", tax, image_root="HAM10000_images/",
                             path_column="image_id", path_suffix=".jpg", label_column="dx",
                             group_column="lesion_id", id_column="image_id")
    """

    def __init__(
        self,
        csv_path: str | Path,
        taxonomy: Taxonomy,
        image_root: str | Path | None = None,
        path_column: str = "path",
        label_column: str = "label",
        group_column: str | None = None,
        id_column: str | None = None,
        transform: Callable[[Any], Any] | None = None,
        check_files: bool = True,
        path_suffix: str = "",
    ) -> None:
        csv_path = Path(csv_path)
        wanted = [c for c in (path_column, label_column, group_column, id_column) if c is not None]
        table = read_csv_table(csv_path, what="image list", required=wanted)
        if not len(table):
            raise FileFormatError(
                [Problem("no image rows below the header", file=str(csv_path), line=1)], what="image list"
            )
        root = Path(image_root) if image_root is not None else csv_path.parent
        labels, problems = _resolve_labels(table, taxonomy, label_column)
        paths, path_problems = _image_paths(table, path_column, root, path_suffix, check_files)
        if problems + path_problems:
            raise FileFormatError(problems + path_problems, what="image list")
        self.csv_path: Path | None = csv_path
        self.paths = paths
        self.labels = _str_array(labels)
        self.ids = _str_array(table.column(id_column if id_column is not None else path_column))
        _check_unique_ids(self.ids, str(csv_path))
        self.groups = _str_array(table.column(group_column)) if group_column is not None else None
        self.transform = transform

    @classmethod
    def from_folder(
        cls, root: str | Path, taxonomy: Taxonomy, transform: Callable[[Any], Any] | None = None
    ) -> CsvImageDataset:
        """Images in one sub-folder per node (named by id, alias or display name): ``root/melanoma/x.jpg``.

        Sample ids are the paths relative to ``root``; there are no groups. Unknown folder names raise
        :class:`~hierclf.errors.UnknownNameError` with suggestions.
        """
        root = Path(root)
        if not root.is_dir():
            raise HierclfError(f"image folder {root} not found")
        paths: list[Path] = []
        labels: list[str] = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            node = taxonomy.resolve(folder.name)
            files = sorted(
                p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
            )
            paths.extend(files)
            labels.extend([node] * len(files))
        if not paths:
            raise HierclfError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) in sub-folders of {root}")
        self = cls.__new__(cls)
        self.csv_path = None
        self.paths = paths
        self.labels = _str_array(labels)
        self.ids = _str_array([p.relative_to(root).as_posix() for p in paths])
        self.groups = None
        self.transform = transform
        return self

    def load_image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as image:
            return image.convert("RGB")


class SourceImages(_SourceDataset):
    """Some rows of a :class:`~hierclf.data.sources.SourceTable` (one split), as an image source.

    Attributes:
        labels, ids, groups, paths: the rows' node ids, sample ids, patient / lesion groups and image files.
        metadata: standard name -> ``(n,)`` str (sex, age, site, dx_type, ... as the source has them).
        split_level: what the groups are (``patient``, ``lesion``, ``image``).
        source_name: the preset (``ham10000``, ...).
        rows: the rows of the table.
    """

    def __init__(
        self, table: SourceTable, rows: np.ndarray, transform: Callable[[Any], Any] | None = None
    ) -> None:
        self.table = table
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = table.labels[self.rows]
        self.ids = table.ids[self.rows]
        self.groups = table.groups[self.rows]
        self.paths = [table.paths[r] for r in self.rows.tolist()]
        self.metadata = {k: v[self.rows] for k, v in table.metadata.items()}
        self.split_level = table.level
        self.source_name = table.name
        self.transform = transform

    def load_image(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as image:
            return image.convert("RGB")


def prediction_info(source: Any, source_name: str | None = None) -> dict[str, str]:
    """The facts about a source that its prediction files keep (``Predictions.info``): ``split_level``
    (``patient``, ``lesion``, ``image``) and ``source`` when known, and a ``notice`` for an image-level split.

    Example:
        >>> prediction_info(ArrayImageDataset(np.zeros((1, 2, 2, 3), np.uint8), ["nevus"]), "csv")
        {'source': 'csv'}
    """
    info: dict[str, str] = {}
    level = getattr(source, "split_level", None)
    if level:
        info["split_level"] = str(level)
    name = source_name or getattr(source, "source_name", None)
    if name:
        info["source"] = str(name)
    if level == "image":
        info["notice"] = IMAGE_SPLIT_NOTICE
    return info


def load_source_splits(
    spec: SourceSpec,
    taxonomy: Taxonomy,
    *,
    split_file: str | Path | None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_by: str = "auto",
    write: bool = True,
    check_files: bool = True,
) -> tuple[dict[str, SourceImages], SplitAssignment]:
    """A published-layout source split into train / val / test by patient (else lesion), the split read
    from ``split_file`` when it exists, else made, checked for leakage and written there.

    Args:
        spec: what to read (:func:`hierclf.data.sources.source_spec`).
        taxonomy: the tree the labels belong to.
        split_file: where the split lives (None: made and not written).
        val_fraction, test_fraction, seed: how a new split is made (fractions of the groups).
        group_by: ``auto``, ``patient``, ``lesion`` or ``image``.
        write: write a new split (False in processes that must not write, e.g. ranks other than 0).
        check_files: find every image file now.

    Returns:
        ``({"train", "val", "test"}: SourceImages, the split)``.

    Example (HAM10000 as downloaded: the metadata CSV and the two image folders under one folder)::

        spec = source_spec("ham10000", root="data/HAM10000")
        splits, assignment = load_source_splits(spec, tax, split_file="runs/ham/split.csv")
        assignment.level, len(splits["test"])      # ('lesion', ...)
    """
    table = read_source(spec, taxonomy, group_by=group_by, check_files=check_files)
    assignment = split_of(
        table.ids,
        table.labels,
        table.groups,
        level=table.level,
        file=split_file,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        write=write,
    )
    return {name: SourceImages(table, rows) for name, rows in assignment.splits.items()}, assignment


# --------------------------------------------------------------------------------------------------------
# DermaMNIST
# --------------------------------------------------------------------------------------------------------


def _resolve_labels(table: CsvTable, taxonomy: Taxonomy, column: str) -> tuple[list[str], list[Problem]]:
    """The node id of every row's label, resolved once per distinct label; a problem per unknown label
    (its lines, the first five named)."""
    col = table.index_of(column)
    raw = table.cells[:, col]
    distinct, inverse = np.unique(raw, return_inverse=True)
    resolved: list[str] = []
    problems: list[Problem] = []
    for k, name in enumerate(distinct.tolist()):  # a loop over distinct labels
        try:
            resolved.append(taxonomy.resolve(name))
        except UnknownNameError as err:
            resolved.append("")
            lines = table.lines[inverse.reshape(-1) == k].tolist()
            more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
            shown = ", ".join(str(x) for x in lines[:5]) + more
            msg = f"{err} (column {column!r}, line{'s' if len(lines) > 1 else ''} {shown})"
            if not name:
                msg = f"empty label in column {column!r} (lines {shown})"
            problems.append(Problem(msg, table.file, lines[0], col + 1, code="unknown-label"))
    problems.sort(key=lambda p: p.line or 0)
    return np.asarray(resolved, dtype=object)[inverse.reshape(-1)].tolist(), problems


def _image_paths(
    table: CsvTable, column: str, root: Path, suffix: str, check_files: bool
) -> tuple[list[Path], list[Problem]]:
    """The image path of every row (relative paths taken from ``root``) and a problem per empty path and
    per missing file (the first 20, then a count)."""
    col = table.index_of(column)
    texts = table.cells[:, col].tolist()
    problems = [
        table.problem(r, f"empty image path in column {column!r}", column=col, code="missing-path")
        for r, text in enumerate(texts)
        if not text
    ]
    paths = [p if p.is_absolute() else root / p for p in (Path(text + suffix) for text in texts)]
    if check_files:
        missing = [r for r, p in enumerate(paths) if not p.is_file()]
        problems += [
            table.problem(r, f"image file {paths[r]} not found", column=col, code="missing-file")
            for r in missing[:20]
        ]
        if len(missing) > 20:
            problems.append(Problem(f"... and {len(missing) - 20} more image files not found", table.file))
    return paths, problems


def dermamnist_filename(size: int = 28) -> str:
    """The file name medmnist uses for DermaMNIST at ``size``: ``dermamnist.npz``, ``dermamnist_64.npz``.

    >>> dermamnist_filename(28), dermamnist_filename(224)
    ('dermamnist.npz', 'dermamnist_224.npz')
    """
    _check_size(size)
    return "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"


def _ids_filename(npz_name: str) -> str:
    return npz_name[: -len(".npz")] + "_ids.csv"


def _check_size(size: int) -> None:
    if size not in DERMAMNIST_SIZES:
        raise HierclfError(
            f"DermaMNIST size {size!r} is not available; sizes: {', '.join(map(str, DERMAMNIST_SIZES))}"
        )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS, f"(DermaMNIST splits: {', '.join(SPLITS)})")


def _allocate(total: int, weights: Sequence[float]) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder); classes left empty
    by rounding get one image each (taken from the largest) when ``total`` allows it. Weights that are
    counts summing to ``total`` come back unchanged."""
    w = np.asarray(weights, dtype=np.float64)
    share = w / w.sum() * total
    counts = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    if total >= w.size:
        for empty in np.flatnonzero(counts == 0):  # at most 7 classes
            counts[np.argmax(counts)] -= 1
            counts[empty] += 1
    return counts


# Blob colour of each DermaMNIST code (akiec, bcc, bkl, df, mel, nv, vasc) and its radius as a fraction of
# the image side: the class signal of the generated data. Both survive flips, rotations and mild jitter.
_SYN_COLOURS = np.array(
    [
        [214, 96, 96],
        [240, 200, 220],
        [184, 150, 70],
        [110, 110, 160],
        [40, 28, 48],
        [126, 72, 36],
        [176, 16, 56],
    ],
    dtype=np.float32,
)
_SYN_RADII = np.array([0.22, 0.30, 0.34, 0.16, 0.38, 0.26, 0.20], dtype=np.float32)
_SYN_SKIN = np.array([226, 186, 160], dtype=np.float32)


def _synthetic_images(
    labels: np.ndarray,
    group_codes: np.ndarray,
    size: int,
    rng: np.random.Generator,
    noise: float,
    chunk: int = 256,
) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 images: a soft class-coloured disc on skin, shared jitter per lesion."""
    n = labels.shape[0]
    n_groups = int(group_codes.max()) + 1 if n else 0
    # per-lesion appearance: centre offset, colour jitter, radius jitter (all images of a lesion share it)
    offset = rng.uniform(-0.12, 0.12, size=(n_groups, 2)).astype(np.float32) * size
    colour_jitter = rng.normal(0.0, 10.0, size=(n_groups, 3)).astype(np.float32)
    radius_scale = rng.uniform(0.85, 1.15, size=n_groups).astype(np.float32)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    grid = np.arange(size, dtype=np.float32) + 0.5
    centre = size / 2.0
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        lab, grp = labels[sl], group_codes[sl]
        m = lab.shape[0]
        cy = centre + offset[grp, 0] + np.asarray(rng.normal(0, 0.02 * size, m), dtype=np.float32)
        cx = centre + offset[grp, 1] + np.asarray(rng.normal(0, 0.02 * size, m), dtype=np.float32)
        radius = _SYN_RADII[lab] * radius_scale[grp] * size
        dist = np.sqrt(
            (grid[None, :, None] - cy[:, None, None]) ** 2 + (grid[None, None, :] - cx[:, None, None]) ** 2
        )
        edge = max(size / 28.0, 1.0)
        mask = 1.0 / (1.0 + np.exp((dist - radius[:, None, None]) / edge))  # (m, size, size), soft disc
        brightness = rng.uniform(0.9, 1.1, size=(m, 1, 1, 1)).astype(np.float32)
        skin = _SYN_SKIN[None, None, None, :] * brightness
        lesion = (_SYN_COLOURS[lab] + colour_jitter[grp])[:, None, None, :]
        image = skin * (1.0 - mask[..., None]) + lesion * mask[..., None]
        image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
        out[sl] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out


def _lesion_sizes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Images per lesion for ``n`` images: 1, 2 or 3 (HAM10000 averages 1.34 images per lesion)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    sizes = rng.choice([1, 2, 3], size=n, p=[0.75, 0.18, 0.07])
    cut = int(np.searchsorted(np.cumsum(sizes), n)) + 1
    sizes = sizes[:cut]
    sizes[-1] -= int(sizes.sum()) - n
    return sizes[sizes > 0]


def make_synthetic_dermamnist(
    path: str | Path,
    size: int = 28,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    class_counts: Mapping[str, Sequence[int]] | None = None,
    noise: float = 12.0,
    write_ids: bool = True,
) -> Path:
    """Write a generated dataset in DermaMNIST's own npz layout, loadable by ``medmnist.DermaMNIST``.

    The file holds ``{train,val,test}_images`` ``(n, size, size, 3)`` uint8 and ``{train,val,test}_labels``
    ``(n, 1)`` uint8 codes 0-6 (the dtypes of MedMNIST's files). Each image is a soft disc on a skin-coloured
    background whose colour and radius depend on the class, plus Gaussian pixel noise: a signal a small CNN
    learns in an epoch, invariant to the flips, rotations and mild colour jitter of
    :func:`hierclf.data.transforms.train_transform`. Class frequencies follow the real DermaMNIST splits
    (67 % nevi, 1 % dermatofibroma) unless ``class_counts`` says otherwise.

    DermaMNIST's npz carries no patient or lesion ids. With ``write_ids`` a side file ``<stem>_ids.csv``
    (columns ``split,index,id,group``) gives each image an id and a synthetic lesion id (1-3 images per
    lesion, same class, similar appearance, never across splits); :func:`load_dermamnist` picks it up.

    Args:
        path: a folder (the file gets medmnist's name, :func:`dermamnist_filename`) or an ``.npz`` path.
        size: image side, one of 28, 64, 128, 224.
        n_train, n_val, n_test: images per split; default the official 7,007 / 1,003 / 2,005. medmnist's
            ``len()`` asserts the official counts, so smaller files load through :func:`load_dermamnist`
            (which does not call it) but ``len(medmnist.DermaMNIST(...))`` fails on them.
        seed: random seed; the same arguments give byte-identical files.
        class_counts: exact per-class counts (7 numbers, code order) for some splits, overriding ``n_*``.
        noise: standard deviation of the pixel noise in grey levels.
        write_ids: also write the ``_ids.csv`` side file.

    Returns:
        The path of the npz written.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = make_synthetic_dermamnist(d, n_train=70, n_val=14, n_test=14)
        ...     z = np.load(p)
        ...     p.name, z["train_images"].shape, z["train_labels"].shape, np.bincount(z["val_labels"][:, 0])
        ('dermamnist.npz', (70, 28, 28, 3), (70, 1), array([1, 1, 2, 1, 2, 6, 1]))
    """
    _check_size(size)
    path = Path(path)
    npz_path = path if path.suffix == ".npz" else path / dermamnist_filename(size)
    counts = _split_class_counts({"train": n_train, "val": n_val, "test": n_test}, class_counts)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    id_rows: list[tuple[str, int, str, str]] = []
    next_group = 0
    for split in SPLITS:
        labels, groups = _synthetic_lesions(counts[split], next_group, rng)
        next_group += len(np.unique(groups))
        local = np.unique(groups, return_inverse=True)[1].reshape(-1) if groups.size else groups
        arrays[f"{split}_images"] = _synthetic_images(labels, local, size, rng, noise)
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
        id_rows.extend(
            (split, i, f"syn_{split}_{i:05d}", f"SYN_L{g:05d}") for i, g in enumerate(groups.tolist())
        )
    _publish_synthetic(npz_path, arrays, id_rows if write_ids else None)
    logger.info(
        "wrote synthetic DermaMNIST %s (%s)",
        npz_path,
        ", ".join(f"{s} {int(counts[s].sum())}" for s in SPLITS),
    )
    return npz_path


def _split_class_counts(
    wanted: Mapping[str, int | None], class_counts: Mapping[str, Sequence[int]] | None
) -> dict[str, np.ndarray]:
    """Images per class code in each split: given exactly, or ``n_split`` shared out like the real splits."""
    extra = set(class_counts or {}) - set(SPLITS)
    if extra:
        raise UnknownNameError("split", sorted(extra)[0], SPLITS, "in class_counts")
    counts: dict[str, np.ndarray] = {}
    for split in SPLITS:
        if class_counts is not None and split in class_counts:
            c = np.asarray(class_counts[split], dtype=np.int64)
            if c.shape != (_N_CODES,) or (c < 0).any():
                raise HierclfError(
                    f"class_counts[{split!r}] must be {_N_CODES} non-negative counts "
                    f"(codes 0-6); got {list(class_counts[split])}"
                )
            counts[split] = c
            continue
        n = wanted[split]
        n = sum(DERMAMNIST_COUNTS[split]) if n is None else int(n)
        if n < 0:
            raise HierclfError(f"n_{split} must be >= 0; got {n}")
        counts[split] = _allocate(n, DERMAMNIST_COUNTS[split])
    return counts


def _synthetic_lesions(
    counts: np.ndarray, first_group: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, groups)`` of one split in shuffled order: 1-3 images per lesion, one class per lesion,
    lesion numbers from ``first_group`` on (so no lesion spans two splits)."""
    labels_parts, group_parts = [], []
    next_group = first_group
    for code in range(_N_CODES):  # loop over the 7 classes, not samples
        n_c = int(counts[code])
        sizes = _lesion_sizes(n_c, rng)
        group_parts.append(np.repeat(np.arange(next_group, next_group + sizes.size), sizes))
        labels_parts.append(np.full(n_c, code, dtype=np.int64))
        next_group += sizes.size
    labels = np.concatenate(labels_parts)
    groups = np.concatenate(group_parts)
    order = rng.permutation(labels.size)
    return labels[order], groups[order]


def _publish_synthetic(
    npz_path: Path, arrays: Mapping[str, np.ndarray], id_rows: list[tuple[str, int, str, str]] | None
) -> None:
    """Write the npz and its ids CSV to temporary files, then publish the ids first and the npz last: a run
    that finds the npz always finds its ids (a kill between the two renames leaves no npz, so the next run
    generates both again)."""
    ordered = {f"{s}_images": arrays[f"{s}_images"] for s in SPLITS}
    ordered.update({f"{s}_labels": arrays[f"{s}_labels"] for s in SPLITS})
    with atomic_open(npz_path, "wb") as npz_handle:
        np.savez(npz_handle, **ordered)  # type: ignore[arg-type]
        if id_rows is not None:  # the inner file is published when its block ends, before the npz
            with atomic_open(npz_path.with_name(_ids_filename(npz_path.name)), "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["split", "index", "id", "group"])
                writer.writerows(id_rows)


def _missing_file_error(root: Path, name: str, size: int, failure: str = "") -> HierclfError:
    by_hand = f"copy {name} (MedMNIST v2 DermaMNIST at size {size}) by hand into {root}"
    if failure:
        return HierclfError(
            f"DermaMNIST file {name!r} not found in {root} and the medmnist download failed "
            f"({failure}); on a machine without access to the MedMNIST host, {by_hand}"
        )
    return HierclfError(
        f"DermaMNIST file {name!r} not found in {root}: load with download=True (CLI: "
        f"--download) on a machine that can reach the MedMNIST host, which saves it there "
        f"through the medmnist package, or {by_hand}"
    )


def _default_taxonomy() -> Taxonomy:
    from hierclf.taxonomy.shipped import shipped_taxonomy

    return Taxonomy.from_yaml(shipped_taxonomy("dermamnist"))


def _check_layout(npz: Any, file: Path, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    problems: list[Problem] = []
    keys = set(npz.files) if hasattr(npz, "files") else set(npz)
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in keys:
            problems.append(
                Problem(f"missing array {key!r} (has: {', '.join(sorted(keys))})", file=str(file))
            )
    if problems:
        raise FileFormatError(problems, what="DermaMNIST npz")
    images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        problems.append(
            Problem(
                f"{split}_images must be (n, {size}, {size}, 3) uint8; got {images.shape} {images.dtype}",
                file=str(file),
            )
        )
    if (
        labels.ndim not in (1, 2)
        or labels.shape[0] != images.shape[0]
        or (labels.ndim == 2 and labels.shape[1] != 1)
    ):
        problems.append(
            Problem(f"{split}_labels must be ({images.shape[0]}, 1); got {labels.shape}", file=str(file))
        )
    elif not np.issubdtype(labels.dtype, np.integer):
        problems.append(
            Problem(f"{split}_labels must hold integer codes; got {labels.dtype}", file=str(file))
        )
    if problems:
        raise FileFormatError(problems, what="DermaMNIST npz")
    return images, np.asarray(labels).reshape(-1).astype(np.int64)


def _read_ids(csv_path: Path, split: str, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample ids (and lesion groups) of one split from the ids CSV written beside a generated npz."""
    table = read_csv_table(csv_path, what="id file", required=("split", "index", "id"))
    mine = np.flatnonzero(table.column("split") == split)
    cells = table.column("index")[mine]
    if not all(c.isdigit() for c in cells.tolist()):
        r = int(mine[next(i for i, c in enumerate(cells.tolist()) if not c.isdigit())])
        bad = table.problem(r, f"index {str(table.cells[r, table.index_of('index')])!r} is not a row number")
        raise FileFormatError([bad], what="id file")
    index = cells.astype(np.int64)
    if index.size != n or not np.array_equal(np.sort(index), np.arange(n)):
        expected = f"expected indices 0..{n - 1} once each (the npz's rows)"
        message = f"split {split!r} lists {index.size} rows; {expected}"
        raise FileFormatError([Problem(message, file=str(csv_path))], what="id file")
    ids = np.empty(n, dtype=object)
    ids[index] = table.column("id")[mine]
    if table.find("group") is None:
        return ids.astype(str), None
    groups = np.empty(n, dtype=object)
    groups[index] = table.column("group")[mine]
    return ids.astype(str), groups.astype(str)


class DermaMNISTSplit(ArrayImageDataset):
    """One DermaMNIST split with labels as taxonomy node ids (see :func:`load_dermamnist`).

    Attributes:
        images: ``(n, size, size, 3)`` uint8; codes: ``(n,)`` int64 DermaMNIST codes 0-6;
        labels: ``(n,)`` node ids; ids: ``(n,)``; groups: ``(n,)`` or None; split; size; file;
        medmnist: the ``medmnist.DermaMNIST`` object the arrays came from (None when read directly).
        split_level: ``image`` for the official files (no lesion ids: the split is by image), ``lesion``
            when an ids file gives lesion groups (the generated data never splits a lesion).
    """

    def __init__(
        self,
        images: np.ndarray,
        codes: np.ndarray,
        labels: np.ndarray,
        ids: np.ndarray,
        groups: np.ndarray | None,
        transform: Callable[[Any], Any] | None,
        split: str,
        size: int,
        file: Path,
        medmnist_dataset: Any = None,
    ) -> None:
        super().__init__(images, labels, ids=ids, groups=groups, transform=transform)
        self.codes = codes
        self.split = split
        self.size = size
        self.file = file
        self.medmnist = medmnist_dataset
        self.split_level = "image" if groups is None else "lesion"


def load_dermamnist(
    root: str | Path,
    split: str = "train",
    size: int = 28,
    download: bool = False,
    transform: Callable[[Any], Any] | None = None,
    *,
    taxonomy: Taxonomy | None = None,
    npz: str | Path | None = None,
    ids_csv: str | Path | None = None,
) -> DermaMNISTSplit:
    """One split of DermaMNIST through the ``medmnist`` package, labels mapped to taxonomy nodes.

    The file is ``root / dermamnist_filename(size)`` (``dermamnist.npz``, ``dermamnist_64.npz``, ...), read by
    ``medmnist.DermaMNIST(split, root=root, size=size)``. With ``download=True`` and the file absent, medmnist
    downloads it into ``root`` (created if needed); a file already there is used as is.
    Integer codes become node ids through ``taxonomy.codes("dermamnist")``.

    Ids: from ``ids_csv``, else the side file ``<stem>_ids.csv`` beside the npz when present (written by
    :func:`make_synthetic_dermamnist`), else ``dermamnist_<split>_<index>``; groups come from the same side
    file, otherwise None: the official DermaMNIST split is image-level and has no lesion ids.

    Args:
        root: folder holding the npz.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: 28, 64, 128 or 224.
        download: let medmnist fetch a missing file (needs network access to the MedMNIST host).
        transform: applied to each PIL image in ``__getitem__``.
        taxonomy: tree with ``dermamnist`` codes; default the shipped ``taxonomy/dermamnist.yaml``.
        npz: an explicit npz path; a file not named as medmnist expects is read directly with numpy
            (same layout checks).
        ids_csv: explicit ``split,index,id[,group]`` file.

    Raises:
        HierclfError: the file is missing (the message says which file name to put in which folder), the
            download failed, the layout is wrong, or the taxonomy lacks codes for some labels.
    """
    _check_size(size)
    _check_split(split)
    tax = taxonomy if taxonomy is not None else _default_taxonomy()
    code_map = tax.codes("dermamnist")  # UnknownNameError (did you mean ...) when the tree has none
    file = Path(npz) if npz is not None else Path(root) / dermamnist_filename(size)
    if file.name == dermamnist_filename(size):
        images, codes, medmnist_ds = _read_through_medmnist(file, split, size, download)
    else:
        if not file.is_file():
            raise HierclfError(f"DermaMNIST npz {file} not found")
        with np.load(file) as z:
            images, codes = _check_layout(z, file, split, size)
        medmnist_ds = None
    labels = _code_labels(codes, code_map, tax, file, split)
    ids, groups = _split_ids(file, split, codes.size, ids_csv)
    return DermaMNISTSplit(images, codes, labels, ids, groups, transform, split, size, file, medmnist_ds)


def _read_through_medmnist(
    file: Path, split: str, size: int, download: bool
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Images and codes of one split read by ``medmnist.DermaMNIST`` (a missing file downloaded if asked)."""
    root, name = file.parent, file.name
    if not file.is_file():
        if not download:
            raise _missing_file_error(root, name, size)
        root.mkdir(parents=True, exist_ok=True)
    import medmnist

    try:
        # medmnist downloads only when asked; a present file is never re-fetched (its MD5 check would
        # otherwise replace a generated or locally re-packed file)
        medmnist_ds = medmnist.DermaMNIST(
            split=split, root=str(root), size=size, download=download and not file.is_file()
        )
    except (RuntimeError, OSError) as err:
        if file.is_file():
            raise HierclfError(f"medmnist could not read {file}: {err}") from err
        raise _missing_file_error(root, name, size, str(err).strip().splitlines()[0]) from err
    images, codes = _check_layout(
        {f"{split}_images": medmnist_ds.imgs, f"{split}_labels": medmnist_ds.labels}, file, split, size
    )
    return images, codes, medmnist_ds


def _code_labels(
    codes: np.ndarray, code_map: Mapping[int, str], tax: Taxonomy, file: Path, split: str
) -> np.ndarray:
    """Node ids of DermaMNIST's integer codes through the taxonomy's ``dermamnist`` codes."""
    unknown = sorted(set(np.unique(codes).tolist()) - set(code_map))
    if unknown:
        raise HierclfError(
            f"{file}: {split} labels use DermaMNIST code(s) {unknown} that taxonomy "
            f"{tax.name!r} does not map (it maps {sorted(code_map)}); add "
            f"`codes: {{dermamnist: <code>}}` to the leaves"
        )
    lookup = np.array([code_map.get(c, "") for c in range(max(code_map) + 1)], dtype=str)
    return lookup[codes]


def _split_ids(
    file: Path, split: str, n: int, ids_csv: str | Path | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample ids and groups: from ``ids_csv`` or the side file beside the npz, else numbered, no groups."""
    ids_file = Path(ids_csv) if ids_csv is not None else file.with_name(_ids_filename(file.name))
    if ids_file.is_file():
        return _read_ids(ids_file, split, n)
    if ids_csv is not None:
        raise HierclfError(f"id file {ids_file} not found")
    return np.char.add(f"dermamnist_{split}_", np.char.zfill(np.arange(n).astype(str), 5)), None


@dataclass
class DermaMNISTData:
    """The three DermaMNIST splits; see :func:`load_dermamnist` for the arguments."""

    train: DermaMNISTSplit
    val: DermaMNISTSplit
    test: DermaMNISTSplit

    @classmethod
    def load(
        cls,
        root: str | Path,
        size: int = 28,
        download: bool = False,
        *,
        taxonomy: Taxonomy | None = None,
        npz: str | Path | None = None,
        train_transform: Callable[[Any], Any] | None = None,
        eval_transform: Callable[[Any], Any] | None = None,
    ) -> DermaMNISTData:
        tax = taxonomy if taxonomy is not None else _default_taxonomy()
        splits = {
            s: load_dermamnist(
                root,
                s,
                size,
                download=download and s == "train",
                transform=train_transform if s == "train" else eval_transform,
                taxonomy=tax,
                npz=npz,
            )
            for s in SPLITS
        }
        return cls(**splits)


# --------------------------------------------------------------------------------------------------------
# The training view: (image tensor, class index)
# --------------------------------------------------------------------------------------------------------


def _class_targets(
    labels: np.ndarray, class_index: Mapping[str, int] | Callable[[list[str]], Any]
) -> np.ndarray:
    uniq, inverse = np.unique(labels, return_inverse=True)
    names = [str(u) for u in uniq]
    if callable(class_index) and not isinstance(class_index, Mapping):
        mapped = class_index(names)
        mapped = mapped.detach().cpu().numpy() if isinstance(mapped, torch.Tensor) else np.asarray(mapped)
    else:
        missing = [n for n in names if n not in class_index]
        if missing:
            raise UnknownNameError(
                "label",
                missing[0],
                list(class_index),
                f"in the class mapping ({len(missing)} label(s) unmapped: {', '.join(missing[:5])})",
            )
        mapped = np.array([class_index[n] for n in names], dtype=np.int64)
    mapped = np.asarray(mapped, dtype=np.int64).reshape(-1)
    if mapped.shape != (len(names),):
        raise HierclfError(f"class_index returned {mapped.shape[0]} indices for {len(names)} labels")
    return mapped[inverse.reshape(-1)]


class TaxonomyImageDataset(Dataset):
    """``(image_tensor, class_index)`` pairs for training, from any source of node-labelled images.

    Args:
        source: an :class:`ImageSource` (:func:`load_dermamnist`, :class:`CsvImageDataset`,
            :class:`ArrayImageDataset`).
        class_index: true node id -> class index: a dict (e.g. ``TrainingClasses.label_map`` composed with the
            class order) or a callable taking a list of node ids and returning their indices, such as
            ``LeafHead.class_index`` (which rejects labels above the head's cut).
        transform: applied to the PIL image; default the source's own transform, else
            :func:`hierclf.data.transforms.eval_transform` (the shared preprocessing, no augmentation).

    Attributes:
        targets: ``(n,)`` int64 class index of each sample (for samplers).
        labels, ids, groups: the source's arrays (true node ids, sample ids, patient / lesion ids or None).
    """

    def __init__(
        self,
        source: ImageSource,
        class_index: Mapping[str, int] | Callable[[list[str]], Any],
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.source = source
        self.labels = source.labels
        self.ids = source.ids
        self.groups = source.groups
        self.targets = torch.from_numpy(_class_targets(np.asarray(self.labels), class_index))
        if transform is None:
            transform = getattr(source, "transform", None)
        if transform is None:
            from hierclf.data.transforms import eval_transform

            transform = eval_transform()
        self.transform = transform
        self._arrays = bool(getattr(transform, "accepts_arrays", False)) and hasattr(source, "load_array")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._arrays:  # a transform that takes uint8 arrays and a source that holds them: skip PIL
            image = self.transform(self.source.load_array(index))  # type: ignore[attr-defined]
        else:
            image = self.transform(self.source.load_image(index))
        return image, int(self.targets[index])
