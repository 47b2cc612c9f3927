"""Fewer training labels, as a label-efficiency study needs them: per class, whole groups at a time.

:func:`grouped_class_subsample` keeps about ``fraction`` of each class's training images without splitting a
patient or lesion (a group), so the images kept are as independent as the full set's, and no group is half in
the subset (seed 002's low-data protocol, done by groups because HAM10000 holds several images per lesion).

* Each group belongs to the class most of its images carry (a lesion has one diagnosis; a patient with
  images of several classes goes with the most common one, ties to the first in sorted order); its images
  all come along.
* One random order of the groups per seed; each class keeps the first of its groups in that order until
  their images come closest to ``fraction`` of the class's images, and never fewer than one group. The same
  seed therefore gives **nested** subsets (0.05 inside 0.1 inside 0.25): a curve over fractions then moves
  because labels were added, not because other images were drawn.
* Without groups every image is its own group.

Example:
    >>> labels = ["nevus"] * 8 + ["melanoma"] * 4
    >>> groups = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "f", "f"]
    >>> rows = grouped_class_subsample(labels, groups, 0.5, seed=0)
    >>> sorted({labels[i] for i in rows}), len(rows)
    (['melanoma', 'nevus'], 6)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hierclf.train.errors import TrainSettingError

__all__ = ["grouped_class_subsample", "subsample_counts"]


def _group_classes(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row -> group, group -> class, group -> images)``: each group's class is its most common label."""
    _, group_of = np.unique(groups, return_inverse=True)
    _, label_of = np.unique(labels, return_inverse=True)
    n_groups, n_labels = int(group_of.max()) + 1, int(label_of.max()) + 1
    counts = np.zeros((n_groups, n_labels), dtype=np.int64)
    np.add.at(counts, (group_of, label_of), 1)
    return group_of, counts.argmax(axis=1), counts.sum(axis=1)


def grouped_class_subsample(
    labels: Sequence[str] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None,
    fraction: float,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Rows (sorted) of a per-class, group-preserving subset of about ``fraction`` of the images.

    Args:
        labels: ``(n,)`` true node ids (the classes subsampled).
        groups: ``(n,)`` patient / lesion ids, or None (every image its own group).
        fraction: in (0, 1]; 1 keeps every row.
        seed: the random order of the groups (the same seed gives nested subsets across fractions).

    Returns:
        ``(m,)`` int64 row indices, ascending.

    Raises:
        TrainSettingError: ``fraction`` outside (0, 1], or no rows.
    """
    if not 0.0 < fraction <= 1.0:
        raise TrainSettingError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels).astype(str)
    if labels.size == 0:
        raise TrainSettingError("no training images to subsample")
    if fraction == 1.0:
        return np.arange(labels.size, dtype=np.int64)
    groups = np.arange(labels.size).astype(str) if groups is None else np.asarray(groups).astype(str)
    group_of, group_class, group_size = _group_classes(labels, groups)
    order = np.random.default_rng(seed).permutation(group_size.size)
    chosen = np.zeros(group_size.size, dtype=bool)
    for cls in np.unique(group_class):  # a loop over classes, not samples
        mine = order[group_class[order] == cls]
        cumulative = np.cumsum(group_size[mine])
        target = fraction * cumulative[-1]
        k = int(np.searchsorted(cumulative, target, side="left")) + 1  # the first k groups reach the target
        if k > 1 and abs(cumulative[k - 2] - target) <= abs(cumulative[k - 1] - target):
            k -= 1  # one group fewer comes closer
        chosen[mine[:k]] = True
    return np.flatnonzero(chosen[group_of]).astype(np.int64)


def subsample_counts(labels: Sequence[str] | np.ndarray, rows: np.ndarray) -> dict[str, tuple[int, int]]:
    """``label -> (images kept, images in all)``, for logs and reports.

    Example:
        >>> subsample_counts(["a", "a", "b"], np.array([0, 2]))
        {'a': (1, 2), 'b': (1, 1)}
    """
    labels = np.asarray(labels).astype(str)
    names, total = np.unique(labels, return_counts=True)
    kept = {str(k): int(v) for k, v in zip(*np.unique(labels[rows], return_counts=True))}
    return {str(n): (kept.get(str(n), 0), int(t)) for n, t in zip(names, total)}
