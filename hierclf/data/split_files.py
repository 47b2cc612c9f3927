"""Split files: the train / validation / test assignment of a source, made once and reused.

hierclf splits a source by its groups (patient, else lesion: :func:`hierclf.data.splits.grouped_split`,
stratified by label), checks the result for leakage and writes it as a CSV, one row per image::

    id,split,group,level,label
    ISIC_0027419,train,HAM_0000118,lesion,benign_keratosis

Training, evaluation and every later run read the same file (:func:`split_of`): a study's seeds train on
one split, a resumed run cannot drift to another, and the file documents what was held out. Reading checks
that the file and the source list the same images and, with the source's current groups, that no group
spans two splits (:class:`~hierclf.data.splits.LeakageError` naming the groups otherwise).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hierclf.data.splits import check_no_leakage, grouped_split
from hierclf.errors import FileFormatError, HierclfError, Problem
from hierclf.io.atomic import atomic_open
from hierclf.io.csv_files import CsvTable, read_csv_table
from hierclf.options import look_up_option

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "SplitAssignment", "make_split", "read_split_file", "split_of", "write_split_file"]

SPLITS = ("train", "val", "test")
_WHAT = "split file"


@dataclass(frozen=True)
class SplitAssignment:
    """A source's split.

    Attributes:
        splits: ``{"train", "val", "test"}`` -> sorted row indices of the source.
        level: what the split is grouped by (``patient``, ``lesion``, ``image``).
        file: the split file it was read from or written to (None when not written).
        made: whether this call made the split (False: read from ``file``).
    """

    splits: dict[str, np.ndarray]
    level: str
    file: Path | None
    made: bool


def make_split(
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    level: str,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A grouped, label-stratified split (:func:`~hierclf.data.splits.grouped_split`), checked for leakage.

    Groups at level ``image`` are the images themselves (no grouping, logged as a warning by the source).
    """
    by_image = level == "image"
    splits = grouped_split(
        labels,
        None if by_image else groups,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    if not by_image:
        check_no_leakage(splits, groups, what=level)
    return splits


def write_split_file(
    path: str | Path,
    ids: np.ndarray,
    splits: dict[str, np.ndarray],
    groups: np.ndarray,
    labels: np.ndarray,
    *,
    level: str,
) -> None:
    """Write ``id,split,group,level,label`` rows in the source's order, atomically."""
    name = np.empty(len(ids), dtype=object)
    for split, rows in splits.items():
        name[rows] = split
    if any(v is None for v in name.tolist()):
        raise HierclfError("the splits do not cover every image of the source")
    table = np.stack(
        [ids.astype(str), name.astype(str), groups.astype(str), np.full(len(ids), level), labels.astype(str)],
        axis=1,
    )
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "split", "group", "level", "label"])
        writer.writerows(table.tolist())


def read_split_file(
    path: str | Path, ids: np.ndarray, groups: np.ndarray | None = None, *, level: str | None = None
) -> dict[str, np.ndarray]:
    """The splits a file assigns to the source rows ``ids``.

    Args:
        path: the split file.
        ids: ``(n,)`` the source's sample ids.
        groups: ``(n,)`` the source's groups now: no group may span two splits (None: not checked).
        level: the groups' level, for the leakage message.

    Raises:
        FileFormatError: unknown split names (positioned), repeated ids, or images the file and the
            source do not share (the file was made for other data).
        LeakageError: a group of ``groups`` lies in two splits.
    """
    table = read_csv_table(path, what=_WHAT, required=("id", "split"))
    file_ids, names = table.column("id"), table.column("split")
    _check_names(table, names)
    uniq, first, counts = np.unique(file_ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        k = int(np.flatnonzero(counts > 1)[0])
        again = int(np.flatnonzero(file_ids == uniq[k])[1])
        raise FileFormatError(
            [
                table.problem(
                    again, f"id {str(uniq[k])!r} listed twice (first at line {table.lines[first[k]]})"
                )
            ],
            what=_WHAT,
        )
    order = np.argsort(file_ids, kind="stable")
    pos = np.minimum(np.searchsorted(file_ids[order], ids), max(len(file_ids) - 1, 0))
    found = file_ids[order][pos] == ids if len(file_ids) else np.zeros(len(ids), bool)
    _check_same_images(table, ids, found, file_ids)
    assigned = names[order][pos]
    splits = {s: np.flatnonzero(assigned == s).astype(np.int64) for s in SPLITS}
    if groups is not None:
        check_no_leakage(splits, groups, what=level or "group")
    return splits


def _check_names(table: CsvTable, names: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isin(names, SPLITS))
    if bad.size:
        problems = []
        for r in bad[:10].tolist():
            name = str(names[r])
            try:
                look_up_option(name, SPLITS, kind="split")
                message = f"split {name!r} must be written in lower case"
            except HierclfError as exc:
                message = str(exc)
            problems.append(table.problem(r, message, column=table.index_of("split"), code="split"))
        raise FileFormatError(problems, what=_WHAT)


def _check_same_images(table: CsvTable, ids: np.ndarray, found: np.ndarray, file_ids: np.ndarray) -> None:
    """The file and the source must list the same images."""
    problems = []
    file = table.file
    if not found.all():
        missing = ids[~found]
        shown = ", ".join(repr(str(x)) for x in missing[:5])
        problems.append(
            Problem(
                f"{missing.size} of the source's {len(ids)} images are not in the split file (e.g. {shown}): "
                "it was made for other data; delete it to make a new split, or give another split file",
                file,
                code="split-images",
            )
        )
    extra = np.setdiff1d(file_ids, ids)
    if extra.size:
        shown = ", ".join(repr(str(x)) for x in extra[:5])
        problems.append(
            Problem(
                f"{extra.size} images of the split file are not in the source (e.g. {shown}): the source "
                "changed since the split was made; delete the file to make a new split",
                file,
                code="split-images",
            )
        )
    if problems:
        raise FileFormatError(problems, what=_WHAT)


def split_of(
    ids: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    level: str,
    file: str | Path | None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    write: bool = True,
) -> SplitAssignment:
    """The split of a source: read from ``file`` when it exists, else made (:func:`make_split`) and written
    there (when ``write``; a process that only reads passes ``write=False`` and gets the split unwritten).

    Args:
        ids, labels, groups: ``(n,)`` the source's sample ids, node ids and groups.
        level: what the groups are (``patient``, ``lesion``, ``image``).
        file: the split file (None: the split is made and not written).
        val_fraction, test_fraction, seed: how to make it (ignored when the file exists).
    """
    path = None if file is None else Path(file)
    if path is not None and path.is_file():
        splits = read_split_file(path, ids, None if level == "image" else groups, level=level)
        logger.info("split read from %s (%s)", path, _sizes(splits))
        return SplitAssignment(splits, level, path, made=False)
    splits = make_split(
        labels, groups, level=level, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    if path is not None and write:
        write_split_file(path, ids, splits, groups, labels, level=level)
        logger.info("split by %s written to %s (%s)", level, path, _sizes(splits))
    return SplitAssignment(splits, level, path, made=True)


def _sizes(splits: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {len(v)}" for k, v in splits.items())
