"""Group-aware train / validation / test splits and the leakage check.

Images of one lesion (or one patient) must all fall in the same split: HAM10000 holds 10,015 images of 7,470
lesions, so an image-level split puts near-copies of a lesion in training and test and inflates every test
metric. :func:`grouped_split` splits by group with scikit-learn's ``StratifiedGroupKFold`` (class proportions
kept close to the overall ones), and :func:`check_no_leakage` fails loudly, naming the groups, when a group
appears in two splits.

How fractions map to folds: ``StratifiedGroupKFold(n_splits=k)`` cuts the groups into ``k`` folds of about
equal size; the test split is its first fold with ``k = round(1 / test_fraction)``, so ``test_fraction=0.2``
gives 5 folds and exactly a fifth of the groups (0.15 gives 7 folds, i.e. 0.143). The validation split is then
the first fold of a second ``StratifiedGroupKFold`` over the remaining groups with
``k = round((1 - test_fraction) / val_fraction)`` (0.1 of the whole with test 0.2 -> 8 folds of the rest).
Fractions are of groups; image fractions follow closely when groups are small.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import FileFormatError, HierclfError, Problem
from hierclf.io.csv_files import read_csv_table

logger = logging.getLogger(__name__)

__all__ = [
    "HAM10000Split",
    "LeakageError",
    "check_no_leakage",
    "find_leakage",
    "grouped_split",
    "ham10000_split",
    "split_proportions",
]


class LeakageError(HierclfError):
    """A group (patient, lesion) or a sample appears in more than one split.

    Attributes:
        leaks: ``(split_a, split_b) -> array of the group ids both contain``.
    """

    def __init__(self, message: str, leaks: Mapping[tuple[str, str], np.ndarray]) -> None:
        super().__init__(message)
        self.leaks = dict(leaks)


def _n_folds(fraction: float, what: str) -> int:
    if not 0.0 < fraction < 1.0:
        raise HierclfError(f"{what} must be in (0, 1); got {fraction}")
    return max(2, int(round(1.0 / fraction)))


def _first_fold(
    labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) of the first fold of ``StratifiedGroupKFold(k)`` (``StratifiedKFold`` when
    every sample is its own group: the same folds' contract, without the per-group Python loop)."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    n_groups = labels.size if groups is None else np.unique(groups).size
    if n_groups < k:
        raise HierclfError(f"cannot hold out a {what} split of 1/{k} of the groups: only {n_groups} groups")
    largest_class = int(np.unique(labels, return_counts=True)[1].max())
    splitter: Any
    if largest_class < k:
        # StratifiedGroupKFold refuses when no class has k members; stratification is moot there anyway
        logger.warning(
            "%s split: no class has %d samples, so the split is grouped but not stratified", what, k
        )
        splitter = (
            KFold(n_splits=k, shuffle=True, random_state=seed)
            if groups is None
            else GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        )
    elif groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rest, held = next(splitter.split(np.zeros((labels.size, 1)), labels, groups))
        except ValueError as err:
            raise HierclfError(f"cannot make the {what} split: {err}") from err
    for w in caught:
        logger.warning("%s split: %s", what, w.message)
    return rest, held


def grouped_split(
    labels: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray | None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Split samples into train / val / test so that no group spans two splits, stratified by label.

    Args:
        labels: ``(n,)`` class of each sample (names or indices).
        groups: ``(n,)`` patient / lesion id of each sample; None treats every sample as its own group
            (an image-level split, only right when each patient has one image).
        val_fraction: share of the groups held out for validation; 0 for no validation split.
        test_fraction: share of the groups held out for test; 0 for no test split.
        seed: shuffles the groups before the folds are formed.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``, sorted int64 index arrays that partition ``range(n)``
        (a split with fraction 0 is empty).

    Example:
        >>> labels = ["a", "a", "b", "b"] * 10
        >>> groups = [f"p{i // 2}" for i in range(40)]
        >>> s = grouped_split(labels, groups, val_fraction=0.25, test_fraction=0.25, seed=0)
        >>> sorted(len(v) for v in s.values()), check_no_leakage(s, groups)
        ([10, 10, 20], None)
    """
    y = np.asarray(labels).reshape(-1)
    y = y.astype(str) if not np.issubdtype(y.dtype, np.integer) else y
    n = y.size
    g = None if groups is None else np.asarray(groups).reshape(-1).astype(str)
    if g is not None and g.size != n:
        raise HierclfError(f"groups has {g.size} entries but labels has {n}")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise HierclfError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be >= 0 "
            "and sum to less than 1"
        )
    empty = np.zeros(0, dtype=np.int64)
    rest = np.arange(n, dtype=np.int64)
    test = empty
    if test_fraction > 0:
        keep, held = _first_fold(y, g, _n_folds(test_fraction, "test_fraction"), seed, "test")
        rest, test = rest[keep], rest[held]
    val = empty
    if val_fraction > 0:
        k = _n_folds(val_fraction / (1.0 - test_fraction), "val_fraction / (1 - test_fraction)")
        keep, held = _first_fold(y[rest], None if g is None else g[rest], k, seed + 1, "val")
        rest, val = rest[keep], rest[held]
    return {"train": np.sort(rest), "val": np.sort(val), "test": np.sort(test)}


def find_leakage(
    splits: Mapping[str, Sequence[int] | np.ndarray], groups: Sequence[Any] | np.ndarray
) -> dict[tuple[str, str], np.ndarray]:
    """Groups shared by each pair of splits: ``(split_a, split_b) -> sorted group ids`` (pairs that share
    none are left out).

    A sample index listed in two splits counts as its group leaking too.
    """
    g = np.asarray(groups).reshape(-1).astype(str)
    per_split = {}
    for name, idx in splits.items():
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= g.size):
            raise HierclfError(f"split {name!r} holds index {int(idx.max())} but there are {g.size} samples")
        per_split[name] = np.unique(g[idx])
    leaks = {}
    for a, b in combinations(per_split, 2):
        shared = np.intersect1d(per_split[a], per_split[b], assume_unique=True)
        if shared.size:
            leaks[(a, b)] = shared
    return leaks


def check_no_leakage(
    splits: Mapping[str, Sequence[int] | np.ndarray], groups: Sequence[Any] | np.ndarray, what: str = "group"
) -> None:
    """Raise :class:`LeakageError` naming the groups and splits when any group lies in two splits.

    Args:
        splits: split name -> sample indices (as :func:`grouped_split` returns).
        groups: ``(n,)`` patient / lesion id of each sample.
        what: the word used for a group in the message (``"lesion"``, ``"patient"``).
    """
    leaks = find_leakage(splits, groups)
    if not leaks:
        return
    total = np.unique(np.concatenate(list(leaks.values()))).size
    parts = []
    for (a, b), shared in leaks.items():
        shown = ", ".join(repr(str(s)) for s in shared[:5]) + (
            f", ... ({shared.size - 5} more)" if shared.size > 5 else ""
        )
        parts.append(f"{a} & {b} share {shared.size} ({shown})")
    raise LeakageError(
        f"{total} {what}(s) appear in more than one split: "
        + "; ".join(parts)
        + f". Split by {what} (hierclf.data.splits.grouped_split), not by image.",
        leaks,
    )


def split_proportions(
    labels: Sequence[Any] | np.ndarray, splits: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Class names (sorted) and each split's class proportions over them, ``(n_classes,)`` per split."""
    y = np.asarray(labels).reshape(-1).astype(str)
    classes, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    out = {}
    for name, idx in splits.items():
        c = np.bincount(codes[np.asarray(idx, dtype=np.int64)], minlength=classes.size)
        out[name] = c / max(int(c.sum()), 1)
    return classes, out


@dataclass(frozen=True)
class HAM10000Split:
    """HAM10000 metadata with a lesion-grouped split.

    Attributes:
        image_ids, lesion_ids, dx: ``(n,)`` str arrays in file order (``dx`` is the HAM10000 code, e.g.
            ``mel``; a DermaMNIST taxonomy resolves these codes as aliases).
        splits: ``{"train", "val", "test"}`` -> sorted row indices.
    """

    image_ids: np.ndarray
    lesion_ids: np.ndarray
    dx: np.ndarray
    splits: dict[str, np.ndarray]


def _read_ham10000(metadata_csv: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    required = ("lesion_id", "image_id", "dx")
    table = read_csv_table(metadata_csv, what="HAM10000 metadata", required=required)
    problems = table.empty_cells(*required)
    if problems:
        raise FileFormatError(problems, what="HAM10000 metadata")
    lesion, image, dx = (table.column(c) for c in required)
    uniq, counts = np.unique(image, return_counts=True)
    if (counts > 1).any():
        raise FileFormatError(
            [Problem(f"image_id {uniq[counts > 1][0]!r} listed more than once", file=str(metadata_csv))],
            what="HAM10000 metadata",
        )
    return image, lesion, dx


def ham10000_split(
    metadata_csv: str | Path, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> HAM10000Split:
    """A lesion-grouped, diagnosis-stratified split of the HAM10000 metadata (``lesion_id,image_id,dx,...``).

    Every image of a lesion lands in one split; the result passes :func:`check_no_leakage` by construction.
    """
    image, lesion, dx = _read_ham10000(Path(metadata_csv))
    splits = grouped_split(dx, lesion, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    check_no_leakage(splits, lesion, what="lesion")
    return HAM10000Split(image_ids=image, lesion_ids=lesion, dx=dx, splits=splits)
